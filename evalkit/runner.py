"""The evaluation pipeline: samples -> requests -> model (cached, retried, bounded) -> judges ->
run directory, all streamed.

Shape: ``concurrency`` worker coroutines pull samples from the tasks' iterators (nothing holds the
whole dataset); each worker walks one sample's conversation turn by turn (a later turn needs the
model's earlier replies), then hands the finished sample to the judges as a background task so the
next generation starts at once. This module keeps the lifecycle (manifest, resume, workers,
session end); the turn loop is ``evalkit.turn_loop``, judging ``evalkit.judging``, and every model
call, of the model under test or of a judge, goes through one ``evalkit.service.ModelService``
(cache, one concurrency bound per endpoint shared by all roles, retries, usage per role). Every
response and score is appended to the run directory the moment it exists; ``--resume`` reads them
back and repeats nothing finished.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.cache import ResponseCache
from evalkit.clips import DIGEST_INDEX, DIGESTS
from evalkit.confine import PathEscapeError
from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge, check_judges_unchanged, judges_manifest
from evalkit.judging import JudgeExecutor
from evalkit.manifest import (
    git_revision,
    hardware,
    now_iso,
    package_versions,
    redact_command,
)
from evalkit.models.base import ModelAdapter, adapter_class, load_model
from evalkit.models.replica_pool import ReplicaPool
from evalkit.own_process import freeze_live_objects
from evalkit.paths import cache_dir, response_cache_path
from evalkit.progress import RunProgress
from evalkit.records import ModelOutput, Sample, TurnInput
from evalkit.service import ModelService, ServiceSettings
from evalkit.sharding import parse_shard
from evalkit.store import RunStore
from evalkit.tasks.base import Task, resolve_tasks
from evalkit.turn_loop import CliGeneration, TurnLoop
from evalkit.warmup import finish_warm, warm_finish


@dataclass
class RunConfig:
    """Everything that defines a run; stored in the manifest and reloaded by ``--resume``."""

    model: str
    tasks: str
    limit: int | None = None
    concurrency: int = 8
    seed: int = 0
    out_dir: str = "runs"
    max_tokens: int | None = None
    temperature: float | None = None  # --temperature: beats the model card and the task
    top_p: float | None = None  # --top-p: beats the model card and the task
    use_cache: bool = True
    cache_path: str | None = None
    max_attempts: int = 5
    judge_workers: int = 2
    model_options: dict[str, Any] = field(default_factory=dict)
    shard: str | None = None  # "I/N": this process runs shard I (1-based) of N; `evalkit merge` joins them
    executor: str = "local"  # "local" or "ray" (model replicas as Ray actors)
    replicas: int | None = None  # replicas for the ray executor (None: one per GPU, or 2 on CPU)
    allow_paths: list[str] = field(default_factory=list)  # --allow-path: folders samples may also name
    timeout: float | None = None  # --timeout: whole-attempt deadline (s); None: the adapter's (card's)
    request_budget: float | None = None  # --request-budget: seconds per request across all its retries
    model_revision: str | None = None  # --model-revision: pins the model, so the cache serves other runs
    name: str | None = None  # --name: display name recorded as manifest["name"] (never in an identity)

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> RunConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class ResumeState:
    """What a run directory already holds: finished turns and finished scores."""

    def __init__(self, store: RunStore | None):
        self.outputs: dict[tuple[str, str], dict[int, ModelOutput]] = defaultdict(dict)
        #: user turns made at run time (a simulator's), by turn: reused, never asked again
        self.inputs: dict[tuple[str, str], dict[int, TurnInput]] = defaultdict(dict)
        self.scored: set[tuple[str, str, str]] = set()
        #: samples already in samples.jsonl (each is written once)
        self.sampled: set[tuple[str, str]] = set()
        #: the resumed run directory; None for a run this session creates
        self.store = store
        if store is None:
            return
        self.sampled = {(rec.task, rec.sample.id) for rec in store.iter_samples()}
        for rec in store.iter_latest_responses():
            if rec.output.ok:
                self.outputs[(rec.task, rec.sample_id)][rec.turn] = rec.output
            if rec.input.audio_path:  # consulted only for tasks whose user turns are live
                self.inputs[(rec.task, rec.sample_id)][rec.turn] = rec.input
        for rec in store.iter_scores():
            if rec.score.error is None:
                self.scored.add((rec.task, rec.sample_id, rec.score.judge))

    def finished(self, task: Task, sample: Sample, n_turns: int) -> bool:
        done = self.outputs.get((task.name, sample.id), {})
        return len(done) >= n_turns and all((task.name, sample.id, j) in self.scored for j in task.judges)


class Runner:
    def __init__(
        self,
        config: RunConfig,
        store: RunStore,
        adapter: ModelAdapter,
        tasks: list[Task],
        cache: ResponseCache | None,
        resume: ResumeState,
        judges: dict[str, dict[str, Judge]],
        progress: RunProgress | None = None,
    ):
        self.config = config
        self.store = store
        self.tasks = tasks
        self.resume = resume
        manifest = store.read_manifest()
        self.run_id = str(manifest.get("run_id", store.run_id))
        #: every model call of the run, any role (``evalkit.service``): cache scope, endpoint
        #: bounds, retries and deadlines, usage, secrets scrubbed, calls/<role>.jsonl
        self.service = ModelService(
            settings=ServiceSettings.of(config),
            cache=cache,
            run_id=self.run_id,
            run_scope=str(manifest.get("run_uid") or self.run_id),  # a run older than run_uid: its name
            run_dir=store.root,
            secret_env=(config.model_options.get("api_key_env", "OPENAI_API_KEY"),),
            new_run=resume.store is None,
        )
        self.target = self.service.register("target", adapter, revision=config.model_revision)
        #: the turn loop: requests, answers, responses.jsonl (``evalkit.turn_loop``)
        self.turns = TurnLoop(
            self.service, self.target, store, resume.outputs, CliGeneration.of(config), resume.inputs
        )
        self.judge_slots = asyncio.Semaphore(max(1, config.concurrency * 2))
        #: task -> judge name -> judge, built (names and options checked) before the model loaded
        self.judges = judges
        #: inline, process pool or batched, as each judge declares (``evalkit.judging``)
        self.judge_executor = JudgeExecutor(self.judges, config.judge_workers, store)
        for task_judges in self.judges.values():  # judge model roles, resolved once per run
            for judge in task_judges.values():
                judge.bind(self.service)
        self._judging: set[asyncio.Task] = set()
        self.progress = progress or RunProgress(enabled=False)
        self.turns.on_turn = self.progress.turn
        #: failed samples and finished samples; the model calls' counts are the service's
        self.counters = {"errors": 0, "samples": 0}
        #: the end's imports, loading while requests are in flight (``evalkit.warmup``)
        self.warmup: threading.Thread | None = None

    # -- requests ---------------------------------------------------------------------------------
    def generation_manifest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every task's effective generation settings and where each came from."""
        for task in self.tasks:
            self.turns.params_for(task)
        return dict(self.turns.generation)

    def session_counters(self) -> dict[str, Any]:
        """The session's numbers (manifest ``last_session``): the model under test's requests,
        cache hits and retries, failed and finished samples, every role's usage (``calls``) and
        each endpoint's bound and peak in flight (``endpoints``)."""
        target = self.service.role_usage("target")
        return {
            "requests": target.requests,
            "cache_hits": target.cache_hits,
            "errors": self.counters["errors"],
            "retries": target.retries,
            "samples": self.counters["samples"],
            "calls": self.service.usage(),
            "endpoints": self.service.endpoints(),
        }

    # -- samples ----------------------------------------------------------------------------------
    async def process_sample(self, task: Task, index: int, sample: Sample) -> None:
        """Answer the sample's turns (``evalkit.turn_loop``), then hand it to the judges as a
        background job so the worker's next generation starts at once."""
        answered = await self.turns.answer_sample(task, index, sample)
        self.progress.answered(task.name)
        sample = answered.judged_sample(self.store.root)  # live user turns as they were said
        if answered.failure is not None:
            self.counters["errors"] += 1
            asked = (answered.failed_turn or 0) + 1  # the turns after the failed one are never asked
            self.progress.drop_turns(task.name, len(task.answer_turns(sample)) - asked)
        outputs, failure, failed_turn = answered.outputs, answered.failure, answered.failed_turn
        await self.judge_slots.acquire()
        job = asyncio.create_task(self._judge_sample(task, index, sample, outputs, failure, failed_turn))
        self._judging.add(job)
        job.add_done_callback(self._judging.discard)

    async def _judge_sample(self, task, index, sample, outputs, failure, failed_turn) -> None:
        """Score a finished sample with the judges it still lacks (``evalkit.judging``), then count
        it; holds one of ``judge_slots`` (taken by ``process_sample``) until done."""
        try:
            names = [n for n in task.judges if (task.name, sample.id, n) not in self.resume.scored]
            any_error = await self.judge_executor.judge_sample(
                task.name, index, sample, outputs, names, failure, failed_turn
            )
            self.counters["samples"] += 1
            self.progress.advance(task.name, error=any_error)
        finally:
            self.judge_slots.release()

    # -- the run ----------------------------------------------------------------------------------
    def _work(self) -> Iterator[tuple[Task, int, Sample]]:
        shard = parse_shard(self.config.shard)
        for task in self.tasks:
            for index, sample in enumerate(task.samples(self.config.limit)):
                if shard is not None and not shard.owns(index):
                    continue  # another shard's sample; its index is still the task-wide one
                n_turns = len(task.answer_turns(sample))
                if self.resume.finished(task, sample, n_turns):
                    self.progress.advance(task.name, resumed=True, turns=n_turns)
                    continue
                if (task.name, sample.id) not in self.resume.sampled:
                    self._record_sample(task, index, sample)
                yield task, index, sample
        # every sample is in flight: the loop mostly waits for the last answers from here on, so
        # the end's imports load now (``evalkit.warmup``)
        self.warmup = warm_finish()

    def _record_sample(self, task: Task, index: int, sample: Sample) -> None:
        """samples.jsonl gets the sample as it starts, its audio confined to the data root (a path
        that escapes it is recorded as given and never read, not even to hash it)."""
        try:
            self.store.append_sample(task.name, index, self.turns.confined(task, sample))
        except PathEscapeError:
            self.store.append_sample(task.name, index, sample, read_audio=False)

    async def run(self) -> None:
        work = self._work()

        async def worker() -> None:
            for task, index, sample in work:
                await self.process_sample(task, index, sample)

        self.progress.phase("generating")
        for task in self.tasks:  # totals read every sample once more: only when they are shown
            totals = self._totals(task) if self.progress.enabled else (None, None)
            self.progress.add_task(task.name, *totals)
        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, self.config.concurrency))]
        try:
            await asyncio.gather(*workers)
            self.progress.phase("judging", "every answer is in; the last samples' judges run")
            while self._judging:
                await asyncio.gather(*list(self._judging))
        except BaseException:
            await _cancel_all([*workers, *self._judging])  # none may write after the streams close
            raise
        finally:
            await self.judge_executor.aclose()

    def _totals(self, task: Task) -> tuple[int, int]:
        """This process's samples of ``task`` and the turns they answer (the progress row of a
        multi-turn task counts turns: one sample of 20 turns is too coarse a step for an ETA)."""
        shard = parse_shard(self.config.shard)
        owned = [
            sample
            for index, sample in enumerate(task.samples(self.config.limit))
            if shard is None or shard.owns(index)
        ]
        return len(owned), sum(len(task.answer_turns(sample)) for sample in owned)


