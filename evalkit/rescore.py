"""``evalkit score RUN_DIR [--judges J1,J2]``: judge a finished run again, with no call to the
model under test.

What it reads: the samples as run (samples.jsonl, their audio checked against the recorded
sha256) and the model's answers (responses.jsonl); the judges are the run's tasks' own (built from
the task specs in the manifest, so a task that configures its judges configures them again), or
the registered judges named by ``--judges``. No model adapter is ever loaded.

Where it writes: in place, under the run directory's lock. The new scores are appended to
scores.jsonl exactly as ``--resume`` appends (the latest record per task, sample and judge wins),
then ``finalize`` sorts the streams and rewrites summary.json and report.html. An interrupted
``score`` leaves a run that the next ``score`` (or ``score --finalize-only``) completes; the scores of judges
not named are kept. The manifest's ``rescored`` lists each session (when, which judges); a judge a
task did not have is added to that task's ``judges``. For deterministic judges the rescored
scores.jsonl is byte-identical to the original.

Both streams are sorted the same way by finalize (task order, sample index), so samples and
responses are joined in one streamed pass each: memory stays flat in the run's size.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.finalize import check_writable, finalize
from evalkit.judges.base import Judge, judges_manifest, load_judge
from evalkit.judging import JudgeExecutor
from evalkit.manifest import now_iso
from evalkit.records import AudioRef, ModelOutput, ResponseRecord, Sample, SampleRecord, Turn
from evalkit.run_files import Manifest, TaskInfo, file_digest
from evalkit.store import SAMPLES, RunStore
from evalkit.tasks.base import Task, resolve_tasks


async def rescore_async(root: Path, judges: list[str] | None = None, concurrency: int = 8) -> RunStore:
    """Re-judge the finished run at ``root`` (see the module docstring); returns its store."""
    store = RunStore.open_existing(root)
    with store.locked():
        manifest = store.manifest()
        check_rescorable(store, manifest)
        tasks = _tasks_of(store, manifest)
        chosen = {t.name: list(judges) if judges else list(info.judges) for t, info in tasks}
        instances = {t.name: _judges_for(t, chosen[t.name]) for t, _ in tasks}
        _record_session(store, manifest, chosen, instances)
        executor = JudgeExecutor(instances, _judge_workers(manifest), store)
        store.open_streams()
        try:
            await _judge_all(store, executor, chosen, concurrency)
        finally:
            try:
                await executor.aclose()
            finally:
                store.close_streams()
        finalize(store)
    return store


def rescore(root: Path, judges: list[str] | None = None, concurrency: int = 8) -> RunStore:
    return asyncio.run(rescore_async(root, judges, concurrency))


def refinalize(root: Path) -> RunStore:
    """``evalkit score --finalize-only``: sort the streams and write summary.json and report.html
    again without judging (a run whose finish was cut short by a full disk, or any run made
    before samples.jsonl existed)."""
    store = RunStore.open_existing(root)
    with store.locked():
        check_writable(store, store.manifest())
        finalize(store)
    return store


def check_rescorable(store: RunStore, manifest: Manifest) -> None:
    """Only a finished run of this format or an older one that recorded its samples."""
    check_writable(store, manifest)
    if not (store.root / SAMPLES).is_file():
        raise EvalkitError(
            f"{store.root / SAMPLES}: missing; this run was made before runs recorded their samples "
            f"(schema_version {manifest.schema_version}): run it again with `evalkit run` to re-judge it"
        )
    if manifest.status != "completed":
        raise EvalkitError(
            f"{store.root / 'manifest.json'}: status is {manifest.status!r}, not completed; finish it "
            f"first with `evalkit run --resume {store.root}`"
        )


def _tasks_of(store: RunStore, manifest: Manifest) -> list[tuple[Task, TaskInfo]]:
    """The run's tasks rebuilt from the manifest's specs (their data is not read: the samples come
    from samples.jsonl), paired with what the manifest recorded of each."""
    config = manifest.config
    tasks = resolve_tasks(str(config.get("tasks", "")), allow_paths=config.get("allow_paths") or [])
    recorded = {t.name: t for t in manifest.tasks}
    missing = [t.name for t in tasks if t.name not in recorded]
    if missing:
        raise EvalkitError(
            f"{store.root / 'manifest.json'}: config.tasks now resolves to task {missing[0]!r}, which the "
            "run did not have; re-judge with the evalkit version that made the run"
        )
    return [(t, recorded[t.name]) for t in tasks]


def _judges_for(task: Task, names: list[str]) -> dict[str, Judge]:
    """The task's own judge instances (as the task configures them) for the names it has, the
    registered judge for any other name."""
    own = task.make_judges()
    return {name: own[name] if name in own else load_judge(name) for name in names}


def _judge_workers(manifest: Manifest) -> int:
    return int(manifest.config.get("judge_workers") or 2)


def _record_session(
    store: RunStore, manifest: Manifest, chosen: dict[str, list[str]], instances: dict[str, dict[str, Judge]]
) -> None:
    """The manifest says the run was re-judged, lists any judge a task gains, and records each
    re-run judge as it scores now (``judges``: scorer version, options, declared metrics)."""
    raw = store.read_manifest()
    for task in raw.get("tasks", []):
        names = chosen.get(task.get("name"), [])
        task["judges"] = [*task.get("judges", []), *(n for n in names if n not in task.get("judges", []))]
    recorded = raw.get("judges", {})
    for task_name, described in judges_manifest(instances).items():
        recorded.setdefault(task_name, {}).update(described)
    session = {"at": now_iso(), "judges": chosen}
    store.update_manifest(tasks=raw.get("tasks", []), judges=recorded, rescored=[*manifest.rescored, session])


async def _judge_all(
    store: RunStore, executor: JudgeExecutor, chosen: dict[str, list[str]], concurrency: int
) -> None:
    """Every recorded sample judged again, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(max(1, concurrency))
    pending: set[asyncio.Task] = set()

    async def one(rec: SampleRecord, outputs: list[ModelOutput], failure, failed_turn: int) -> None:
        try:
            await executor.judge_sample(
                rec.task, rec.sample_index, rec.sample, outputs, chosen[rec.task], failure, failed_turn
            )
        finally:
            slots.release()

    try:
        for rec, responses in _joined(store):
            if rec.task not in chosen:
                continue
            outputs, failure, failed_turn = _conversation(store, responses)
            await slots.acquire()
            job = asyncio.create_task(one(rec, outputs, failure, failed_turn))
            pending.add(job)
            job.add_done_callback(pending.discard)
        await asyncio.gather(*list(pending))
    except BaseException:
        for job in pending:
            job.cancel()
        await asyncio.gather(*list(pending), return_exceptions=True)
        raise


