"""``jsonl:path=FILE,judges=J1+J2[,group_by=K1+K2][,system=TEXT]``: your own samples, in evalkit's
``Sample`` schema (one JSON object per line), scored by registered judges.

Relative audio paths are resolved against the file's folder, so a dataset folder can be moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import Sample
from evalkit.registry import register_task
from evalkit.specs import parse_options
from evalkit.tasks.base import InMemoryTask, fingerprint


@register_task("jsonl")
class SamplesFileTask(InMemoryTask):
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

    def parse(self) -> list[Sample]:
        samples = []
        base = self.path.parent
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                sample = Sample.model_validate_json(line)
            except ValueError as exc:
                first = str(exc).splitlines()
                detail = " ".join(first[1:3]).strip() if len(first) > 1 else str(exc)
                raise EvalkitError(f"{self.path}:{number}: not a valid sample ({detail})") from None
            turns = []
            for turn in sample.conversation:
                if turn.audio is not None and turn.audio.path and not Path(turn.audio.path).is_absolute():
                    turn = turn.model_copy(
                        update={"audio": turn.audio.model_copy(update={"path": str(base / turn.audio.path)})}
                    )
                turns.append(turn)
            samples.append(sample.model_copy(update={"conversation": turns, "task": self.name}))
        return samples

    def dataset_info(self) -> dict[str, Any]:
        return {
            "id": str(self.path.resolve()),
            "count": self.count(),
            "fingerprint": fingerprint(self._load()),
        }
