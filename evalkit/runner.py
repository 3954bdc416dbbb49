"""The evaluation pipeline: samples -> requests -> model (cached, retried, bounded) -> judges ->
run directory, all streamed.

Shape: ``concurrency`` worker coroutines pull samples from the tasks' iterators (nothing holds the
whole dataset); each worker walks one sample's conversation turn by turn (a later turn needs the
model's earlier replies), then hands the finished sample to the judges as a background task so the
next generation starts at once. Model calls share one semaphore per adapter (its endpoint),
judges another; CPU-heavy judges run in a process pool. Every response and score is appended to
the run directory the moment it exists; ``--resume`` reads them back and repeats nothing finished.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import itertools
import multiprocessing
import signal
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.audio import AudioError
from evalkit.batching import MicroBatcher
from evalkit.cache import ResponseCache, cache_scope, request_key, scoped_key
from evalkit.confine import INPUT_PATH_KIND, PathEscapeError
from evalkit.errors import EvalkitError
from evalkit.generation import resolve_generation
from evalkit.judges.base import Judge
from evalkit.manifest import (
    git_revision,
    hardware,
    now_iso,
    package_versions,
    redact_command,
    scrub_output,
    secret_values,
)
from evalkit.models.base import ModelAdapter, load_model
from evalkit.models.replica_pool import ReplicaPool
from evalkit.paths import response_cache_path
from evalkit.progress import RunProgress
from evalkit.records import (
    ErrorInfo,
    GenerationParams,
    ModelOutput,
    ResponseRecord,
    Sample,
    Score,
    ScoreRecord,
    TurnInput,
)
from evalkit.retry import RetryPolicy, call_with_retries
from evalkit.sharding import parse_shard
from evalkit.store import RunStore
from evalkit.summary import summarise_run
from evalkit.tasks.base import Task, resolve_tasks


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

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> RunConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _judge_in_process(judge: Judge, sample_json: str, outputs_json: list[str]) -> str:
    """Process-pool entry point. The judge instance travels pickled (its class is imported in the
    worker by module path, so judges registered anywhere, and judges a task configured, work);
    records travel as JSON (always picklable). Heavy models load lazily inside the worker."""
    sample = Sample.model_validate_json(sample_json)
    outputs = [ModelOutput.model_validate_json(o) for o in outputs_json]
    return judge.score(sample, outputs).model_dump_json()


class ResumeState:
    """What a run directory already holds: finished turns and finished scores."""

    def __init__(self, store: RunStore | None):
        self.outputs: dict[tuple[str, str], dict[int, ModelOutput]] = defaultdict(dict)
        self.scored: set[tuple[str, str, str]] = set()
        if store is None:
            return
        for rec in store.iter_latest_responses():
            if rec.output.ok:
                self.outputs[(rec.task, rec.sample_id)][rec.turn] = rec.output
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
        show_progress: bool = True,
    ):
        self.config = config
        self.store = store
        self.adapter = adapter
        self.tasks = tasks
        self.cache = cache
        self.resume = resume
        self.retry = RetryPolicy(
            max_attempts=config.max_attempts,
            attempt_timeout=config.timeout if config.timeout is not None else adapter.request_timeout,
            budget=config.request_budget,
        )
        self.run_id = str(store.read_manifest().get("run_id", store.run_id))
        #: where cache entries of this run may be reused (``evalkit.cache``: pinned or this run only)
        self.cache_scope = cache_scope(config.model_revision or adapter.pinned_revision, self.run_id)
        #: values never stored: the API key, should a server echo it back
        self.secrets = secret_values([config.model_options.get("api_key_env", "OPENAI_API_KEY")])
        slots = (
            config.concurrency
            if adapter.max_concurrency is None
            else min(config.concurrency, adapter.max_concurrency)
        )
        self.model_slots = asyncio.Semaphore(max(1, slots))
        self.judge_slots = asyncio.Semaphore(max(1, config.concurrency * 2))
        self.judges: dict[str, dict[str, Judge]] = {t.name: t.make_judges() for t in tasks}
        self._pool: ProcessPoolExecutor | None = None
        self._batchers: dict[int, tuple[str, MicroBatcher]] = {}  # id(judge) -> (task, batcher)
        self._params: dict[str, GenerationParams] = {}
        #: per task, each resolved generation setting with its source (manifest["generation"])
        self.generation: dict[str, dict[str, dict[str, Any]]] = {}
        self._judging: set[asyncio.Task] = set()
        self.progress = RunProgress(enabled=show_progress)
        self.counters = {"requests": 0, "cache_hits": 0, "errors": 0, "retries": 0, "samples": 0}

    # -- requests ---------------------------------------------------------------------------------
    def _params_for(self, task: Task) -> GenerationParams:
        """The task's requests' parameters: command line > model card > task > defaults
        (``evalkit.generation``), with the run's seed; computed once per task, sources kept."""
        params = self._params.get(task.name)
        if params is None:
            cli = {
                "max_tokens": self.config.max_tokens,
                "temperature": self.config.temperature,
                "top_p": self.config.top_p,
            }
            card = self.adapter.describe().get("generation_defaults", {})
            params, sources = resolve_generation(task.params, card, cli, self.config.seed)
            self._params[task.name] = params
            self.generation[task.name] = sources
        return params

    def generation_manifest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every task's effective generation settings and where each came from."""
        for task in self.tasks:
            self._params_for(task)
        return dict(self.generation)

    async def _generate(self, request_hash: str, request) -> tuple[ModelOutput, str | bool]:
        """The answer and where it came from: False = asked now, else the run id whose cache entry
        served it (``cache_scope`` decides which entries this run may see)."""
        key = scoped_key(request_hash, self.cache_scope)
        if self.cache is not None:
            entry = self.cache.get_entry(key)
            if entry is not None:
                self.counters["cache_hits"] += 1
                return scrub_output(entry.output, self.secrets), entry.run_id or "(unrecorded run)"

        def count_retry(_exc, _attempt) -> None:
            self.counters["retries"] += 1

        async with self.model_slots:
            self.counters["requests"] += 1
            output = await call_with_retries(lambda: self.adapter.generate(request), self.retry, count_retry)
        output = scrub_output(output, self.secrets)
        if self.cache is not None:
            self.cache.put(key, self.adapter.spec, output, run_id=self.run_id, scope=self.cache_scope)
        return output, False

    async def _answer_turn(self, task: Task, sample: Sample, turn_index: int, history: list[ModelOutput]):
        """One turn: build, hash, generate. Bad input audio and adapter bugs become error records."""
        request_hash = ""
        try:
            request = task.build_request(task.confine_sample(sample), turn_index, history)
            request = request.model_copy(update={"params": self._params_for(task)})
            request_hash = request_key(self.adapter.cache_identity, request)
            output, cached = await self._generate(request_hash, request)
        except AudioError as exc:
            return ModelOutput(error=ErrorInfo(kind="input_audio", message=str(exc))), request_hash, False
        except PathEscapeError as exc:  # never read: evalkit.confine
            return ModelOutput(error=ErrorInfo(kind=INPUT_PATH_KIND, message=str(exc))), request_hash, False
        except EvalkitError as exc:
            return ModelOutput(error=ErrorInfo(kind="input", message=str(exc))), request_hash, False
        except Exception as exc:  # an adapter bug must not sink hours of results: record it loudly
            self._log_internal_error(task, sample, exc)
            message = f"{type(exc).__name__}: {exc} (traceback in errors.log)"
            return ModelOutput(error=ErrorInfo(kind="internal", message=message)), request_hash, False
        return output, request_hash, cached

    def _log_internal_error(self, task: Task, sample: Sample, exc: BaseException) -> None:
        with open(self.store.root / "errors.log", "a", encoding="utf-8") as fh:
            fh.write(f"--- {now_iso()} task={task.name} sample={sample.id}\n")
            fh.write("".join(traceback.format_exception(exc)))

    # -- samples ----------------------------------------------------------------------------------
    async def process_sample(self, task: Task, index: int, sample: Sample) -> None:
        turns = task.answer_turns(sample)
        done = self.resume.outputs.get((task.name, sample.id), {})
        outputs: list[ModelOutput] = []
        failure: ModelOutput | None = None
        failed_turn = -1
        for k, turn_index in enumerate(turns):
            if k in done:
                outputs.append(self.store.with_absolute_audio(done[k]))
                continue
            output, request_hash, cached = await self._answer_turn(task, sample, turn_index, outputs)
            output = self.store.save_output_audio(task.name, sample.id, k, output)
            said = sample.conversation[turn_index]
            self.store.append_response(
                ResponseRecord(
                    task=task.name,
                    sample_id=sample.id,
                    sample_index=index,
                    turn=k,
                    request_hash=request_hash,
                    cached=bool(cached),
                    cached_from=cached or None,
                    output=output,
                    input=TurnInput(
                        text=said.text,
                        transcript=said.transcript,
                        audio_path=said.audio.path if said.audio is not None else None,
                    ),
                )
            )
            if not output.ok:
                self.counters["errors"] += 1
                failure, failed_turn = output, k
                break
            outputs.append(self.store.with_absolute_audio(output))
        await self.judge_slots.acquire()
        job = asyncio.create_task(self._judge_sample(task, index, sample, outputs, failure, failed_turn))
        self._judging.add(job)
        job.add_done_callback(self._judging.discard)

    async def _judge_sample(self, task, index, sample, outputs, failure, failed_turn) -> None:
        try:
            any_error = failure is not None
            for name in task.judges:
                if (task.name, sample.id, name) in self.resume.scored:
                    continue
                if failure is not None:
                    assert failure.error is not None
                    score = Score(
                        judge=name,
                        error=ErrorInfo(
                            kind="model_error",
                            message=f"turn {failed_turn}: [{failure.error.kind}] {failure.error.message}",
                        ),
                    )
                else:
                    score = await self._run_judge(self.judges[task.name][name], sample, outputs)
                    any_error = any_error or score.error is not None
                self.store.append_score(
                    ScoreRecord(
                        task=task.name, sample_id=sample.id, sample_index=index, meta=sample.meta, score=score
                    )
                )
            self.counters["samples"] += 1
            self.progress.advance(task.name, error=any_error)
        finally:
            self.judge_slots.release()

    async def _run_judge(self, judge: Judge, sample: Sample, outputs: list[ModelOutput]) -> Score:
        try:
            if judge.batch_size > 1:  # model-based judges: one in-process model, batched calls
                return await self._batcher(judge).submit(sample, outputs)
            if judge.cpu_heavy:
                if self._pool is None:
                    # spawn, not fork: a forked child inherits torch/OpenMP thread pools the parent
                    # already started (an hf: model, the cascade) and deadlocks in its first op
                    self._pool = ProcessPoolExecutor(
                        max_workers=self.config.judge_workers, mp_context=multiprocessing.get_context("spawn")
                    )
                loop = asyncio.get_running_loop()
                raw = await loop.run_in_executor(
                    self._pool,
                    _judge_in_process,
                    judge,
                    sample.model_dump_json(),
                    [o.model_dump_json() for o in outputs],
                )
                return Score.model_validate_json(raw)
            return await judge.ascore(sample, outputs)
        except Exception as exc:  # a judge failure is data: recorded, counted, shown
            return Score(
                judge=judge.name, error=ErrorInfo(kind="judge_error", message=f"{type(exc).__name__}: {exc}")
            )

    # -- the run ----------------------------------------------------------------------------------
    def _work(self) -> Iterator[tuple[Task, int, Sample]]:
        shard = parse_shard(self.config.shard)
        for task in self.tasks:
            for index, sample in enumerate(task.samples(self.config.limit)):
                if shard is not None and not shard.owns(index):
                    continue  # another shard's sample; its index is still the task-wide one
                if self.resume.finished(task, sample, len(task.answer_turns(sample))):
                    self.progress.advance(task.name)
                    continue
                yield task, index, sample

    async def run(self) -> None:
        work = self._work()

        async def worker() -> None:
            for task, index, sample in work:
                await self.process_sample(task, index, sample)

        with self.progress:
            shard = parse_shard(self.config.shard)
            for task in self.tasks:
                total = task.count(self.config.limit)
                self.progress.add_task(task.name, total if shard is None else shard.size(total))
            workers = [asyncio.ensure_future(worker()) for _ in range(max(1, self.config.concurrency))]
            try:
                await asyncio.gather(*workers)
                while self._judging:
                    await asyncio.gather(*list(self._judging))
            except BaseException:
                await _cancel_all([*workers, *self._judging])  # none may write after the streams close
                raise
            finally:
                if self._pool is not None:
                    self._pool.shutdown(cancel_futures=True)
                await self._close_batchers()

    def _batcher(self, judge: Judge) -> MicroBatcher:
        """The judge instance's micro-batcher, started on first use (evalkit.batching)."""
        if id(judge) not in self._batchers:
            task = next((t for t, js in self.judges.items() if any(j is judge for j in js.values())), "?")
            self._batchers[id(judge)] = (task, MicroBatcher(judge))
        return self._batchers[id(judge)][1]

    async def _close_batchers(self) -> None:
        """Stop the batchers and record in the manifest what each did (batch sizes, device)."""
        if not self._batchers:
            return
        info = {f"{task}/{b.judge.name}": b.describe() for task, b in self._batchers.values()}
        for _, batcher in self._batchers.values():
            await batcher.aclose()
        self.store.update_manifest(judge_batching=info)


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
) -> RunStore:
    """Run (or resume) an evaluation; returns the finished run directory. The session holds the
    directory's lock (``RunStore.acquire_lock``) from before its first read to after its last
    write: a second writer, or a resume of a live run, is refused naming the holder's pid."""
    held: list[RunStore] = []
    try:
        return await _evaluate_session(config, resume_dir, argv, show_progress, held)
    finally:
        for store in held:
            store.release_lock()


