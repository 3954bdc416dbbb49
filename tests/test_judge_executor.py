"""The judge executor (``evalkit.judging``) runs each judge the way it declares, without a Runner,
and the one micro-batcher (``evalkit.batching``) keeps every failure to its own item."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from evalkit.batching import MicroBatcher
from evalkit.judges.base import Judge, JudgeItem
from evalkit.judges.numeric import NumericJudge
from evalkit.judging import JudgeExecutor
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score, ScoreRecord, Turn
from evalkit.store import SCORES, RunStore, read_jsonl


def _where(score: Score, **extra: Any) -> Score:
    """The score with the process and thread that computed it."""
    where = {"pid": os.getpid(), "thread": threading.current_thread().name, **extra}
    return score.model_copy(update={"details": {**score.details, **where}})


class InlineJudge(NumericJudge):
    name = "t-inline"

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        return _where(self.score(sample, outputs), loop=asyncio.get_running_loop() is not None)


class ProcessJudge(NumericJudge):
    name = "t-process"
    execution = "process"

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        return _where(super().score(sample, outputs))


class BatchedJudge(NumericJudge):
    name = "t-batched"
    execution = "batched"
    batch_size = 3
    batch_max_wait_s = 0.2

    def score_batch(self, items: list[JudgeItem]) -> list[Score]:
        return [_where(s, batch=len(items)) for s in super().score_batch(items)]


class BrokenJudge(NumericJudge):
    """Raises whatever way it is run: the failure must come back as this sample's score."""

    name = "t-broken"

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        raise ValueError(f"cannot judge {sample.id}")


class BrokenInPool(BrokenJudge):
    execution = "process"


class BrokenBatched(BrokenJudge):
    execution = "batched"
    batch_size = 2


def _item(i: int) -> JudgeItem:
    sample = Sample(
        id=f"q{i}", task="t", conversation=[Turn(role="user", text="n?")], reference={"answer": str(i)}
    )
    return sample, [ModelOutput(text=f"The answer is {i}.")]


async def _score_all(executor: JudgeExecutor, judge: Judge, n: int) -> list[Score]:
    return list(await asyncio.gather(*(executor.score(judge, *_item(i)) for i in range(n))))


def test_each_judge_runs_as_it_declares_and_batch_stats_reach_the_manifest(tmp_path: Path) -> None:
    judges: dict[str, Judge] = {"inline": InlineJudge(), "process": ProcessJudge(), "batched": BatchedJudge()}
    store = RunStore.create(tmp_path, "m", ["t"])
    store.write_manifest({"run_id": store.run_id})
    executor = JudgeExecutor({"t": judges}, workers=1, store=store)

    async def scenario() -> dict[str, list[Score]]:
        try:
            return {mode: await _score_all(executor, judge, 3) for mode, judge in judges.items()}
        finally:
            await executor.aclose()

    scores = asyncio.run(scenario())
    assert all(s.passed for mode in scores.values() for s in mode)
    here = os.getpid()
    inline = [s.details for s in scores["inline"]]
    assert all(d["pid"] == here and d["thread"] == threading.main_thread().name for d in inline)
    assert {s.details["pid"] for s in scores["process"]} != {here}  # a pool worker
    batched = [s.details for s in scores["batched"]]
    assert all(d["pid"] == here and d["thread"].startswith("evalkit-judge-t-batched") for d in batched)
    assert [d["batch"] for d in batched] == [3, 3, 3]  # one full batch, not three of one
    info = store.read_manifest()["judge_batching"]
    assert list(info) == ["t/t-batched"]
    assert info["t/t-batched"]["execution"] == "batched" and info["t/t-batched"]["batch_sizes"] == {"3": 1}


