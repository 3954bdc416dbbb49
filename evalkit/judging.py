"""The judge executor: every judge of a run is run through one ``JudgeExecutor``.

Why one place: a judge says how it must run (``Judge.execution``) and the executor honours it,
so the runner and ``evalkit score`` (re-judging a finished run, no model calls) score alike:

- ``inline``: ``Judge.ascore`` awaited on the event loop (plain matching; LLM judges that await a
  model call);
- ``process``: ``Judge.score`` in a process pool of ``workers`` processes (decoding audio, signal
  processing, math-verify's ``signal.alarm``), started on first use;
- ``batched``: ``Judge.score_batch`` through one ``evalkit.batching.MicroBatcher`` per judge
  instance (one in-process model, batches of up to ``batch_size``).

A judge failure is data: whatever a judge raises becomes that sample's ``judge_error`` score.
``aclose`` stops the pool and the batchers and records in the manifest what each batcher did
(``judge_batching``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from evalkit.batching import MicroBatcher
from evalkit.judges.base import Execution, Judge, JudgeItem, judge_error, not_applicable_score
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score, ScoreRecord
from evalkit.store import RunStore

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

Mode = Callable[[Judge, Sample, list[ModelOutput]], Awaitable[Score]]


def _judge_in_process(judge: Judge, sample_json: str, outputs_json: list[str]) -> str:
    """Process-pool entry point. The judge instance travels pickled (its class is imported in the
    worker by module path, so judges registered anywhere, and judges a task configured, work);
    records travel as JSON (always picklable). Heavy models load lazily inside the worker."""
    sample = Sample.model_validate_json(sample_json)
    outputs = [ModelOutput.model_validate_json(o) for o in outputs_json]
    return judge.score(sample, outputs).model_dump_json()


def model_error_score(judge: str, failure: ModelOutput, failed_turn: int) -> Score:
    """The score of a sample whose conversation stopped on a model error: never judged."""
    assert failure.error is not None
    message = f"turn {failed_turn}: [{failure.error.kind}] {failure.error.message}"
    return Score(judge=judge, error=ErrorInfo(kind="model_error", message=message))


class JudgeExecutor:
    """Runs judges as each declares (see the module docstring). ``judges`` maps a task name to its
    judges by name (the batch stats are keyed ``task/judge``); ``store``, when given, receives the
    score records of ``judge_sample`` and the batch stats; ``workers`` sizes the process pool."""

    def __init__(
        self, judges: Mapping[str, Mapping[str, Judge]], workers: int, store: RunStore | None = None
    ):
        self.judges = judges
        self.workers = max(1, workers)
        self.store = store
        self._pool: ProcessPoolExecutor | None = None
        self._batchers: dict[int, tuple[str, Judge, MicroBatcher[JudgeItem, Score]]] = {}
        self._modes: dict[Execution, Mode] = {
            "inline": self._inline,
            "process": self._in_pool,
            "batched": self._batched,
        }

    async def score(self, judge: Judge, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """The judge's score of one sample, run the way the judge declares; never raises for a
        judge's own failure (it is the score's ``judge_error``). A sample the judge does not apply
        to (``Judge.not_applicable``: a speech judge and a text-only reply) is not judged: its
        score says why."""
        try:
            reason = judge.not_applicable(sample, outputs)
            if reason is not None:
                return not_applicable_score(judge.name, reason)
            return await self._modes[judge.execution](judge, sample, outputs)
        except Exception as exc:  # a judge failure is data: recorded, counted, shown
            return judge_error(judge.name, exc)

    async def judge_sample(
        self,
        task: str,
        index: int,
        sample: Sample,
        outputs: list[ModelOutput],
        names: Iterable[str],
        failure: ModelOutput | None = None,
        failed_turn: int = -1,
    ) -> bool:
        """Score one sample with the task's judges ``names`` (in order) and append each score to
        the store the moment it exists; a sample that stopped on a model error (``failure`` at
        ``failed_turn``) gets a ``model_error`` score from each judge instead. Whether the sample
        had any error (model or judge)."""
        any_error = failure is not None
        for name in names:
            if failure is not None:
                score = model_error_score(name, failure, failed_turn)
            else:
                score = await self.score(self.judges[task][name], sample, outputs)
                any_error = any_error or score.error is not None
            if self.store is not None:
                self.store.append_score(
                    ScoreRecord(
                        task=task, sample_id=sample.id, sample_index=index, meta=sample.meta, score=score
                    )
                )
        return any_error

    # -- the modes --------------------------------------------------------------------------------
    @staticmethod
    async def _inline(judge: Judge, sample: Sample, outputs: list[ModelOutput]) -> Score:
        return await judge.ascore(sample, outputs)

    async def _in_pool(self, judge: Judge, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if self._pool is None:
            # imported here: a run whose judges all run inline never loads multiprocessing
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a forked child inherits torch/OpenMP thread pools the parent
            # already started (an hf: model, the cascade) and deadlocks in its first op
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        raw = await asyncio.get_running_loop().run_in_executor(
            self._pool,
            _judge_in_process,
            judge,
            sample.model_dump_json(),
            [o.model_dump_json() for o in outputs],
        )
        return Score.model_validate_json(raw)

    async def _batched(self, judge: Judge, sample: Sample, outputs: list[ModelOutput]) -> Score:
        return await self._batcher(judge).submit((sample, outputs))

    def _batcher(self, judge: Judge) -> MicroBatcher[JudgeItem, Score]:
        """The judge instance's micro-batcher, started on first use."""
        if id(judge) not in self._batchers:
            task = next((t for t, js in self.judges.items() if any(j is judge for j in js.values())), "?")
            batcher: MicroBatcher[JudgeItem, Score] = MicroBatcher(
                judge.score_batch, judge.batch_size, judge.batch_max_wait_s, f"judge-{judge.name}"
            )
            self._batchers[id(judge)] = (task, judge, batcher)
        return self._batchers[id(judge)][2]

    def batching(self) -> dict[str, dict[str, Any]]:
        """Per ``task/judge``: the judge's description (model, device) with its batcher's settings
        and stats."""
        return {
            f"{task}/{judge.name}": {**judge.describe(), **b.describe()}
            for task, judge, b in self._batchers.values()
        }

    async def aclose(self) -> None:
        """Stop the pool and the batchers, and record in the manifest what each batcher did."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if not self._batchers:
            return
        info = self.batching()
        for _, _, batcher in self._batchers.values():
            await batcher.aclose()
        if self.store is not None:
            self.store.update_manifest(judge_batching=info)
