"""Judges declaring ``execution = "process"`` run in the runner's process pool, overlapped with
generation, and their scores land in scores.jsonl like any other (in-process run against the
loopback server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from loopback_runs import numbers_file, run_on_loopback

from evalkit.judges.numeric import NumericJudge
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge


@register_judge("test-pooled-numeric")
class PooledNumericJudge(NumericJudge):
    """Numeric matching run in the process pool, reporting which process scored it."""

    name = "test-pooled-numeric"
    execution = "process"

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        score = super().score(sample, outputs)
        return score.model_copy(update={"details": {**score.details, "pid": os.getpid()}})


def test_process_judge_runs_in_the_process_pool(tmp_path: Path) -> None:
    data = numbers_file(tmp_path / "pool.jsonl", 6, "pool")
    store = run_on_loopback(tmp_path, data, "test-pooled-numeric+numeric", concurrency=3, judge_workers=2)
    scores = [json.loads(line) for line in (store.root / "scores.jsonl").read_text().splitlines()]
    pooled = [s for s in scores if s["score"]["judge"] == "test-pooled-numeric"]
    inline = [s for s in scores if s["score"]["judge"] == "numeric"]
    assert len(pooled) == 6 and len(inline) == 6
    assert all(s["score"]["details"]["pid"] != os.getpid() for s in pooled)  # scored in a worker
    # the loopback server answers "The answer is N." with the last number it heard: all correct
    assert [s["score"]["passed"] for s in pooled] == [True] * 6
    assert [s["score"]["metrics"] for s in pooled] == [s["score"]["metrics"] for s in inline]
    summary = json.loads((store.root / "summary.json").read_text())
    assert (
        summary["tasks"]["jsonl-pool"]["judges"]["test-pooled-numeric"]["metrics"]["accuracy"]["value"] == 1.0
    )