async def _evaluate_session(
    config: RunConfig,
    resume_dir: Path | None,
    argv: list[str] | None,
    show_progress: bool,
    held: list[RunStore],
) -> RunStore:
    """``evaluate_async``'s body; every store it locks goes into ``held`` for the caller to release."""
    parse_shard(config.shard)  # a bad --shard is a one-line error before any model loads
    if resume_dir is not None:
        store = RunStore.open_existing(resume_dir)
        store.acquire_lock()
        held.append(store)
        manifest = store.read_manifest()
        config = RunConfig.from_manifest({**manifest["config"], "concurrency": config.concurrency})
    adapter = await load_adapter(config)
    try:
        tasks = resolve_tasks(config.tasks, allow_paths=config.allow_paths)
        _check_capabilities(adapter, tasks)
        await adapter.check()
        task_info = [t.describe() for t in tasks]  # reads every sample: bad data stops here
    except BaseException:
        await adapter.aclose()
        raise
    if resume_dir is None:
        store = RunStore.create(Path(config.out_dir), adapter.spec, [t.name for t in tasks])
        store.acquire_lock()
        held.append(store)
        manifest = {
            "run_id": store.run_id,
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
    runner = Runner(config, store, adapter, tasks, cache, resume, show_progress=show_progress)
    store.update_manifest(generation=runner.generation_manifest())
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
            await adapter.aclose()
            if cache is not None:
                cache.close()
    if disk_errors:
        raise disk_full_error(store, disk_errors)
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
        lambda: store.update_manifest(
            status=status,
            ended=now_iso(),
            last_session={
                "seconds": round(elapsed, 3),
                **runner.counters,
                "samples_per_s": round(runner.counters["samples"] / elapsed, 3) if elapsed else None,
                **({"replicas": adapter.session_stats()} if isinstance(adapter, ReplicaPool) else {}),
            },
            cache=cache.stats() if cache is not None else None,
            answer_sources=answer_sources(store),
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
            f"`evalkit report {store.root}`"
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


def answer_sources(store: RunStore) -> dict[str, Any]:
    """Where the run's answers came from: asked in this run (``fresh``) or served by the cache
    entry of another run (``cached_from``: run id -> answers). Latest record per turn."""
    fresh = 0
    cached: dict[str, int] = defaultdict(int)
    for rec in store.iter_latest_responses():
        if rec.cached:
            cached[rec.cached_from or "(unrecorded run)"] += 1
        else:
            fresh += 1
    return {"fresh": fresh, "cached_from": dict(cached)}


def finalize(store: RunStore) -> dict[str, Any]:
    """Order the streams, write summary.json and report.html. Safe to call again."""
    manifest = store.read_manifest()
    judge_order = [j for t in manifest["tasks"] for j in t["judges"]]
    store.finalize_order([t["name"] for t in manifest["tasks"]], judge_order)
    passes = _score_passes(store, manifest)
    if passes:
        store.rewrite_scores(lambda records: _apply_score_passes(records, passes))
    # streamed off the files: summarising keeps compact numbers, never every record (flat memory)
    summary = summarise_run(
        manifest["tasks"], store.iter_scores(), store.iter_responses(), manifest.get("seed", 0)
    )
    shard = parse_shard(manifest.get("config", {}).get("shard"))
    if shard is not None:  # a shard's numbers are over its own samples only: say so where they are read
        summary["shard"] = {
            "index": shard.index,
            "count": shard.count,
            "note": f"shard {shard} only: metrics cover this shard's samples; join all shards with "
            "`evalkit merge` for the run's results",
        }
    store.write_summary(summary)
    from evalkit.reports.html import write_report

    write_report(store)
    for task in manifest["tasks"]:
        _task_class(store, task["class"]).write_outputs(store.root)
    return summary


ScorePass = Callable[[Iterator[ScoreRecord]], Iterator[ScoreRecord]]


def _score_passes(store: RunStore, manifest: dict[str, Any]) -> dict[str, ScorePass]:
    """Task name -> its ``finalize_scores`` pass, for the tasks that define one. A task class that
    cannot be imported has none here: the write_outputs step of ``finalize`` names it, once the
    summary and report are written."""
    passes: dict[str, ScorePass] = {}
    for task in manifest["tasks"]:
        try:
            cls = _task_class(store, task["class"])
        except EvalkitError:
            continue  # raised again, with its one-line message, after the summary is written
        if cls.finalize_scores.__func__ is not Task.finalize_scores.__func__:
            passes[task["name"]] = cls.finalize_scores
    return passes


def _apply_score_passes(
    records: Iterator[ScoreRecord], passes: dict[str, ScorePass]
) -> Iterator[ScoreRecord]:
    """Each task's records (contiguous and in sample order once the stream is sorted) through its
    pass; other tasks' records unchanged (``Task.finalize_scores``)."""
    for task, group in itertools.groupby(records, key=lambda r: r.task):
        yield from passes.get(task, Task.finalize_scores)(group)


def _task_class(store: RunStore, dotted: str) -> type[Task]:
    """The task class a run recorded, for its extra outputs (e.g. a benchmark's submission file).
    A class that cannot be imported any more (an uninstalled plug-in) is a one-line error; the
    summary and report are already written by then."""
    module, _, qualname = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as exc:
        raise EvalkitError(
            f"{store.root / 'manifest.json'}: task class {dotted!r} cannot be imported ({exc}); "
            "install the package that provides it to write the task's own outputs"
        ) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the run, handled exactly like Ctrl-C: the manifest says ``interrupted`` and
    ``--resume`` finishes it (the CLI exits 143, 128 + SIGTERM)."""


def evaluate(
    config: RunConfig,
    resume_dir: Path | None = None,
    argv: list[str] | None = None,
    show_progress: bool = True,
) -> RunStore:
    store = asyncio.run(_terminable(evaluate_async(config, resume_dir, argv, show_progress)))
    if store is None:
        raise Terminated()
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
