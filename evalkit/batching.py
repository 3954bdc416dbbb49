"""The one micro-batcher: concurrent callers, one blocking batched call.

Why: three places want it. Model-based judges (ASR, MOS): in the process pool each worker would
load its own copy of the model and call it at batch 1; the ``hf:`` adapter: one padded
``generate`` for requests that share their parameters; the ``vllm:`` adapter: one ``LLM.chat``
for everything that arrived meanwhile. ``MicroBatcher`` queues ``submit``-ted items; it takes up
to ``max_batch`` of them (no cap: ``None``), or fewer once the oldest has waited ``max_wait_s``,
and runs them in one call on its own worker thread. One thread per batcher means one model
instance, loaded once, used by one caller at a time; the model libraries (torch, CTranslate2,
onnxruntime, vLLM) release the GIL, so the event loop keeps working. While a batch runs, new items
queue up, so under load batches fill without waiting.

Failures are per item: the batched call returns an exception instance for an item it cannot
serve, which is raised to that item's caller alone. If the whole call raises (a bug, an
out-of-memory error, an input that crashes the model), every item of that batch is run again
alone, so one poisonous item costs only its own result; the batch failure is counted in the
batcher's stats (``BatchStats``, recorded in the manifest).

Device: ``judge_device`` picks cuda when the judge's runtime sees a GPU, else cpu;
``EVALKIT_JUDGE_DEVICE=cpu`` keeps judges off a GPU that the model under test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from evalkit.errors import EvalkitError

JUDGE_DEVICE_ENV = "EVALKIT_JUDGE_DEVICE"
#: batch failures whose message the stats keep (the count is always exact)
KEPT_FAILURES = 5
#: how long a partial batch waits for company unless the owner says otherwise (s)
BATCH_WAIT_S = 0.03

T = TypeVar("T")
R = TypeVar("R")


def judge_device(runtime: Literal["torch", "ctranslate2"], wanted: str | None = None) -> str:
    """``cuda`` if ``wanted`` (a judge's ``device`` option; default ``EVALKIT_JUDGE_DEVICE``) says
    so, or it is unset/``auto`` and the runtime that runs the judge's model sees a GPU; else
    ``cpu``. Asked per runtime because a machine can have a CUDA build of one (CTranslate2 wheels
    are CUDA builds) and a CPU build of the other."""
    if wanted is None:
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
class _Pending(Generic[T, R]):
    item: T
    key: Hashable
    future: asyncio.Future[R]
    arrived: float


@dataclass
class _LoopState(Generic[T, R]):
    """One event loop's queue: ``asyncio.run`` called twice on one adapter (as scripts and tests
    do) must not find futures of a closed loop."""

    pending: list[_Pending[T, R]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    drainer: asyncio.Task[None] | None = None


@dataclass
class BatchStats:
    """What a batcher did: recorded in the run manifest (``judge_batching``, model adapters)."""

    batches: int = 0
    items: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    batch_failures: int = 0
    failure_messages: list[str] = field(default_factory=list)

    def record(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.items += size
        self.sizes[size] += 1
        self.seconds += seconds

    def record_failure(self, exc: BaseException) -> None:
        self.batch_failures += 1
        if len(self.failure_messages) < KEPT_FAILURES:
            self.failure_messages.append(f"{type(exc).__name__}: {exc}")

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


class MicroBatcher(Generic[T, R]):
    """Gathers concurrent ``submit`` calls into batches for ``run`` (see the module docstring).

    ``run`` is a blocking function called on the batcher's one worker thread with a list of items;
    it returns one result per item, in order, where an exception instance is that item's failure
    (raised to its caller alone). ``max_batch=None`` means no cap (an engine that schedules inside
    one call, as vLLM's). Only items with equal ``key`` share a batch (e.g. one ``generate`` call
    has one set of sampling parameters). ``run_in_worker`` lets the owner run other calls (loading
    the model, shutting it down) on the same thread, for libraries with thread-local state.
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[R | BaseException]],
        max_batch: int | None = None,
        max_wait_s: float = BATCH_WAIT_S,
        name: str = "batch",
    ):
        self._run = run
        self.max_batch = None if max_batch is None else max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.name = name
        self.stats = BatchStats()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState[T, R]] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def submit(self, item: T, key: Hashable = None) -> R:
        """The item's result, once the batch it joined has run."""
        loop = asyncio.get_running_loop()
        state = self._states.setdefault(loop, _LoopState())
        future: asyncio.Future[R] = loop.create_future()
        state.pending.append(_Pending(item, key, future, loop.time()))
        state.wakeup.set()
        if state.drainer is None:
            state.drainer = loop.create_task(self._drain(loop, state), name=f"batcher-{self.name}")
        return await future

    async def run_in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the batcher's worker thread (started on first use)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"evalkit-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _drain(self, loop: asyncio.AbstractEventLoop, state: _LoopState[T, R]) -> None:
        """Run batches until nothing waits; whatever stops it (``aclose``, a bug) fails every
        waiting caller, so nobody waits forever."""
        batch: list[_Pending[T, R]] = []
        try:
            while self._prune(state):
                await self._wait_for_company(loop, state)
                batch = self._take(state)
                if batch:
                    results = await self.run_in_worker(self._run_batch, [p.item for p in batch])
                    _deliver(batch, results)
                batch = []
        except BaseException as exc:
            failure = (
                exc if isinstance(exc, Exception) else RuntimeError(f"the {self.name} batcher was closed")
            )
            for p in [*batch, *state.pending]:
                if not p.future.done():
                    p.future.set_exception(failure)
            state.pending.clear()
            raise
        finally:
            state.drainer = None
            if not state.pending and self._states.get(loop) is state:
                del self._states[loop]

    @staticmethod
    def _prune(state: _LoopState[T, R]) -> bool:
        """Drop items whose callers gave up; whether any item still waits."""
        state.pending = [p for p in state.pending if not p.future.done()]
        return bool(state.pending)

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop, state: _LoopState[T, R]) -> None:
        """Until a full batch waits, or the oldest item has waited ``max_wait_s``."""
        while self.max_batch is None or len(state.pending) < self.max_batch:
            remaining = state.pending[0].arrived + self.max_wait_s - loop.time()
            if remaining <= 0:
                return
            state.wakeup.clear()
            try:
                await asyncio.wait_for(state.wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self, state: _LoopState[T, R]) -> list[_Pending[T, R]]:
        """Up to ``max_batch`` live items sharing the oldest item's key, in arrival order."""
        if not self._prune(state):
            return []
        key = state.pending[0].key
        batch = [p for p in state.pending if p.key == key][: self.max_batch]
        taken = {id(p) for p in batch}
        state.pending = [p for p in state.pending if id(p) not in taken]
        return batch

    def _run_batch(self, items: list[T]) -> list[R | BaseException]:
        """One batch on the worker thread. A batch that raises is counted in the stats and run
        again item by item, so one poisonous item costs only its own result."""
        started = time.perf_counter()
        try:
            results = self._run(items)
            if len(results) != len(items):
                raise RuntimeError(f"a batch of {len(items)} returned {len(results)} results")
        except Exception as exc:  # recorded; each item then gets its own verdict
            self.stats.record_failure(exc)
            results = [exc] if len(items) == 1 else [self._run_alone(item) for item in items]
        self.stats.record(len(items), time.perf_counter() - started)
        return results

    def _run_alone(self, item: T) -> R | BaseException:
        try:
            (result,) = self._run([item])
        except Exception as exc:  # this item's failure, handed to its caller
            return exc
        return result

    def describe(self) -> dict[str, Any]:
        """The batcher's settings and stats (the manifest records them)."""
        return {"batch_size": self.max_batch, "max_wait_s": self.max_wait_s, **self.stats.as_dict()}

    async def aclose(self) -> None:
        """Stop collecting (waiting callers get an error) and release the worker thread; the
        batcher can be used again afterwards (it starts a new thread)."""
        for state in list(self._states.values()):
            task = state.drainer
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):  # the cancellation asked for above
                    await task
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _deliver(batch: list[_Pending[T, R]], results: list[R | BaseException]) -> None:
    """Each caller's result, or its own failure; callers that gave up are skipped."""
    for p, result in zip(batch, results, strict=True):
        if p.future.done():
            continue
        if isinstance(result, BaseException):
            p.future.set_exception(result)
        else:
            p.future.set_result(result)
