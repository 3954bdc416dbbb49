"""Name -> factory registries for models, tasks and judges.

Built-in plug-ins register themselves with a decorator when their module is imported; each
registry knows which module holds which built-in name (``builtins``), and imports that module only
when that name is asked for, so ``evalkit run --tasks demo`` never imports the speech judges and
``evalkit --help`` imports nothing but this file's standard-library dependencies. Names that a
module decides at import time (the model cards in ``models/cards/*.yaml``) come from ``providers``,
imported when a name is not otherwise known and when every name is listed.

Third-party plug-ins are entry points of the groups ``evalkit.models``, ``evalkit.tasks`` and
``evalkit.judges``. The documented form is ``NAME = package.module:Class``: the entry point's name
is the registered name and its object is loaded only when that name is asked for. An entry point
naming a bare module (which registers its names with the decorator on import) is imported, like
a provider, only when a name is not otherwise known.

Two rules keep a plug-in from changing scores silently:

- a name defined twice (a plug-in named like a built-in, or two plug-ins) is an ``EvalkitError``
  naming both sources, never a silent choice;
- a plug-in that fails to import is a ``PluginWarning`` naming it while listing or searching, and
  the rest works; asking for that plug-in's own name is an error with the import's failure.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from typing import Any, TypeVar

from evalkit.errors import EvalkitError, UnknownNameError

T = TypeVar("T")


class NameCollisionError(EvalkitError):
    """One name defined by two sources (a plug-in named like a built-in, or two plug-ins)."""


class PluginWarning(UserWarning):
    """A plug-in could not be loaded; it is left out and every other name still works."""


def _entry_point_source(ep: EntryPoint) -> str:
    """``plug-in 'name = pkg.mod:Class' (distribution pkg 1.0)`` for messages."""
    dist = getattr(ep, "dist", None)
    where = f" (distribution {dist.name} {dist.version})" if dist is not None else ""
    return f"plug-in entry point '{ep.name} = {ep.value}'{where}"


def plugin_entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group``. Every distribution's metadata is read once per
    import path (``sys.path``) for all groups: one scan of ~500 installed distributions took
    ~12 ms, and the model, task and judge registries each made their own before every run."""
    return list(_installed_entry_points(tuple(sys.path)).select(group=group))


@lru_cache(maxsize=4)
def _installed_entry_points(path: tuple[str, ...]) -> EntryPoints:
    """Every installed entry point, as found on ``path`` (the key: a changed ``sys.path`` may
    hold other distributions)."""
    return entry_points()


class Registry:
    """One kind of plug-in (``model``, ``task`` or ``judge``)."""

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Mapping[str, str] | None = None,
        providers: tuple[str, ...] = (),
    ):
        self.kind = kind
        self.group = group
        #: built-in name -> the module that registers it
        self._builtins = dict(builtins or {})
        #: modules whose names are decided when they are imported
        self._providers = providers
        self._entries: dict[str, Any] = {}
        #: name -> where its entry came from (a module, or an entry point), for collision messages
        self._origins: dict[str, str] = {}
        #: providers and bare-module plug-ins, once imported (or failed)
        self._searched = False
        #: the group's entry points, read once (reading the installed metadata takes ~10 ms)
        self._entry_points: list[EntryPoint] | None = None

    # -- registration -------------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@register_task("mmau-mini")``. Registering a name that a built-in or
        another plug-in already holds is an error naming both (two plug-ins fighting over a name
        would silently change scores)."""
        frame = inspect.currentframe()
        caller = frame.f_back.f_globals.get("__name__", "?") if frame and frame.f_back else "?"

        def deco(obj: T) -> T:
            self._add(name, obj, f"module {caller}", caller)
            return obj

        return deco

    def _add(self, name: str, obj: Any, origin: str, module: str | None = None) -> None:
        existing = self._entries.get(name)
        if existing is obj:
            return
        home = self._builtins.get(name)
        if existing is not None or (home is not None and module != home):
            first = self._origins.get(name) or f"built-in module {home}"
            raise NameCollisionError(
                f"{self.kind} {name!r} is defined twice: by {first} and by {origin}; "
                "uninstall or rename one of them"
            )
        self._entries[name] = obj
        self._origins[name] = origin

    # -- plug-ins -----------------------------------------------------------------------------------
    def _group(self) -> list[EntryPoint]:
        if self._entry_points is None:
            self._entry_points = plugin_entry_points(self.group)
        return self._entry_points

    def _plugins(self) -> dict[str, EntryPoint]:
        """The group's ``NAME = module:object`` entry points by name (nothing imported); two of
        one name, or one named like a built-in, are a collision."""
        found: dict[str, EntryPoint] = {}
        for ep in self._group():
            if ":" not in ep.value:
                continue  # a bare module: imported by ``_search``
            if ep.name in found:
                raise NameCollisionError(
                    f"{self.kind} {ep.name!r} is defined twice: by {_entry_point_source(found[ep.name])} "
                    f"and by {_entry_point_source(ep)}; uninstall or rename one of them"
                )
            owner = self._owner_of(ep.name)
            if owner is not None and owner != _entry_point_source(ep):
                raise NameCollisionError(
                    f"{self.kind} {ep.name!r} is defined twice: by {owner} and by {_entry_point_source(ep)}; "
                    "uninstall or rename one of them"
                )
            found[ep.name] = ep
        return found

    def _owner_of(self, name: str) -> str | None:
        """Who already holds ``name``: a built-in, or whatever registered it."""
        if name in self._builtins:
            return f"built-in module {self._builtins[name]}"
        return self._origins.get(name)

    def _load_plugin(self, ep: EntryPoint) -> Any:
        """The entry point's object, registered under its name (an import failure propagates)."""
        obj = ep.load()
        self._add(ep.name, obj, _entry_point_source(ep))
        return obj

    def _search(self) -> None:
        """Import the providers and the bare-module plug-ins (once): the names only importing
        tells. A plug-in that fails is a warning naming it; a provider that fails is a bug."""
        if self._searched:
            return
        self._searched = True
        for module in self._providers:
            importlib.import_module(module)
        for ep in self._group():
            if ":" in ep.value:
                continue
            try:
                ep.load()
            except NameCollisionError:
                raise
            except Exception as exc:  # a broken plug-in: named, left out, the rest works
                _warn_broken(self.kind, _entry_point_source(ep), exc)

    # -- lookup -------------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The factory registered as ``name``, importing only what provides that name."""
        plugins = self._plugins()
        if name in self._entries:
            return self._entries[name]
        if name in self._builtins:
            importlib.import_module(self._builtins[name])
            return self._entries[name]
        if name in plugins:
            try:
                return self._load_plugin(plugins[name])
            except NameCollisionError:
                raise
            except Exception as exc:
                raise EvalkitError(
                    f"{self.kind} {name!r} comes from {_entry_point_source(plugins[name])}, which failed to "
                    f"load: {type(exc).__name__}: {exc}; fix or uninstall that package"
                ) from exc
        self._search()
        if name in self._entries:
            return self._entries[name]
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}; {hint}known {self.kind}s: {', '.join(names) or 'none'} "
            f"(see `evalkit list {self.kind}s`)"
        )

    def names(self) -> list[str]:
        """Every name: built-ins and plug-in entry points without importing them, plus what the
        providers and bare-module plug-ins register."""
        plugins = self._plugins()
        self._search()
        return sorted({*self._builtins, *plugins, *self._entries})

    def describe(self) -> list[tuple[str, str]]:
        """(name, first docstring line) pairs for ``evalkit list``: loads every name; one that
        fails to load is a warning naming it and is left out."""
        rows = []
        for name in self.names():
            try:
                entry = self.get(name)
            except NameCollisionError:
                raise
            except EvalkitError as exc:  # a plug-in that failed to load (named in the message)
                _warn_broken(self.kind, name, exc)
                continue
            except ImportError as exc:  # a built-in whose optional dependency is missing
                _warn_broken(self.kind, f"built-in {self._builtins.get(name, name)}", exc)
                continue
            doc = (getattr(entry, "__doc__", None) or "").strip().splitlines()
            rows.append((name, doc[0] if doc else ""))
        return rows


