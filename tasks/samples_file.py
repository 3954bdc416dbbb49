"""``jsonl:path=FILE,judges=J1+J2[,group_by=K1+K2][,system=TEXT][,name=NAME]``: your own samples,
in evalkit's ``Sample`` schema (one JSON object per line), scored by registered judges.

Relative audio paths are resolved against the file's folder, so a dataset folder can be moved;
every audio path must stay inside that folder (``evalkit.confine``; ``--allow-path`` widens it).
Sample ids must be unique in the file, and the file must be UTF-8: either mistake is one line
naming the file and line, before any request.

The task is named ``jsonl-STEM`` (``name=NAME`` names it ``NAME``). When two files of one run
share a stem (``a/samples.jsonl``, ``b/samples.jsonl``), each is named from its parent folders,
as few as tell them apart: ``jsonl-a-samples``, ``jsonl-b-samples``.

The file is streamed, never held: ``samples()`` parses one line at a time as the runner pulls it,
``count()`` only counts lines, and the manifest fingerprint hashes samples as they are read. A
file of a million samples costs the memory of one (the issue's "memory must stay flat").
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import Sample
from evalkit.registry import register_task
from evalkit.specs import Options, parse_into
from evalkit.tasks.base import SampleIds, Task, fingerprint, name_slug


class SamplesFileOptions(Options):
    """``jsonl:path=FILE,judges=J1+J2[,group_by=K1+K2,system=TEXT,name=NAME]``."""

    path: str
    judges: str
    group_by: str = ""
    system: str | None = None
    name: str | None = None


@register_task("jsonl")
class SamplesFileTask(Task):
    """Samples from a local JSONL file: jsonl:path=FILE,judges=numeric+choice."""

    name = "jsonl"

    def __init__(
        self,
        path: Path,
        judges: tuple[str, ...],
        group_by: tuple[str, ...] = (),
        system: str | None = None,
        name: str | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise EvalkitError(f"{self.path}: samples file not found; fix path= in the jsonl task spec")
        self.explicit_name = name
        self.name = name or f"jsonl-{self.path.stem}"
        self.judges = judges
        self.group_by = group_by
        self.system_prompt = system
        self._count: int | None = None

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> SamplesFileTask:
        opts = parse_into(
            SamplesFileOptions, arg, "task spec 'jsonl:...' (e.g. jsonl:path=data.jsonl,judges=numeric)"
        )
        return cls(
            Path(opts.path).expanduser(),
            tuple(filter(None, opts.judges.split("+"))),
            tuple(filter(None, opts.group_by.split("+"))),
            opts.system,
            opts.name or None,
        )

    def identity(self) -> Hashable:
        """The same file with the same settings is one task; anything else is another."""
        return (type(self), self.path.resolve(), self.judges, self.group_by, self.system_prompt, self.name)

    def distinct_name(self, depth: int) -> str | None:
        """``jsonl-<the last depth parent folders>-STEM``; None past the root or with an explicit
        ``name=`` (a name the user chose is never changed: a clash is refused instead)."""
        folders = self.path.absolute().parent.parts[1:]
        if self.explicit_name or depth > len(folders):
            return None
        return "-".join(["jsonl", *(name_slug(f) for f in folders[-depth:]), self.path.stem])

    def path_roots(self) -> tuple[Path, ...]:
        """The samples file's folder: the one relative paths resolve against."""
        return (self.path.absolute().parent,)

    def _sample_of(self, number: int, line: str) -> Sample:
        """One line -> a sample of this task, audio paths made absolute; a bad line is an error
        naming file and line (raised when the runner reaches it, after earlier samples ran)."""
        try:
            sample = Sample.model_validate_json(line)
        except ValueError as exc:
            first = str(exc).splitlines()
            detail = " ".join(first[1:3]).strip() if len(first) > 1 else str(exc)
            raise EvalkitError(f"{self.path}:{number}: not a valid sample ({detail})") from None
        base = self.path.absolute().parent
        turns = []
        for turn in sample.conversation:
            if turn.audio is not None and turn.audio.path and not os.path.isabs(turn.audio.path):
                turn = turn.model_copy(
                    update={"audio": turn.audio.model_copy(update={"path": str(base / turn.audio.path)})}
                )
            turns.append(turn)
        return sample.model_copy(update={"conversation": turns, "task": self.name})

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(line number, text) of every non-blank line, decoded one at a time so that a byte that
        is not UTF-8 is reported with its line instead of a traceback from deep in ``io``."""
        with open(self.path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EvalkitError(
                        f"{self.path}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                        f"{exc.start + 1}); fix: re-save the file as UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8 {self.path.name})"
                    ) from None

    def _iter_all(self) -> Iterator[Sample]:
        """Every sample in file order, one line in memory at a time; a repeated id is refused
        (the manifest's fingerprint pass reads the whole file before any request)."""
        ids = SampleIds(str(self.path))
        for number, line in self._lines():
            sample = self._sample_of(number, line)
            ids.add(sample.id, f"line {number}")
            yield sample

    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        yield from islice(self._iter_all(), limit)

    def count(self, limit: int | None = None) -> int:
        """Non-blank lines, counted without parsing them (a bad line still fails in ``samples``)."""
        if self._count is None:
            self._count = sum(1 for _ in self._lines())
        return self._count if limit is None else min(self._count, limit)

    def dataset_info(self) -> dict[str, Any]:
        return {
            "id": str(self.path.resolve()),
            "count": self.count(),
            "fingerprint": fingerprint(self._iter_all(), self.confinement_roots()),
        }
