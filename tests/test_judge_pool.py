"""CPU-heavy judges run in the runner's process pool, overlapped with generation, and their
scores land in scores.jsonl like any other (in-process run against the loopback server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evalkit.judges.numeric import NumericJudge
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge
from evalkit.runner import RunConfig, evaluate
from evalkit.testing.openai_server import OpenAIServer


@register_judge("test-pooled-numeric")
class PooledNumericJudge(NumericJudge):
    """Numeric matching marked CPU-heavy, reporting which process scored it."""

    name = "test-pooled-numeric"
    cpu_heavy = True

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        score = super().score(sample, outputs)
        return score.model_copy(update={"details": {**score.details, "pid": os.getpid()}})


def _samples(path: Path, n: int) -> Path:
    rows: list[dict[str, Any]] = [
        {
            "id": f"q{i}",
            "task": "pool",
            "conversation": [{"role": "user", "text": f"Please repeat the number {i}."}],
            "reference": {"answer": str(i)},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cpu_heavy_judge_runs_in_the_process_pool(tmp_path: Path) -> None:
    data = _samples(tmp_path / "pool.jsonl", 6)
    with OpenAIServer() as server:
        config = RunConfig(
            model=f"openai:loopback@{server.base_url}",
            tasks=f"jsonl:path={data},judges=test-pooled-numeric+numeric",
            concurrency=3,
            out_dir=str(tmp_path / "runs"),
            use_cache=False,
            judge_workers=2,
        )
        store = evaluate(config, argv=["test"], show_progress=False)
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