def _warn_broken(kind: str, source: str, exc: BaseException) -> None:
    warnings.warn(
        PluginWarning(f"{kind} {source} failed to load and is left out: {type(exc).__name__}: {exc}"),
        stacklevel=3,
    )


models = Registry(
    "model",
    "evalkit.models",
    {
        "openai": "evalkit.models.openai_chat",
        "hf": "evalkit.models.hf_text",
        "cascade": "evalkit.models.cascade",
        **dict.fromkeys(("espeak", "openai-tts"), "evalkit.models.tts"),  # speech models (role tts)
        "vllm": "evalkit.models.vllm_local",
        "replay": "evalkit.models.replay",
    },
    providers=("evalkit.models.model_cards",),  # one name per card file
)
tasks = Registry(
    "task",
    "evalkit.tasks",
    {
        **dict.fromkeys(("demo", "demo-arithmetic", "demo-choice", "demo-multiturn"), "evalkit.tasks.demo"),
        "jsonl": "evalkit.tasks.samples_file",
        "mmau-mini": "evalkit.tasks.mmau",
        "mmau-test": "evalkit.tasks.mmau",
        "mmsu-bench": "evalkit.tasks.mmsu",
        **dict.fromkeys(
            (
                "spoken-mqa",
                "spoken-mqa-short-digit",
                "spoken-mqa-long-digit",
                "spoken-mqa-single-step",
                "spoken-mqa-multi-step",
                "spoken-mqa-knowledge",
            ),
            "evalkit.tasks.spoken_mqa",
        ),
        "audio-multichallenge": "evalkit.tasks.audio_multichallenge",
        "demo-speech": "evalkit.tasks.demo_speech",
        **dict.fromkeys(("long-turn", "demo-long-turn"), "evalkit.tasks.long_turn"),
    },
)
judges = Registry(
    "judge",
    "evalkit.judges",
    {
        "choice": "evalkit.judges.choice",
        "numeric": "evalkit.judges.numeric",
        "numeric-spoken": "evalkit.judges.numeric",
        "spoken-mqa-official": "evalkit.judges.spoken_mqa_official",
        **dict.fromkeys(("mmau-string-match", "mmau-choice", "mmau-submission"), "evalkit.judges.mmau_match"),
        **dict.fromkeys(
            ("mmsu-official", "mmsu-independent", "mmsu-strict", "mmsu-extract"), "evalkit.judges.mmsu_letter"
        ),
        "math-verify": "evalkit.judges.math_equivalence",
        "amc-rubric": "evalkit.judges.rubric",
        "amc-rubric-exclude": "evalkit.judges.rubric",
        "prosody": "evalkit.judges.prosody",
        "asr": "evalkit.judges.asr_consistency",
        **dict.fromkeys(("emotion", "emotion-ser", "emotion-llm"), "evalkit.judges.emotion"),
        "voice": "evalkit.judges.voice",
        "listener": "evalkit.judges.listener",
        "arena": "evalkit.judges.arena",
        "naturalness": "evalkit.judges.naturalness",
        "long-turn-checks": "evalkit.judges.long_turn",
    },
)

register_model = models.register
register_task = tasks.register
register_judge = judges.register