async def _cancel_all(tasks: list[asyncio.Future]) -> None:
    """Cancel ``tasks`` and wait until every one has stopped (their own errors are theirs: the
    failure being raised is the one that stopped the run)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _check_capabilities(adapter: ModelAdapter, tasks: list[Task]) -> None:
    caps = asdict(adapter.capabilities)
    for task in tasks:
        missing = [c for c in task.requires if not caps.get(c, False)]
        if missing:
            raise EvalkitError(
                f"task {task.name!r} needs {', '.join(missing)} but model {adapter.spec!r} lacks it; "
                "choose another model or task"
            )


def open_cache(config: RunConfig) -> ResponseCache | None:
    if not config.use_cache:
        return None
    return ResponseCache(Path(config.cache_path) if config.cache_path else response_cache_path())


async def load_adapter(config: RunConfig) -> ModelAdapter:
    """The run's model: built here (``local``), or as Ray actors behind a driver-side pool
    (``ray``, see ``evalkit.models.ray_replicas``; Ray is imported only then)."""
    if config.executor == "ray":
        from evalkit.models.ray_replicas import load_on_ray

        return await load_on_ray(config.model, config.model_options, config.replicas)
    if config.executor != "local":
        raise EvalkitError(f"unknown executor {config.executor!r}; use local or ray")
    if config.replicas is not None:
        raise EvalkitError("--replicas needs --executor ray (for several servers, repeat --base-url)")
    return load_model(config.model, **config.model_options)


async def evaluate_async(
    config: RunConfig,
    resume_dir: Path | None = None,
    argv: list[str] | None = None,
    show_progress: bool = True,
    held: list[RunStore] | None = None,
) -> RunStore:
    """Run (or resume) an evaluation; returns the finished run directory. The session holds the
    directory's lock (``RunStore.acquire_lock``) from before its first read to after its last
    write: a second writer, or a resume of a live run, is refused naming the holder's pid.
    ``held`` (the caller's list) receives the run's store as soon as it exists, so a caller that
    is interrupted can still name the directory to resume."""
    held = [] if held is None else held
    try:
        with RunProgress(enabled=show_progress) as progress:
            return await _evaluate_session(config, resume_dir, argv, progress, held)
    finally:
        for store in held:
            store.release_lock()


async def _evaluate_session(
    config: RunConfig,
    resume_dir: Path | None,
    argv: list[str] | None,
    progress: RunProgress,
    held: list[RunStore],
) -> RunStore:
    """``evaluate_async``'s body; every store it locks goes into ``held`` for the caller to release."""
    parse_shard(config.shard)  # a bad --shard is a one-line error before any model loads
    if resume_dir is not None:
        store = RunStore.open_existing(resume_dir)
        store.acquire_lock()
        held.append(store)
        from evalkit.finalize import check_writable

        check_writable(store, store.manifest())  # a newer evalkit's run is never resumed by this one
        manifest = store.read_manifest()
        config = RunConfig.from_manifest({**manifest["config"], "concurrency": config.concurrency})
    # names and data first: a wrong name, path or option is one line in a second, never after a
    # model load of minutes
    adapter_class(config.model)
    tasks = resolve_tasks(config.tasks, allow_paths=config.allow_paths)
    progress.phase("reading data", "and rendering audio")
    DIGESTS.use_index(cache_dir() / DIGEST_INDEX)  # a clip hashed by an earlier run is not read again
    task_info = [t.describe() for t in tasks]  # reads every sample: bad data stops here
    DIGESTS.flush_index()
    judges = {t.name: t.make_judges() for t in tasks}  # a judge's name or option: before the model
    progress.phase("loading model", config.model)
    adapter = await load_adapter(config)
    try:
        _check_capabilities(adapter, tasks)
        await adapter.check()
        if resume_dir is not None:  # the judges must score as they did when the run started
            check_judges_unchanged(resume_dir, manifest.get("judges", {}), judges_manifest(judges))
    except BaseException:
        await adapter.aclose()
        raise
    if resume_dir is None:
        store = RunStore.create(Path(config.out_dir), adapter.spec, [t.name for t in tasks], config.tasks)
        store.acquire_lock()
        held.append(store)
        manifest = {
            "run_id": store.run_id,
            # the run's own, whatever its name: two runs of one config started in the same second
            # in two folders get the same name (``RunStore.create``), never the same cache scope
            "run_uid": uuid.uuid4().hex,
            "name": config.name,
            "command": redact_command(argv or sys.argv),
            "config": asdict(config),
            "model": adapter.describe(),
            "tasks": task_info,
            "versions": package_versions(),
            "git_revision": git_revision(),
            "hardware": hardware(),
            "seed": config.seed,
            "started": now_iso(),
            "status": "running",
        }
        store.write_manifest(manifest)
        resume = ResumeState(None)
    else:
        for old, new in zip(manifest["tasks"], task_info, strict=False):
            old_fp, new_fp = (
                old.get("dataset", {}).get("fingerprint"),
                new.get("dataset", {}).get("fingerprint"),
            )
            if old_fp and new_fp and old_fp != new_fp:
                raise EvalkitError(
                    f"{store.root}: dataset of task {new['name']!r} changed since the run started; "
                    "start a new run"
                )
        resume = ResumeState(store)
        manifest = store.update_manifest(status="running", resumed=[*manifest.get("resumed", []), now_iso()])
    cache = open_cache(config)
    progress.phase("loading judges")
    runner = Runner(config, store, adapter, tasks, cache, resume, judges, progress=progress)
    store.update_manifest(generation=runner.generation_manifest(), judges=judges_manifest(runner.judges))
    store.open_streams()
    started = time.monotonic()
    status = "interrupted"
    disk_errors: list[OSError] = []
    try:
        await runner.run()
        status = "completed"
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        status = "failed"
        disk_errors.append(exc)
    finally:
        try:
            _end_session(store, runner, adapter, cache, status, time.monotonic() - started, disk_errors)
        finally:
            try:
                await runner.service.aclose()  # the judge models' clients (the target's is below)
            finally:
                await adapter.aclose()
                if cache is not None:
                    cache.close()
    if disk_errors:
        raise disk_full_error(store, disk_errors)
    progress.phase("finalizing", "summary and report")
    finish_warm(runner.warmup)
    from evalkit.finalize import finalize  # here: ``evalkit.warmup`` loaded it during the requests

    freeze_live_objects()  # what the requests left lives to the end: finalize's collections skip it

    try:
        finalize(store)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise disk_full_error(store, [exc], finished=True) from None
    return store


#: errors that mean "no room to write": the run stops as ``failed``, resumable once space is back
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _end_session(
    store: RunStore,
    runner: Runner,
    adapter: ModelAdapter,
    cache: ResponseCache | None,
    status: str,
    elapsed: float,
    disk_errors: list[OSError],
) -> None:
    """Close the streams and record the session in the manifest. On a full disk either step may
    fail too: that failure joins ``disk_errors`` (the run is reported failed, with all of them)
    instead of hiding the first; any other error propagates."""
    steps = (
        store.close_streams,
        runner.service.close_logs,
        DIGESTS.flush_index,
        lambda: store.update_manifest(
            status=status,
            ended=now_iso(),
            last_session={
                "seconds": round(elapsed, 3),
                **runner.session_counters(),
                "samples_per_s": round(runner.counters["samples"] / elapsed, 3) if elapsed else None,
                **({"replicas": adapter.session_stats()} if isinstance(adapter, ReplicaPool) else {}),
            },
            cache=cache.stats() if cache is not None else None,
            model_roles=runner.service.describe(),
        ),
    )
    for step in steps:
        try:
            step()
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            disk_errors.append(exc)


def disk_full_error(store: RunStore, errors: list[OSError], finished: bool = False) -> EvalkitError:
    """The one line a full disk gets: what failed, that finished records are kept, how to go on
    (``finished``: every answer is in, only summary and report are missing)."""
    first = errors[0]
    where = f" writing {first.filename}" if first.filename else ""
    if finished:
        return EvalkitError(
            f"{store.root}: no space left on the device{where} ({first.strerror or first}); every "
            f"record is kept but summary.json/report.html are not written: free space, then "
            f"`evalkit score --finalize-only {store.root}`"
        )
    manifest = (
        ""
        if len(errors) == 1
        else "; the manifest could not be updated either (its status may still say running)"
    )
    return EvalkitError(
        f"{store.root}: no space left on the device{where} ({first.strerror or first}); the run stopped "
        f"as failed, every finished record is kept{manifest}: free space, then "
        f"`evalkit run --resume {store.root}`"
    )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run: the manifest says ``interrupted`` and ``--resume`` finishes it.
    ``run_dir`` is that directory (None: stopped before it was made)."""

    def __init__(self, run_dir: Path | None = None):
        super().__init__(str(run_dir) if run_dir else "")
        self.run_dir = run_dir


class Terminated(Interrupted):
    """SIGTERM stopped the run, handled exactly like Ctrl-C (the CLI exits 143, 128 + SIGTERM)."""


def evaluate(
    config: RunConfig,
    resume_dir: Path | None = None,
    argv: list[str] | None = None,
    show_progress: bool = True,
) -> RunStore:
    held: list[RunStore] = []
    try:
        store = asyncio.run(_terminable(evaluate_async(config, resume_dir, argv, show_progress, held)))
    except KeyboardInterrupt:
        raise Interrupted(held[0].root if held else None) from None
    if store is None:
        raise Terminated(held[0].root if held else None)
    return store


async def _terminable(work: Coroutine[Any, Any, RunStore]) -> RunStore | None:
    """Await ``work`` with SIGTERM cancelling it as asyncio's own Ctrl-C handling does (so its
    ``finally`` blocks write the status); None when SIGTERM stopped it. Outside the main thread
    (no signal handlers there) ``work`` simply runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated: list[bool] = []

    def on_sigterm() -> None:
        terminated.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):
        return await work
    try:
        return await work
    except asyncio.CancelledError:
        if not terminated:
            raise
        return None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