def _joined(store: RunStore) -> Iterator[tuple[SampleRecord, list[ResponseRecord]]]:
    """Each recorded sample (its audio as judges need it) with its responses, joined in one pass
    over each file: both are in finalize's order (task, sample index)."""
    groups = itertools.groupby(store.iter_responses(), key=lambda r: (r.task, r.sample_id))
    current = next(groups, None)
    for rec in store.iter_samples():
        key = (rec.task, rec.sample.id)
        responses: list[ResponseRecord] = []
        if current is not None and current[0] == key:
            responses = list(current[1])
            current = next(groups, None)
        if not responses:
            raise EvalkitError(
                f"{store.root / 'responses.jsonl'}: no answer recorded for task {rec.task!r} sample "
                f"{rec.sample.id!r} (in {SAMPLES}); finish the run with `evalkit run --resume {store.root}`"
            )
        sample = _played(store, _verified(store, rec), responses)
        yield rec.model_copy(update={"sample": sample}), responses


def _verified(store: RunStore, rec: SampleRecord) -> Sample:
    """The recorded sample with its audio where judges can open it (a path inside the run made
    absolute), each file checked against the digest the run recorded."""
    turns = []
    for i, turn in enumerate(rec.sample.conversation):
        if turn.audio is not None and turn.audio.path is not None:
            path = store.root / turn.audio.path
            expected = rec.audio_sha256.get(i)
            if expected is not None and file_digest(path) != expected:
                raise EvalkitError(
                    f"{path}: changed or missing since the run read it (task {rec.task!r} sample "
                    f"{rec.sample.id!r} turn {i}; sha256 in {SAMPLES}); restore it, or run the samples again"
                )
            turn = turn.model_copy(update={"audio": turn.audio.model_copy(update={"path": str(path)})})
        turns.append(turn)
    return rec.sample.model_copy(update={"conversation": turns})


def _played(store: RunStore, sample: Sample, responses: list[ResponseRecord]) -> Sample:
    """The conversation as the run played it: a user turn recorded without audio in samples.jsonl
    (made at run time, ``Task.live_user_turns``) takes what the turn's response recorded it said
    and its audio in the run (the judges of the run itself read the same)."""
    users = [i for i, turn in enumerate(sample.conversation) if turn.role == "user"]
    turns = list(sample.conversation)
    for rec in responses:
        said = rec.input
        if rec.turn >= len(users) or turns[users[rec.turn]].audio is not None or not said.audio_path:
            continue
        path = str(store.user_audio_path(said.audio_path))  # confined to the run directory
        turns[users[rec.turn]] = Turn(
            role="user", text=said.text, transcript=said.transcript, audio=AudioRef(path=path)
        )
    return sample.model_copy(update={"conversation": turns})


def _conversation(
    store: RunStore, responses: list[ResponseRecord]
) -> tuple[list[ModelOutput], ModelOutput | None, int]:
    """The answers as the run handed them to the judges: every turn up to the first failed one
    (then the failure and its turn: the judges give ``model_error``), audio paths absolute."""
    outputs: list[ModelOutput] = []
    for rec in sorted(responses, key=lambda r: r.turn):
        if not rec.output.ok:
            return outputs, rec.output, rec.turn
        outputs.append(store.with_absolute_audio(rec.output))
    return outputs, None, -1
