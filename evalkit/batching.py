"""Micro-batching of model-based judges (ASR, MOS) inside the runner's process.

Why: a model-based judge in the process pool makes one model call per sample, and every pool
worker loads its own copy of the model. On a GPU that wastes the device (batch 1, several copies
of the weights); on a CPU it repeats the load per worker. A judge that declares ``batch_size > 1``
and implements ``Judge.score_batch`` is instead fed by one ``MicroBatcher``: samples that finish
generation are queued; the batcher takes up to ``batch_size`` of them, or fewer once the oldest has
waited ``max_wait_s``, and scores them in one ``score_batch`` call on its own worker thread. One
thread per batcher means one model instance, loaded once, used by one caller at a time; the model
libraries (torch, CTranslate2, onnxruntime) release the GIL, so the event loop keeps generating.
While a batch runs, new samples queue up, so under load batches fill without waiting.

Failures are data, per item: ``score_batch`` returns a judge error for an item it cannot score.
If the whole call raises (a bug, an out-of-memory error, a clip that crashes the model), every
item of that batch is scored again alone, so one poisonous item costs only its own score; the
batch failure is counted in the batcher's stats.

Device: ``judge_device`` picks cuda when the judge's runtime sees a GPU, else cpu;
``EVALKIT_JUDGE_DEVICE=cpu`` keeps judges off a GPU that the model under test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge, JudgeItem, judge_error
from evalkit.records import ModelOutput, Sample, Score

JUDGE_DEVICE_ENV = "EVALKIT_JUDGE_DEVICE"
#: batch failures whose message the stats keep (the count is always exact)
KEPT_FAILURES = 5


def judge_device(runtime: Literal["torch", "ctranslate2"]) -> str:
    """``cuda`` if ``EVALKIT_JUDGE_DEVICE`` says so, or it is unset/``auto`` and the runtime that
    runs the judge's model sees a GPU; else ``cpu``. Asked per runtime because a machine can have
    a CUDA build of one (CTranslate2 wheels are CUDA builds) and a CPU build of the other."""
    wanted = os.environ.get(JUDGE_DEVICE_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "cpu", "cuda"):
        raise EvalkitError(f"{JUDGE_DEVICE_ENV}={wanted!r}: expected auto, cpu or cuda")
    if wanted != "auto":
        return wanted
    if runtime == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


@dataclass
class _Pending:
    item: JudgeItem
    future: asyncio.Future[Score]
    arrived: float


@dataclass
class BatchStats:
    """What a batcher did: recorded in the run manifest under ``judge_batching``."""

    batches: int = 0
    items: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    batch_failures: int = 0
    failure_messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "max_batch": max(self.sizes, default=0),
            "mean_batch": round(self.items / self.batches, 3) if self.batches else None,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            "seconds": round(self.seconds, 3),
            "batch_failures": self.batch_failures,
            "batch_failure_messages": self.failure_messages,
        }


class MicroBatcher:
    """Collects ``submit``-ted samples into batches for one judge (see the module docstring).

    Must be used from one event loop; ``aclose`` stops it and its thread."""

    def __init__(self, judge: Judge, batch_size: int | None = None, max_wait_s: float | None = None):
        self.judge = judge
        self.batch_size = max(1, batch_size if batch_size is not None else judge.batch_size)
        self.max_wait_s = max(0.0, max_wait_s if max_wait_s is not None else judge.batch_max_wait_s)
        self.stats = BatchStats()
        self._pending: deque[_Pending] = deque()
        self._in_flight: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"judge-{judge.name}")

    async def submit(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """The sample's score, once the batch it joined has been scored."""
        loop = asyncio.get_running_loop()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._collect(), name=f"batcher-{self.judge.name}")
        elif self._loop_task.done():  # it died: say why instead of waiting forever
            raise RuntimeError(f"the {self.judge.name} batcher stopped") from self._loop_task.exception()
        pending = _Pending((sample, outputs), loop.create_future(), loop.time())
        self._pending.append(pending)
        self._wakeup.set()
        return await pending.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                # wait for a full batch, at most max_wait_s after the oldest waiting item arrived
                while len(self._pending) < self.batch_size:
                    remaining = self._pending[0].arrived + self.max_wait_s - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
                size = min(self.batch_size, len(self._pending))
                self._in_flight = [self._pending.popleft() for _ in range(size)]
                items = [p.item for p in self._in_flight]
                scores = await loop.run_in_executor(self._executor, self._score, items)
                for pending, score in zip(self._in_flight, scores, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(score)
                self._in_flight = []
        except BaseException as exc:  # cancelled (aclose) or a bug here: nobody may wait forever
            waiting = [*self._in_flight, *self._pending]
            self._in_flight = []
            self._pending.clear()
            for pending in waiting:
                if not pending.future.done():
                    pending.future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError("the batcher was closed")
                    )
            raise

    def _score(self, items: list[JudgeItem]) -> list[Score]:
        """One batch on the worker thread; a batch that raises is retried item by item."""
        started = time.perf_counter()
        try:
            scores = self.judge.score_batch(items)
            if len(scores) != len(items):
                raise RuntimeError(f"score_batch returned {len(scores)} scores for {len(items)} items")
        except Exception as exc:  # recorded in the stats; each item then gets its own verdict
            self.stats.batch_failures += 1
            if len(self.stats.failure_messages) < KEPT_FAILURES:
                self.stats.failure_messages.append(f"{type(exc).__name__}: {exc}")
            scores = [self._score_alone(item) for item in items]
        self.stats.seconds += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.sizes[len(items)] += 1
        return scores

    def _score_alone(self, item: JudgeItem) -> Score:
        try:
            (score,) = self.judge.score_batch([item])
        except Exception as exc:  # this item's failure, recorded as its score
            return judge_error(self.judge.name, exc)
        return score

    def describe(self) -> dict[str, Any]:
        """The judge's own description (model, device) with the batcher's settings and stats."""
        return {
            **self.judge.describe(),
            "batch_size": self.batch_size,
            "max_wait_s": self.max_wait_s,
            **self.stats.as_dict(),
        }

    async def aclose(self) -> None:
        """Stop collecting (waiting submitters get an error) and release the worker thread."""
        task = self._loop_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation asked for above
                await task
        elif task is not None and not task.cancelled() and task.exception() is not None:
            # a bug in _collect: already delivered to every waiting submitter as its judge error
            self.stats.failure_messages.append(f"batcher stopped: {task.exception()!r}")
        self._executor.shutdown(wait=True)
