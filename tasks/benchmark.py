"""Base of the published benchmarks: rows from the hub or a local copy, one official prompt
template, named scoring modes, provenance in the manifest.

A benchmark task takes the options ``data`` (local path; wins over the hub), ``revision`` (hub
commit or tag), ``split`` and ``mode`` (a scoring mode, ``official`` by default). Each mode names the
judges that score it, so what a number means is always written in the run's manifest.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from pathlib import Path
from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.records import Sample
from evalkit.specs import Options, parse_into
from evalkit.tasks.base import InMemoryTask, fingerprint
from evalkit.tasks.prompts import template_digest
from evalkit.tasks.sources import DataSource, load_rows


class BenchmarkOptions(Options):
    """``NAME:data=DIR,revision=REV,split=S,mode=M``: a local copy or pinned hub revision, the
    split and the scoring mode (defaults: the task's own)."""

    data: str | None = None
    revision: str | None = None
    split: str | None = None
    mode: str = "official"


class BenchmarkTask(InMemoryTask):
    """Subclasses set ``name``, ``hub_id``, ``default_split``, ``modes``, ``template`` and
    implement ``to_sample`` (one dataset row -> one Sample)."""

    hub_id: ClassVar[str]
    #: the hub dataset's config name, if it has several
    hub_config: ClassVar[str | None] = None
    default_split: ClassVar[str]
    #: mode name -> judge names; ``official`` first
    modes: ClassVar[dict[str, tuple[str, ...]]]
    template: ClassVar[str | None] = None
    #: the dataset version the task was written against (e.g. MMAU's v05.15.25)
    dataset_version: ClassVar[str | None] = None
    #: the ``NAME:key=value`` options the task spec accepts (subclasses add their own fields)
    spec_options: ClassVar[type[BenchmarkOptions]] = BenchmarkOptions

    def __init__(
        self,
        data: str | None = None,
        revision: str | None = None,
        split: str | None = None,
        mode: str = "official",
    ):
        if mode not in self.modes:
            raise EvalkitError(
                f"task {self.name!r}: unknown mode {mode!r}; choose one of {', '.join(self.modes)}"
            )
        self.data = data
        self.revision = revision
        self.split = split or self.default_split
        self.mode = mode
        self.judges = self.modes[mode]
        self._source: DataSource | None = None

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> BenchmarkTask:
        opts = parse_into(cls.spec_options, arg, f"task spec '{cls.name}:...'")
        return cls(**opts.model_dump(exclude_unset=True), **options)

    @property
    def source(self) -> DataSource:
        if self._source is None:
            self._source = load_rows(self.hub_id, self.data, self.revision, self.split, self.hub_config)
        return self._source

    @abstractmethod
    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        """One dataset row as a Sample (reference and meta included)."""

    def parse(self) -> list[Sample]:
        return [self.to_sample(row, i) for i, row in enumerate(self.source.rows)]

    def path_roots(self) -> tuple[Path, ...]:
        """The ``--data`` folder (or the hub caches): a row's audio path must stay inside it."""
        return self.source.roots

    def source_label(self) -> str:
        where = self.source.info.get("path") or self.source.info.get("id") or self.hub_id
        return f"{where} (task {self.name!r})"

    def identity(self) -> Hashable:
        """Two specs of one benchmark on different data, revision, split or mode are different
        tasks (they cannot share one name in a run: ``resolve_tasks`` refuses them)."""
        return (type(self), self.name, self.data, self.revision, self.split, self.mode)

    def dataset_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            **self.source.info,
            "split": self.split,
            "count": len(self.source.rows),
            "fingerprint": fingerprint(self._load(), self.confinement_roots()),
            "mode": self.mode,
        }
        if self.dataset_version:
            info["version"] = self.dataset_version
        if self.template:
            info["prompt_template"] = self.template
            info["prompt_sha256"] = template_digest(self.template)
        return info