@pytest.mark.parametrize("kind", [BrokenJudge, BrokenInPool, BrokenBatched])
def test_a_judge_failure_is_that_samples_judge_error_in_every_mode(kind: type[Judge]) -> None:
    judge = kind()

    async def scenario() -> list[Score]:
        executor = JudgeExecutor({"t": {judge.name: judge}}, workers=1)
        try:
            return await _score_all(executor, judge, 2)
        finally:
            await executor.aclose()

    scores = asyncio.run(scenario())
    for i, score in enumerate(scores):
        assert score.error is not None and score.error.kind == "judge_error"
        assert f"cannot judge q{i}" in score.error.message  # each item's own failure, run alone


def test_judge_sample_writes_model_errors_and_scores_to_the_store(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    store.write_manifest({"run_id": store.run_id})
    store.open_streams()
    executor = JudgeExecutor(
        {"t": {"t-inline": InlineJudge(), "t-broken": BrokenJudge()}}, workers=1, store=store
    )
    failed = ModelOutput(error=ErrorInfo(kind="timeout", message="no reply"))

    async def scenario() -> tuple[bool, bool]:
        ok = await executor.judge_sample("t", 0, *_item(0), names=["t-inline"])
        broken = await executor.judge_sample("t", 1, *_item(1), names=["t-inline", "t-broken"])
        stopped = await executor.judge_sample("t", 2, *_item(2), ["t-inline"], failure=failed, failed_turn=0)
        await executor.aclose()
        return ok, broken and stopped

    assert asyncio.run(scenario()) == (False, True)
    store.close_streams()
    records = read_jsonl(store.root / SCORES, ScoreRecord)
    assert [(r.sample_id, r.score.judge) for r in records] == [
        ("q0", "t-inline"),
        ("q1", "t-inline"),
        ("q1", "t-broken"),
        ("q2", "t-inline"),
    ]
    assert records[3].score.error is not None and records[3].score.error.kind == "model_error"
    assert "turn 0: [timeout] no reply" in records[3].score.error.message
    assert "judge_batching" not in store.read_manifest()  # nothing was batched


# -- the one micro-batcher ------------------------------------------------------------------------
def test_micro_batcher_keeps_each_failure_to_its_item() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        if 13 in items and len(items) > 1:
            raise RuntimeError("the batch crashed")  # as a model crashing on one input would
        return [ValueError(f"odd {v}") if v % 2 else v * 10 for v in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_wait_s=0.05, name="t")

    async def scenario() -> list[Any]:
        try:
            first = await asyncio.gather(*(batcher.submit(v) for v in (2, 3, 4, 6)), return_exceptions=True)
            second = await asyncio.gather(*(batcher.submit(v) for v in (8, 13, 10)), return_exceptions=True)
            return [*first, *second]
        finally:
            await batcher.aclose()

    results = asyncio.run(scenario())
    assert [r if isinstance(r, int) else str(r) for r in results] == [20, "odd 3", 40, 60, 80, "odd 13", 100]
    # the crashed batch ran again item by item; the first batch's per-item error did not split it
    assert calls == [[2, 3, 4, 6], [8, 13, 10], [8], [13], [10]]
    info = batcher.describe()
    assert info["batch_failures"] == 1 and info["batch_failure_messages"] == [
        "RuntimeError: the batch crashed"
    ]
    assert info["batch_sizes"] == {"3": 1, "4": 1} and info["items"] == 7


def test_closing_the_batcher_fails_waiting_callers_instead_of_hanging() -> None:
    started = threading.Event()
    release = threading.Event()

    def run(items: list[int]) -> list[int | BaseException]:
        started.set()
        release.wait(5)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=1, max_wait_s=0.0, name="t")

    async def scenario() -> list[Any]:
        waiting = [asyncio.ensure_future(batcher.submit(v)) for v in (1, 2)]
        await asyncio.to_thread(started.wait, 5)
        # item 1 is running, item 2 waits: aclose fails both at once, then waits for the thread
        threading.Timer(0.2, release.set).start()
        await batcher.aclose()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert all(isinstance(r, RuntimeError) and "batcher was closed" in str(r) for r in results)
