"""Finishing a run directory: the streams sorted once, the tasks' score passes, summary.json,
report.html and the tasks' own outputs.

One pass does the data work: ``RunStore.sorted_streams`` rewrites responses.jsonl, scores.jsonl
and samples.jsonl in canonical order and yields every record as it writes it; the score passes
(``Task.finalize_scores``) ride on the scores' rewrite and the summary is computed from the
records on their way to disk, and so is report.html's scan (``evalkit.reports.html.ReportScan``:
statuses, errors, chart numbers and the shown samples' records), and so is the manifest's
``answer_sources`` (``AnswerSources``). So finalize reads each file twice at most (an index pass and
the copy; once when this session wrote it from empty: its writer indexed the lines), whatever the
run's size, holding only small sort keys and the report's bounded share. ``evalkit report`` renders
from one pass of its own, never rewriting the files.

Called at the end of ``evalkit run``, by ``evalkit merge`` and by ``evalkit score``; safe to call
again (every step is idempotent). ``evalkit report`` does not call it: it only renders.
"""

from __future__ import annotations

import importlib
import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from evalkit.errors import EvalkitError
from evalkit.records import SCHEMA_VERSION, ResponseRecord, ScoreRecord
from evalkit.run_files import Manifest
from evalkit.sharding import parse_shard
from evalkit.store import MANIFEST, RunStore
from evalkit.summary import summarise_run
from evalkit.tasks.base import Task

if TYPE_CHECKING:
    from evalkit.reports.html import ReportScan

ScorePass = Callable[[Iterator[ScoreRecord]], Iterator[ScoreRecord]]
R = TypeVar("R")


def finalize(store: RunStore) -> dict[str, Any]:
    """Order the streams, write summary.json and report.html. Safe to call again."""
    from evalkit.reports.charts import ChartData
    from evalkit.reports.html import ReportScan, max_samples_setting, write_report

    manifest = store.manifest()
    scan = ReportScan(ChartData.for_manifest(manifest), max_samples_setting(None))
    summary = finish_files(store, manifest, scan)
    write_report(store, scan=scan)  # from the records as they were written: no pass of its own
    for task in manifest.tasks:
        task_class(store, task.class_).write_outputs(store.root)
    return summary


def finish_files(store: RunStore, manifest: Manifest, scan: ReportScan | None = None) -> dict[str, Any]:
    """The data phase: the streams sorted (score passes applied) and summary.json written, in
    one rewrite that reads each JSONL file twice (see the module docstring); ``scan`` (the
    report's) is fed every record on its way to disk."""
    check_writable(store, manifest)
    judge_order = [j for t in manifest.tasks for j in t.judges]
    passes = _score_passes(store, manifest)
    responses, scores, samples = store.sorted_streams(
        [t.name for t in manifest.tasks],
        judge_order,
        (lambda records: _apply_score_passes(records, passes)) if passes else None,
    )
    deque(samples, maxlen=0)
    if scan is not None:
        responses, scores = _tap(responses, scan.add_response), _tap(scores, scan.add_score)
    sources = AnswerSources()
    responses = _tap(responses, sources.add)
    # streamed off the rewrite: summarising keeps compact numbers, never every record (flat memory)
    tasks = [t.model_dump(by_alias=True, exclude_unset=True) for t in manifest.tasks]
    summary = summarise_run(tasks, scores, responses, manifest.seed, manifest.judges)
    for rest in (scores, responses):  # every file is replaced only once its iterator is exhausted
        deque(rest, maxlen=0)
    shard = parse_shard(manifest.config.get("shard"))
    if shard is not None:  # a shard's numbers are over its own samples only: say so where they are read
        summary["shard"] = {
            "index": shard.index,
            "count": shard.count,
            "note": f"shard {shard} only: metrics cover this shard's samples; join all shards with "
            "`evalkit merge` for the run's results",
        }
    store.update_manifest(answer_sources=sources.counts())
    store.write_summary(summary)
    return summary


class AnswerSources:
    """Where the run's answers came from, counted off finalize's sorted responses (the latest
    record per turn): asked in this run (``fresh``) or served by the cache entry of another run
    (``cached_from``: run id -> answers). Recorded in the manifest as ``answer_sources``."""

    def __init__(self) -> None:
        self.fresh = 0
        self.cached_from: dict[str, int] = defaultdict(int)

    def add(self, record: ResponseRecord) -> None:
        if record.cached:
            self.cached_from[record.cached_from or "(unrecorded run)"] += 1
        else:
            self.fresh += 1

    def counts(self) -> dict[str, Any]:
        return {"fresh": self.fresh, "cached_from": dict(self.cached_from)}


def _tap(records: Iterator[R], see: Callable[[R], Any]) -> Iterator[R]:
    """``records`` unchanged, each shown to ``see`` on its way through."""
    for record in records:
        see(record)
        yield record


def check_writable(store: RunStore, manifest: Manifest) -> None:
    """A run a newer evalkit wrote is read by this one, never rewritten: rewriting would drop the
    fields this version does not know (``evalkit.run_files``, forward compatibility)."""
    if manifest.schema_version > SCHEMA_VERSION:
        raise EvalkitError(
            f"{store.root / MANIFEST}: schema_version {manifest.schema_version} was written by a newer "
            f"evalkit (this one writes {SCHEMA_VERSION}); upgrade evalkit to finish or re-judge this run"
        )


def _score_passes(store: RunStore, manifest: Manifest) -> dict[str, ScorePass]:
    """Task name -> its ``finalize_scores`` pass, for the tasks that define one. A task class that
    cannot be imported has none here: the write_outputs step of ``finalize`` names it, once the
    summary and report are written."""
    passes: dict[str, ScorePass] = {}
    for task in manifest.tasks:
        try:
            cls = task_class(store, task.class_)
        except EvalkitError:
            continue  # raised again, with its one-line message, after the summary is written
        if cls.finalize_scores.__func__ is not Task.finalize_scores.__func__:
            passes[task.name] = cls.finalize_scores
    return passes


def _apply_score_passes(
    records: Iterator[ScoreRecord], passes: dict[str, ScorePass]
) -> Iterator[ScoreRecord]:
    """Each task's records (contiguous and in sample order once the stream is sorted) through its
    pass; other tasks' records unchanged (``Task.finalize_scores``)."""
    for task, group in itertools.groupby(records, key=lambda r: r.task):
        yield from passes.get(task, Task.finalize_scores)(group)


def task_class(store: RunStore, dotted: str) -> type[Task]:
    """The task class a run recorded, for its extra outputs (e.g. a benchmark's submission file).
    A class that cannot be imported any more (an uninstalled plug-in) is a one-line error; the
    summary and report are already written by then."""
    module, _, qualname = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError, ValueError) as exc:
        raise EvalkitError(
            f"{store.root / MANIFEST}: task class {dotted!r} cannot be imported ({exc}); "
            "install the package that provides it to write the task's own outputs"
        ) from None
