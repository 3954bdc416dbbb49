"""Name -> factory registries for models, tasks and judges.

Built-in plug-ins register themselves with a decorator when their module is imported; third-party
plug-ins are found through the entry-point groups ``evalkit.models``, ``evalkit.tasks`` and
``evalkit.judges`` (an entry point may name a module, which registers on import, or an object,
which is registered under the entry point's name). Loading is lazy so that ``evalkit --help``
imports nothing but this file's standard-library dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from evalkit.errors import UnknownNameError

T = TypeVar("T")


class Registry:
    """One kind of plug-in (``model``, ``task`` or ``judge``)."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...]):
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@register_task("mmau-mini")``. Re-registering a name is an error (two
        plug-ins fighting over a name would silently change scores)."""

        def deco(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({existing!r} and {obj!r})")
            self._entries[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                continue
            obj = ep.load()
            if not isinstance(obj, type(importlib)):  # an object, not a module that registered itself
                self._entries[ep.name] = obj

    def get(self, name: str) -> Any:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {known} (see `evalkit list {self.kind}s`)"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, first docstring line) pairs for ``evalkit list``."""
        self._load()
        rows = []
        for name in sorted(self._entries):
            doc = (getattr(self._entries[name], "__doc__", None) or "").strip().splitlines()
            rows.append((name, doc[0] if doc else ""))
        return rows


models = Registry(
    "model",
    "evalkit.models",
    (
        "evalkit.models.openai_chat",
        "evalkit.models.hf_text",
        "evalkit.models.cascade",
        "evalkit.models.vllm_local",
        "evalkit.models.replay",
        "evalkit.models.model_cards",
    ),
)
tasks = Registry(
    "task",
    "evalkit.tasks",
    (
        "evalkit.tasks.demo",
        "evalkit.tasks.samples_file",
        "evalkit.tasks.mmau",
        "evalkit.tasks.mmsu",
        "evalkit.tasks.spoken_mqa",
        "evalkit.tasks.audio_multichallenge",
        "evalkit.tasks.demo_speech",
    ),
)
judges = Registry(
    "judge",
    "evalkit.judges",
    (
        "evalkit.judges.choice",
        "evalkit.judges.numeric",
        "evalkit.judges.spoken_mqa_official",
        "evalkit.judges.mmau_match",
        "evalkit.judges.mmsu_letter",
        "evalkit.judges.math_equivalence",
        "evalkit.judges.rubric",
        "evalkit.judges.prosody",
        "evalkit.judges.asr_consistency",
        "evalkit.judges.emotion",
        "evalkit.judges.voice",
        "evalkit.judges.naturalness",
    ),
)

register_model = models.register
register_task = tasks.register
register_judge = judges.register
