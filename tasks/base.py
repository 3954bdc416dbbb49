"""The task interface: a benchmark = samples + how to prompt + which judges + how to aggregate.

Every task is multi-turn by construction: a sample's conversation lists its turns, and the model
answers each user turn named by ``answer_turns`` with the conversation so far as context (its own
earlier replies fed back: the closed-loop protocol). A single-turn benchmark is a one-turn
conversation and takes exactly the same path.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.clips import file_sha256
from evalkit.confine import PathEscapeError, confined, resolved_roots
from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir
from evalkit.records import (
    AudioPart,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    ScoreRecord,
    TextPart,
    Turn,
)

if TYPE_CHECKING:
    from evalkit.judges.base import Judge
    from evalkit.service import ModelService


class Task(ABC):
    """Base of all tasks. Subclasses set ``name``, ``judges`` and implement ``samples``."""

    name: str
    #: judge names run on every sample, in this order
    judges: tuple[str, ...] = ()
    #: ``Sample.meta`` keys that summary.json breaks metrics down by
    group_by: tuple[str, ...] = ()
    #: the metric a leaderboard shows first
    primary_metric: str = "accuracy"
    #: capabilities the model must have (``audio_in``, ``audio_out``, ``multi_turn``)
    requires: tuple[str, ...] = ("audio_in",)
    #: system prompt, or None for none
    system_prompt: str | None = None
    #: generation parameters the task asks for; a model card and the command line win over them
    #: (command line > card > task > defaults, see evalkit.generation), the seed is always the run's
    params: GenerationParams = GenerationParams(max_tokens=512)
    #: folders the run widened confinement with (``--allow-path``); set by ``resolve_tasks``
    allow_paths: tuple[Path, ...] = ()
    #: user turns are produced while the run plays (``user_turn``: a user simulator), not read
    #: from the samples: the turn loop saves each one's audio and records what was said per turn
    #: (responses.jsonl ``input``), and ``--resume`` reuses it instead of asking again
    live_user_turns: bool = False

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> Task:
        """Build from the part of a task spec after ``NAME:`` (most tasks take none)."""
        if arg:
            raise EvalkitError(f"task {cls.name!r} takes no argument, got {arg!r}")
        return cls(**options)

    @abstractmethod
    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        """Yield samples in a fixed order (the first ``limit`` if given)."""

    def count(self, limit: int | None = None) -> int | None:
        """Number of samples ``samples(limit)`` yields, when known without loading them."""
        return None

    def dataset_info(self) -> dict[str, Any]:
        """id, revision, split, item count and content fingerprint, for the manifest."""
        return {"id": self.name}

    # -- confinement (evalkit.confine) ------------------------------------------------------------
    def path_roots(self) -> tuple[Path, ...]:
        """Folders the task's samples may name files in. The default is evalkit's own generated
        datasets (the demo tasks render their audio there); a task reading user data returns its
        data folder, so that a row naming ``../../secret`` is refused instead of read."""
        return (cache_dir() / "datasets",)

    def confinement_roots(self) -> tuple[Path, ...]:
        """``path_roots()`` plus ``--allow-path``, resolved: everything a sample may name."""
        return resolved_roots([*self.path_roots(), *self.allow_paths])

    def confine_sample(self, sample: Sample) -> Sample:
        """The sample with every audio path resolved inside ``confinement_roots()``, or
        ``PathEscapeError`` naming the task, sample, turn and field. The runner calls it before
        building any request of the sample, so an escaping file is never read nor sent. The roots
        are resolved once per task and ``--allow-path`` list (a run confines every sample)."""
        given = (*self.path_roots(), *self.allow_paths)
        cached = getattr(self, "_confined_roots", None)
        if cached is None or cached[0] != given:
            cached = self._confined_roots = (given, self.confinement_roots())
        roots = cached[1]
        turns = []
        moved = False  # a path already absolute and resolved (the usual case) keeps its objects
        for i, turn in enumerate(sample.conversation):
            if turn.audio is not None and turn.audio.path is not None:
                what = f"task {self.name!r} sample {sample.id!r} turn {i} field audio.path"
                real = confined(turn.audio.path, roots, what)
                if real != turn.audio.path:
                    turn = turn.model_copy(update={"audio": turn.audio.model_copy(update={"path": real})})
                    moved = True
            turns.append(turn)
        return sample.model_copy(update={"conversation": turns}) if moved else sample

    # -- identity within a run (resolve_tasks) ----------------------------------------------------
    def identity(self) -> Hashable:
        """What makes two resolved tasks the same task (``demo,demo-choice`` names demo-choice
        twice: it runs once). By default the class and name."""
        return (type(self), self.name)

    def distinct_name(self, depth: int) -> str | None:
        """A name that tells this task apart from another of the same name, using ``depth`` levels
        of detail (a samples file: that many of its parent folders), or None when it has none."""
        return None

    @classmethod
    def write_outputs(cls, run_dir: Path) -> list[Path]:
        """Files a task writes from a finished run besides summary and report (e.g. a benchmark's
        submission file when its answers are withheld). Called by every finalize, so it must be
        idempotent; the default writes none."""
        return []

    @classmethod
    def finalize_scores(cls, records: Iterator[ScoreRecord]) -> Iterator[ScoreRecord]:
        """A pass over this task's score records in dataset order (sample index, then judge order),
        for a published rule whose verdict on one item depends on earlier items (MMSU's carry-over):
        judges score items alone and concurrently, and this pass applies the dependence afterwards.
        Every finalize runs it once, after the streams are sorted and before summary.json, so it
        must be a pure function of the records it reads (idempotent). Default: unchanged."""
        return records

    def make_judges(self) -> dict[str, Judge]:
        """The judge instances that score this task, by name. Tasks whose judges need settings
        (a judge model spec, a scoring mode) build them here; the default looks names up."""
        from evalkit.judges.base import load_judge

        return {name: load_judge(name) for name in self.judges}

    def answer_turns(self, sample: Sample) -> list[int]:
        """Indices of the user turns the model must answer (default: every user turn)."""
        return [i for i, turn in enumerate(sample.conversation) if turn.role == "user"]

    async def user_turn(
        self, sample: Sample, turn_index: int, history: list[ModelOutput], service: ModelService
    ) -> Turn:
        """The user turn at ``turn_index`` as the model will hear it. ``sample`` is the conversation
        as played so far (earlier user turns are what was said), ``history`` the model's replies,
        ``service`` the run's model-call service (a simulator resolves its roles there). Default:
        the sample's own pre-written turn. A task with ``live_user_turns`` returns a turn whose
        audio is bytes; the turn loop saves it in the run directory."""
        return sample.conversation[turn_index]

    def build_request(self, sample: Sample, turn_index: int, history: list[ModelOutput]) -> ChatRequest:
        """The request for the user turn at ``turn_index``: every earlier turn, with the model's own
        replies (``history``, one per earlier answered turn) in place of assistant turns."""
        answered = self.answer_turns(sample)
        replies = dict(zip(answered, history, strict=False))
        messages: list[Message] = []
        if self.system_prompt:
            messages.append(Message(role="system", content=[TextPart(text=self.system_prompt)]))
        for i, turn in enumerate(sample.conversation[: turn_index + 1]):
            if turn.role == "assistant":
                continue  # closed loop: the model's own reply stands in (see below)
            parts: list[AudioPart | TextPart] = []
            if turn.audio is not None:
                parts.append(AudioPart(audio=turn.audio))
            if turn.text:
                parts.append(TextPart(text=turn.text))
            if not parts:
                raise EvalkitError(f"sample {sample.id!r} turn {i} has neither text nor audio")
            messages.append(Message(role=turn.role, content=parts))
            if i in replies and i < turn_index:
                reply = replies[i].text or ""
                messages.append(Message(role="assistant", content=[TextPart(text=reply)]))
        return ChatRequest(messages=messages, params=self.params)

    def describe(self) -> dict[str, Any]:
        """The task as the manifest records it; ``path_roots`` is what its samples could name
        (``evalkit report`` confines the audio it embeds to these folders and the run directory)."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "judges": list(self.judges),
            "group_by": list(self.group_by),
            "primary_metric": self.primary_metric,
            "params": self.params.model_dump(mode="json"),
            "system_prompt": self.system_prompt,
            "dataset": self.dataset_info(),
            "path_roots": [str(root) for root in self.confinement_roots()],
        }


