"""The task interface: a benchmark = samples + how to prompt + which judges + how to aggregate.

Every task is multi-turn by construction: a sample's conversation lists its turns, and the model
answers each user turn named by ``answer_turns`` with the conversation so far as context (its own
earlier replies fed back: the closed-loop protocol). A single-turn benchmark is a one-turn
conversation and takes exactly the same path.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError
from evalkit.records import (
    AudioPart,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    TextPart,
)

if TYPE_CHECKING:
    from evalkit.judges.base import Judge


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
    #: default generation parameters (a run may override max_tokens and seed)
    params: GenerationParams = GenerationParams(max_tokens=512)

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

    @classmethod
    def write_outputs(cls, run_dir: Path) -> list[Path]:
        """Files a task writes from a finished run besides summary and report (e.g. a benchmark's
        submission file when its answers are withheld). Called by every finalize, so it must be
        idempotent; the default writes none."""
        return []

    def make_judges(self) -> dict[str, Judge]:
        """The judge instances that score this task, by name. Tasks whose judges need settings
        (a judge model spec, a scoring mode) build them here; the default looks names up."""
        from evalkit.judges.base import load_judge

        return {name: load_judge(name) for name in self.judges}

    def answer_turns(self, sample: Sample) -> list[int]:
        """Indices of the user turns the model must answer (default: every user turn)."""
        return [i for i, turn in enumerate(sample.conversation) if turn.role == "user"]

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
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "judges": list(self.judges),
            "group_by": list(self.group_by),
            "primary_metric": self.primary_metric,
            "params": self.params.model_dump(mode="json"),
            "system_prompt": self.system_prompt,
            "dataset": self.dataset_info(),
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
            self._samples = self.parse()
        return self._samples

    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        yield from self._load()[:limit]

    def count(self, limit: int | None = None) -> int:
        n = len(self._load())
        return n if limit is None else min(n, limit)


class TaskFamily:
    """A name that stands for several tasks (``demo`` -> ``demo-arithmetic, demo-choice, ...``)."""

    def __init__(self, members: list[str], doc: str):
        self.members = members
        self.__doc__ = doc


def fingerprint(samples: Iterable[Sample]) -> str:
    """sha256 over the samples' JSON and every audio file's bytes: changes if any item changes.
    Takes any iterable, so a streamed task hashes its samples without holding them."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(sample.model_dump_json(exclude={"conversation"}).encode())
        for turn in sample.conversation:
            h.update(turn.model_dump_json(exclude={"audio"}).encode())
            if turn.audio is not None:
                try:
                    h.update(turn.audio.digest().encode())
                except OSError:  # a missing clip is reported per sample by the runner
                    h.update(b"unreadable:" + str(turn.audio.path).encode())
    return h.hexdigest()


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


def resolve_tasks(spec: str, **options: Any) -> list[Task]:
    """``"demo,jsonl:/data/x.jsonl"`` -> task instances; families expand to their members."""
    from evalkit.registry import tasks as registry

    resolved: list[Task] = []
    names = split_task_list(spec)
    if not names:
        raise EvalkitError("no tasks given; pass --tasks NAME[,NAME...] (see `evalkit list tasks`)")
    for item in names:
        name, _, arg = item.partition(":")
        entry = registry.get(name)
        if isinstance(entry, TaskFamily):
            # ``spoken-mqa:data=DIR`` -> every member gets ``data=DIR``
            members = [f"{member}:{arg}" if arg else member for member in entry.members]
            resolved.extend(resolve_tasks(",".join(members), **options))
        else:
            resolved.append(entry.from_spec(arg, **options))
    seen: set[str] = set()
    unique = []
    for task in resolved:
        if task.name not in seen:
            seen.add(task.name)
            unique.append(task)
    return unique
