"""``jsonl:path=FILE,judges=J1+J2[,group_by=K1+K2][,system=TEXT]``: your own samples, in evalkit's
``Sample`` schema (one JSON object per line), scored by registered judges.

Relative audio paths are resolved against the file's folder, so a dataset folder can be moved.

The file is streamed, never held: ``samples()`` parses one line at a time as the runner pulls it,
``count()`` only counts lines, and the manifest fingerprint hashes samples as they are read. A
file of a million samples costs the memory of one (the issue's "memory must stay flat").
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import Sample
from evalkit.registry import register_task
from evalkit.specs import parse_options
from evalkit.tasks.base import Task, fingerprint


@register_task("jsonl")
class SamplesFileTask(Task):
    """Samples from a local JSONL file: jsonl:path=FILE,judges=numeric+choice."""

    name = "jsonl"

    def __init__(
        self, path: Path, judges: tuple[str, ...], group_by: tuple[str, ...] = (), system: str | None = None
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise EvalkitError(f"{self.path}: samples file not found; fix path= in the jsonl task spec")
        self.name = f"jsonl-{self.path.stem}"
        self.judges = judges
        self.group_by = group_by
        self.system_prompt = system
        self._count: int | None = None

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> SamplesFileTask:
        opts = parse_options(arg, "task spec 'jsonl:...'")
        if "path" not in opts or "judges" not in opts:
            raise EvalkitError(
                "task spec jsonl needs path= and judges=, e.g. jsonl:path=data.jsonl,judges=numeric"
            )
        return cls(
            Path(opts["path"]).expanduser(),
            tuple(filter(None, opts["judges"].split("+"))),
            tuple(filter(None, opts.get("group_by", "").split("+"))),
            opts.get("system"),
        )

    def _sample_of(self, number: int, line: str) -> Sample:
        """One line -> a sample of this task, audio paths made absolute; a bad line is an error
        naming file and line (raised when the runner reaches it, after earlier samples ran)."""
        try:
            sample = Sample.model_validate_json(line)
        except ValueError as exc:
            first = str(exc).splitlines()
            detail = " ".join(first[1:3]).strip() if len(first) > 1 else str(exc)
            raise EvalkitError(f"{self.path}:{number}: not a valid sample ({detail})") from None
        base = self.path.parent
        turns = []
        for turn in sample.conversation:
            if turn.audio is not None and turn.audio.path and not Path(turn.audio.path).is_absolute():
                turn = turn.model_copy(
                    update={"audio": turn.audio.model_copy(update={"path": str(base / turn.audio.path)})}
                )
            turns.append(turn)
        return sample.model_copy(update={"conversation": turns, "task": self.name})

    def _iter_all(self) -> Iterator[Sample]:
        """Every sample in file order, one line in memory at a time."""
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield self._sample_of(number, line)

    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        yield from islice(self._iter_all(), limit)

    def count(self, limit: int | None = None) -> int:
        """Non-blank lines, counted without parsing them (a bad line still fails in ``samples``)."""
        if self._count is None:
            with open(self.path, encoding="utf-8") as fh:
                self._count = sum(1 for line in fh if line.strip())
        return self._count if limit is None else min(self._count, limit)

    def dataset_info(self) -> dict[str, Any]:
        return {
            "id": str(self.path.resolve()),
            "count": self.count(),
            "fingerprint": fingerprint(self._iter_all()),
        }