class InMemoryTask(Task):
    """A task whose samples are parsed once into a list (count, fingerprint and the run all read
    it): subclasses implement ``parse``."""

    _samples: list[Sample] | None = None

    @abstractmethod
    def parse(self) -> list[Sample]:
        """Every sample of the task, in order."""

    def _load(self) -> list[Sample]:
        if self._samples is None:
            samples = self.parse()
            seen = SampleIds(self.source_label())
            for index, sample in enumerate(samples):
                seen.add(sample.id, f"item {index}")
            self._samples = samples
        return self._samples

    def source_label(self) -> str:
        """Where the samples come from, for error messages (a benchmark names its data)."""
        return f"task {self.name!r}"

    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        yield from self._load()[:limit]

    def generated_dataset_info(
        self, revision: str, synthesiser: str, location: str | Path, **extra: Any
    ) -> dict[str, Any]:
        """``dataset_info`` of a dataset evalkit renders itself (the demo tasks, demo-speech,
        long-turn): its id ``evalkit/NAME``, version, the synthesiser that spoke it and where the
        rendered files lie, plus ``extra`` facts of the task."""
        samples = self._load()
        return {
            "id": f"evalkit/{self.name}",
            "revision": revision,
            "split": "test",
            "count": len(samples),
            "fingerprint": fingerprint(samples, self.confinement_roots()),
            "synthesiser": synthesiser,
            "location": str(location),
            **extra,
        }

    def count(self, limit: int | None = None) -> int:
        n = len(self._load())
        return n if limit is None else min(n, limit)


class TaskFamily:
    """A name that stands for several tasks (``demo`` -> ``demo-arithmetic, demo-choice, ...``)."""

    def __init__(self, members: list[str], doc: str):
        self.members = members
        self.__doc__ = doc


class SampleIds:
    """Sample ids seen so far in one source. Two samples with one id would be one row of results
    (responses, scores and ``--resume`` are keyed by id), so the second is refused before any
    request. Ids are kept as 8-byte digests: a streamed file of a million samples stays small."""

    def __init__(self, source: str):
        self.source = source
        self._seen: set[bytes] = set()

    def add(self, sample_id: str, where: str) -> None:
        digest = hashlib.blake2b(sample_id.encode(), digest_size=8).digest()
        if digest in self._seen:
            raise EvalkitError(
                f"{self.source}: {where} repeats sample id {sample_id!r} of an earlier sample; "
                "fix: give every sample its own id"
            )
        self._seen.add(digest)


def fingerprint(samples: Iterable[Sample], roots: Sequence[Path] | None = None) -> str:
    """sha256 over the samples' JSON and every audio file's bytes: changes if any item changes.
    Takes any iterable, so a streamed task hashes its samples without holding them. With
    ``roots`` (``Task.confinement_roots()``), a file outside them is hashed by its name only:
    the fingerprint never reads what the run itself refuses to read."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(sample.model_dump_json(exclude={"conversation"}).encode())
        for turn in sample.conversation:
            h.update(turn.model_dump_json(exclude={"audio"}).encode())
            if turn.audio is not None:
                h.update(_audio_digest(turn.audio, roots))
    return h.hexdigest()


def _audio_digest(audio: Any, roots: Sequence[Path] | None) -> bytes:
    """One clip's part of the fingerprint: its content digest, or a marker for a clip that is
    refused (outside ``roots``) or unreadable (both reported per sample by the runner)."""
    try:
        if roots is not None and audio.data is None and audio.path is not None:
            return file_sha256(confined(audio.path, roots, "audio")).encode()  # by its confined path
        return audio.digest().encode()
    except PathEscapeError:
        return b"refused:" + str(audio.path).encode()
    except OSError:
        return b"unreadable:" + str(audio.path).encode()


def split_task_list(spec: str) -> list[str]:
    """``"demo,jsonl:path=x.jsonl,judges=numeric"`` -> ``["demo", "jsonl:path=x.jsonl,judges=numeric"]``:
    a ``key=value`` piece (no ``:`` before its ``=``) continues the options of the task before it."""
    items: list[str] = []
    for piece in (s.strip() for s in spec.split(",")):
        if not piece:
            continue
        key, sep, _ = piece.partition("=")
        if sep and ":" not in key and items and ":" in items[-1]:
            items[-1] += "," + piece
        else:
            items.append(piece)
    return items


def resolve_tasks(spec: str, allow_paths: Sequence[str | Path] = (), **options: Any) -> list[Task]:
    """``"demo,jsonl:/data/x.jsonl"`` -> task instances; families expand to their members. The
    same task named twice runs once; two different tasks under one name get distinct names
    (``unique_names``). ``allow_paths`` (``--allow-path``) widens every task's confinement."""
    names = split_task_list(spec)
    if not names:
        raise EvalkitError("no tasks given; pass --tasks NAME[,NAME...] (see `evalkit list tasks`)")
    tasks = unique_names(_resolve_items(names, options))
    allowed = tuple(Path(p).expanduser().absolute() for p in allow_paths)
    for task in tasks:
        task.allow_paths = allowed
    return tasks


def _resolve_items(items: list[str], options: dict[str, Any]) -> list[Task]:
    from evalkit.registry import tasks as registry

    resolved: list[Task] = []
    for item in items:
        name, _, arg = item.partition(":")
        entry = registry.get(name)
        if isinstance(entry, TaskFamily):
            # ``spoken-mqa:data=DIR`` -> every member gets ``data=DIR``
            members = [f"{member}:{arg}" if arg else member for member in entry.members]
            resolved.extend(_resolve_items(split_task_list(",".join(members)), options))
        else:
            resolved.append(entry.from_spec(arg, **options))
    return resolved


def unique_names(tasks: list[Task]) -> list[Task]:
    """One task per identity, one name per task. Tasks of one name but different identities (two
    ``jsonl:`` files both called ``samples.jsonl``) are renamed with ``distinct_name`` at the
    smallest depth that tells them all apart (``jsonl-a-samples``, ``jsonl-b-samples``); when no
    depth does, or a new name meets another task's, the run is refused in one line. Names stay
    as they were whenever they do not collide, so single-file runs keep comparable names."""
    unique: dict[Hashable, Task] = {}
    for task in tasks:
        unique.setdefault(task.identity(), task)
    groups: dict[str, list[Task]] = {}
    for task in unique.values():
        groups.setdefault(task.name, []).append(task)
    for name, group in groups.items():
        if len(group) > 1:
            _rename_apart(name, group)
    names = [task.name for task in unique.values()]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise EvalkitError(
            f"two different tasks would both be named {clash[0]!r}; fix: run them as separate runs, "
            "or give a jsonl task its own name with name=NAME in its spec"
        )
    return list(unique.values())


def _rename_apart(name: str, group: list[Task]) -> None:
    for depth in range(1, 256):
        names = [task.distinct_name(depth) for task in group]
        if any(n is None for n in names):
            break
        if len(set(names)) == len(names):
            for task, new in zip(group, names, strict=True):
                task.name = str(new)
            return
    raise EvalkitError(
        f"{len(group)} different tasks are all named {name!r} and no distinct names follow from their "
        "paths; fix: run them as separate runs, or give a jsonl task its own name with name=NAME"
    )


def name_slug(text: str) -> str:
    """A folder or file name as part of a task name (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"
