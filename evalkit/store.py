"""The run directory: the contract with reports, compare, the leaderboard and users' scripts.

``samples.jsonl`` (each sample as it starts), ``responses.jsonl`` and ``scores.jsonl`` are
append-only while a run is alive: each record is one line, written and flushed as soon as it
exists, so a run killed at any moment loses at most the requests in flight (a half-written last
line is cut off on resume). When a run finishes, the files are rewritten once in a deterministic
order (task, sample, turn/judge) through an atomic rename, so two runs of the same config list
their records in the same order. Every line and file is versioned (``evalkit.run_files``).

One writer at a time: a session that writes a run directory holds its lock (``.lock``, an OS
file lock through the ``filelock`` package, released by the OS if the process dies) and says who it
is in ``.lock.owner``; a second run, resume or finalize of the same directory is refused with one
line naming the holder's pid. Rewrites go through temporary files named per process and thread,
so two processes finishing one directory never write the same temporary file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from evalkit.confine import confine
from evalkit.errors import EvalkitError
from evalkit.records import (
    SCHEMA_VERSION,
    AudioRef,
    ModelOutput,
    ResponseRecord,
    Sample,
    SampleRecord,
    ScoreRecord,
)
from evalkit.run_files import Manifest, Summary, load_run_file, parse_line, sample_record

R = TypeVar("R", bound=BaseModel)
#: a pass over records in file order, records in and records out (``Task.finalize_scores``)
RecordPass = Callable[[Iterator[Any]], Iterator[Any]]

RESPONSES = "responses.jsonl"
SCORES = "scores.jsonl"
SAMPLES = "samples.jsonl"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOCK = ".lock"
LOCK_OWNER = ".lock.owner"
FSYNC_INTERVAL_S = 1.0
#: seconds a written line may wait in the buffer before it reaches the file (``JsonlAppender``)
FLUSH_INTERVAL_S = 0.05


class RunLocked(EvalkitError):
    """Another live process writes this run directory."""


def temp_path(path: Path) -> Path:
    """A temporary sibling of ``path`` that no other process or thread uses at the same time."""
    return path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename so readers never see half a file (the temporary name is this process's)."""
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path, record_type: type[R]) -> list[R]:
    """Read complete lines; a torn final line (killed mid-write) is ignored, any other bad line is
    an error naming the file and line."""
    return [record for _, _, record in iter_jsonl(path, record_type)]


def iter_jsonl(path: Path, record_type: type[R]) -> Iterator[tuple[int, int, R]]:
    """``(byte offset, byte length, record)`` per complete line, one line in memory at a time:
    finishing a run of any size must not hold all its records (``finalize_order``). Same rules as
    ``read_jsonl``: a final line without newline (the writer was killed mid-line) is skipped."""
    if not path.exists():
        return
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n") or not raw.strip():
                continue
            try:
                record = parse_line(raw, record_type)
            except ValueError as exc:
                raise EvalkitError(
                    f"{path}:{number}: not a valid {record_type.__name__} line ({exc})"
                ) from None
            yield start, len(raw), record


def _iter_latest(path: Path, record_type: type[R], key: Callable[[R], Hashable]) -> Iterator[R]:
    """The last record for each key, in order of each key's first appearance, streamed: a first pass
    keeps only (key -> offset, length) of the latest line, a second reads those lines back one at a
    time. A file without repeated keys (every finished run) is simply read again in order."""
    latest: dict[Hashable, tuple[int, int]] = {}
    repeated = False
    for start, length, record in iter_jsonl(path, record_type):
        identity = key(record)
        repeated = repeated or identity in latest
        latest[identity] = (start, length)
    if not repeated:
        yield from (record for _, _, record in iter_jsonl(path, record_type))
        return
    with open(path, "rb") as fh:
        for start, length in latest.values():
            fh.seek(start)
            yield parse_line(fh.read(length), record_type)


class LineIndex:
    """Where each line of a stream lies and what it sorts by, in about 30 bytes a line.

    A line's fields are ``(task, sample_id, turn or judge, sample_index)``. The task and the turn
    or judge take few values and are kept once each, the index as a number and the sample id as its
    64-bit hash: the index identifies a line's sample within the file, so it needs only to tell
    ids apart, never to give them back (ids are unique per task; two of 10k colliding is a chance
    of about 3e-12). Kept as tuples of strings, a 10k-sample run's three streams held ~9 MiB more
    than a 1k one's (``benchmarks/scale.py``)."""

    def __init__(self) -> None:
        self._codes: dict[Hashable, int] = {}
        self._values: list[Hashable] = []
        self._task, self._sub, self._index, self._length = array("i"), array("i"), array("i"), array("i")
        self._id, self._offset = array("q"), array("q")

    def _code(self, value: Hashable) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._values)
            self._values.append(value)
        return code

    def add(self, fields: tuple, offset: int, length: int) -> None:
        task, sample_id, sub, index = fields
        self._task.append(self._code(task))
        self._id.append(hash(sample_id))
        self._sub.append(self._code(sub))
        self._index.append(index)
        self._offset.append(offset)
        self._length.append(length)

    def __iter__(self) -> Iterator[tuple[tuple, int, int]]:
        """``((task, id hash, turn or judge, sample_index), offset, length)`` per line, in file order."""
        values = self._values
        rows = zip(self._task, self._id, self._sub, self._index, self._offset, self._length, strict=True)
        for task, ident, sub, index, offset, length in rows:
            yield (values[task], ident, values[sub], index), offset, length


class JsonlAppender:
    """Append-only JSONL writer: a line reaches the file within ``FLUSH_INTERVAL_S`` (one write for
    the lines of that window, on the running event loop's timer; at once outside a loop), fsync at
    most once a second and at close.

    Why not a write per line: three lines per request (sample, response, score) were three
    system calls on the event loop, the largest item of the harness's CPU per request on a busy
    machine (issue 18). A process killed at any moment still loses only what it was doing: the
    requests in flight and at most the last window's lines, which ``--resume`` asks again. A write
    that fails in the timer (a full disk) is raised by the next ``append`` or by ``close``."""

    def __init__(self, path: Path, index_lines: bool = False):
        self.path = path
        self._truncate_torn_tail()
        self._fh = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - held for the run
        self._last_sync = time.monotonic()
        self._flush_due = False
        self._failed: OSError | None = None
        self._offset = self._fh.tell()
        self._started_empty = self._offset == 0
        #: with ``index_lines``: the fields the caller gave, byte offset and byte length per line
        self._lines: LineIndex | None = LineIndex() if index_lines else None

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def append(self, record: BaseModel, fields: Any = None) -> None:
        """Append one line; ``fields`` (with ``index_lines``) is what ``known_lines`` returns for it."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        line = (record.model_dump_json(exclude_none=True) + "\n").encode("utf-8")
        self._fh.write(line)
        if self._lines is not None:
            self._lines.add(fields, self._offset, len(line))
        self._offset += len(line)
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (finalize, scripts): nothing would run a timer
            self.flush()
            return
        self._flush_due = True
        loop.call_later(FLUSH_INTERVAL_S, self._timed_flush)

    def _timed_flush(self) -> None:
        try:
            self.flush()
        except OSError as exc:  # raised to the writer by its next append (the runner's disk-full path)
            self._failed = exc

    def flush(self) -> None:
        """Write the buffered lines now (fsync when a second has passed since the last)."""
        self._flush_due = False
        if self._fh.closed:
            return
        self._fh.flush()
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL_S:
            os.fsync(self._fh.fileno())
            self._last_sync = now

    def known_lines(self) -> LineIndex | None:
        """Every line of the file (``LineIndex``: fields, offset, length), when this appender wrote all of
        them: it began with an empty file and the file ends where its last line did (nothing lost
        to a failed write, nothing added by anyone else). None otherwise: read the file instead."""
        if self._lines is None or not self._started_empty:
            return None
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return None
        return self._lines if size == self._offset else None

    def close(self) -> None:
        """Flush, sync and close; the file is closed even when the flush fails (a full disk), and a
        timed flush's failure not yet raised is raised here."""
        if not self._fh.closed:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed


class RunStore:
    """One run directory: ``runs/<run_id>/`` with manifest, JSONL streams, summary and audio."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.audio_dir = self.root / "audio"
        self._responses: JsonlAppender | None = None
        self._scores: JsonlAppender | None = None
        self._samples: JsonlAppender | None = None
        self._lock = None

    # -- the writer's lock --------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Become the directory's only writer, or raise ``RunLocked`` naming the process that is."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunLocked(
                f"{self.root}: in use by {self._holder()}; wait for it to finish (or stop it), then resume"
            ) from None
        self._lock = lock
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(self.root / LOCK_OWNER, json.dumps(owner) + "\n")

    def _holder(self) -> str:
        """Who holds the lock, as ``.lock.owner`` says (written right after acquiring it)."""
        try:
            owner = json.loads((self.root / LOCK_OWNER).read_text(encoding="utf-8"))
            return f"pid {owner['pid']} on {owner['host']} (since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (pid not recorded yet)"

    @contextmanager
    def locked(self) -> Iterator[RunStore]:
        """This store, locked for the ``with`` block (``evalkit report`` rewriting a finished run)."""
        self.acquire_lock()
        try:
            yield self
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        """Give the directory up (a no-op when this store does not hold it)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            (self.root / LOCK_OWNER).unlink(missing_ok=True)
            lock.release()

    # -- creation and opening -------------------------------------------------------------------
    @classmethod
    def create(cls, out_dir: Path, model_spec: str, tasks: list[str], identity: str = "") -> RunStore:
        """A new run folder ``STAMP_MODEL_TASKS_DIGEST``: the readable part is cut to fit, the
        digest (of the full model spec, the tasks and ``identity``, e.g. the task specs) never is,
        so ``cascade`` and ``cascade:tts=none`` get different names."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        digest = hashlib.sha256(json.dumps([model_spec, tasks, identity]).encode()).hexdigest()[:6]
        readable = _slug(f"{stamp}_{model_spec.split('@')[0]}_{'+'.join(tasks)}")[:53].rstrip("-_.")
        name = f"{readable}_{digest}"
        root = Path(out_dir) / name
        suffix = 1
        while root.exists():
            suffix += 1
            root = Path(out_dir) / f"{name}-{suffix}"
        root.mkdir(parents=True)
        return cls(root)

    @classmethod
    def open_existing(cls, root: Path) -> RunStore:
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise EvalkitError(
                f"{root}: not a run directory (no {MANIFEST}); pass the folder that `evalkit run` made"
            )
        return cls(root)

    @property
    def run_id(self) -> str:
        return self.root.name

    # -- manifest and summary -------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write manifest.json as this version's writer: ``schema_version`` is always the current one."""
        manifest = {**manifest, "schema_version": SCHEMA_VERSION}
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def manifest(self) -> Manifest:
        """manifest.json, typed (``evalkit.run_files.Manifest``): how every reader reads it."""
        return load_run_file(self.root / MANIFEST, Manifest, "the run directory is damaged")

    def summary(self) -> Summary:
        """summary.json, typed (``evalkit.run_files.Summary``)."""
        self._require_summary()
        fix = f"rebuild it with `evalkit score --finalize-only {self.root}`"
        return load_run_file(self.root / SUMMARY, Summary, fix)

    def read_manifest(self) -> dict[str, Any]:
        """manifest.json as the JSON object it is, for the writers that update it (``update_manifest``)
        and scripts; readers use ``manifest()``."""
        path = self.root / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EvalkitError(
                f"{path}: cannot read manifest ({exc}); the run directory is damaged"
            ) from None

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    def write_summary(self, summary: dict[str, Any]) -> None:
        summary = {**summary, "schema_version": SCHEMA_VERSION}
        atomic_write_text(self.root / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def _require_summary(self) -> Path:
        path = self.root / SUMMARY
        if not path.exists():
            raise EvalkitError(
                f"{path}: no summary yet; finish the run with `evalkit run --resume {self.root}`"
            )
        return path

    def read_summary(self) -> dict[str, Any]:
        """summary.json as the JSON object it is (readers use ``summary()``)."""
        path = self._require_summary()
        return json.loads(path.read_text(encoding="utf-8"))

    # -- streams ----------------------------------------------------------------------------------
    def open_streams(self) -> None:
        """The three streams, each remembering its lines' sort fields and places, so that
        finalizing a run this session wrote from empty files needs no index pass over them."""
        self._responses = JsonlAppender(self.root / RESPONSES, index_lines=True)
        self._scores = JsonlAppender(self.root / SCORES, index_lines=True)
        self._samples = JsonlAppender(self.root / SAMPLES, index_lines=True)

    def append_response(self, record: ResponseRecord) -> None:
        assert self._responses is not None, "open_streams() first"
        self._responses.append(record, _response_fields(record))

    def append_score(self, record: ScoreRecord) -> None:
        assert self._scores is not None, "open_streams() first"
        self._scores.append(record, _score_fields(record))

    def append_sample(self, task: str, index: int, sample: Sample, read_audio: bool = True) -> None:
        """samples.jsonl: the sample as it starts (``evalkit.run_files.sample_record``; without
        ``read_audio`` its files are not hashed: a path that escaped its root)."""
        assert self._samples is not None, "open_streams() first"
        record = sample_record(self.root, task, index, sample, _slug, read_audio)
        self._samples.append(record, _sample_fields(record))

    def close_streams(self) -> None:
        """Close every stream; one that fails to close (a full disk) leaves none open, and its
        error is raised once all are closed."""
        errors: list[OSError] = []
        for stream in (self._responses, self._scores, self._samples):
            if stream is not None:
                try:
                    stream.close()
                except OSError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def responses(self) -> list[ResponseRecord]:
        return read_jsonl(self.root / RESPONSES, ResponseRecord)

    def scores(self) -> list[ScoreRecord]:
        return read_jsonl(self.root / SCORES, ScoreRecord)

    def iter_responses(self) -> Iterator[ResponseRecord]:
        """Every response line, streamed (``responses()`` without holding them all)."""
        return (record for _, _, record in iter_jsonl(self.root / RESPONSES, ResponseRecord))

    def iter_scores(self) -> Iterator[ScoreRecord]:
        """Every score line, streamed (``scores()`` without holding them all)."""
        return (record for _, _, record in iter_jsonl(self.root / SCORES, ScoreRecord))

    def iter_samples(self) -> Iterator[SampleRecord]:
        """Every samples.jsonl line, streamed (none for a run made before the file existed)."""
        return (record for _, _, record in iter_jsonl(self.root / SAMPLES, SampleRecord))

    def iter_latest_responses(self) -> Iterator[ResponseRecord]:
        """The last record per (task, sample, turn): a resumed run appends a retry after a failure."""
        yield from _iter_latest(
            self.root / RESPONSES, ResponseRecord, lambda r: (r.task, r.sample_id, r.turn)
        )

    def iter_latest_scores(self) -> Iterator[ScoreRecord]:
        """The last record per (task, sample, judge), for the same reason."""
        yield from _iter_latest(
            self.root / SCORES, ScoreRecord, lambda r: (r.task, r.sample_id, r.score.judge)
        )

    # -- audio ------------------------------------------------------------------------------------
    def save_output_audio(self, task: str, sample_id: str, turn: int, output: ModelOutput) -> ModelOutput:
        """Move the model's speech into ``audio/`` and point the record at it (relative path)."""
        if output.audio is None:
            return output
        data = output.audio.read_bytes()
        rel = Path("audio") / _slug(task) / f"{_slug(sample_id)}_t{turn}.wav"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return output.model_copy(
            update={"audio": output.audio.model_copy(update={"path": str(rel), "data": None})}
        )

    def save_user_audio(self, task: str, sample_id: str, turn: int, audio: AudioRef) -> str:
        """Write a user turn made during the run (a simulator's speech) to ``audio/`` and return its
        path relative to the run directory (what responses.jsonl ``input.audio_path`` records)."""
        rel = Path("audio") / _slug(task) / f"{_slug(sample_id)}_t{turn}.user.wav"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(audio.read_bytes())
        return str(rel)

    def user_audio_path(self, rel: str) -> Path:
        """Where a user turn's audio saved by ``save_user_audio`` is; a recorded path that leads out
        of the run directory is refused (``PathEscapeError``), never read."""
        return confine(rel, [self.root], f"{self.root / RESPONSES}: input.audio_path", base=self.root)

    def recorded_user_audio(self, rel: str) -> AudioRef:
        """A user turn's audio saved by ``save_user_audio``, as bytes (a resumed run replays it)."""
        return AudioRef(data=self.user_audio_path(rel).read_bytes())

    def with_absolute_audio(self, output: ModelOutput) -> ModelOutput:
        """The output as judges and later turns need it: records keep ``audio/...`` relative to the
        run directory (so a run folder can move), but a judge in another process has no idea where
        that directory is."""
        if output.audio is None or output.audio.path is None or Path(output.audio.path).is_absolute():
            return output
        return output.model_copy(
            update={"audio": output.audio.model_copy(update={"path": str(self.root / output.audio.path)})}
        )

    # -- finishing ----------------------------------------------------------------------------------
    def sorted_streams(
        self, task_order: list[str], judge_order: list[str], score_pass: RecordPass | None = None
    ) -> tuple[Iterator[ResponseRecord], Iterator[ScoreRecord], Iterator[bytes]]:
        """The run's three streams rewritten sorted (task order as requested, sample index, turn /
        judge order), keeping only the latest record per key, so a resumed run ends with the same
        lines as a clean one. Each is an iterator over the records as they are written: a file is
        replaced (atomic rename) when its iterator is exhausted, so whoever consumes them (the
        summary) rides on the rewrite and each file is read at most twice (an index pass, then the
        copy); a file this session wrote from empty is indexed by its writer and read once.
        ``score_pass`` transforms the sorted scores on their way out (``Task.finalize_scores``).
        Nobody rides on samples.jsonl: its iterator yields the lines as written, and a file its
        writer indexed (every line this version's) is copied without parsing a line."""
        self.close_streams()
        known = {
            name: stream.known_lines() if stream is not None else None
            for name, stream in (
                (RESPONSES, self._responses),
                (SCORES, self._scores),
                (SAMPLES, self._samples),
            )
        }
        # the indexes describe the files as written: once rewritten, their offsets are stale
        self._responses = self._scores = self._samples = None
        task_rank = {t: i for i, t in enumerate(task_order)}
        judge_rank = {j: i for i, j in enumerate(judge_order)}

        def rank(task: str) -> int:
            return task_rank.get(task, len(task_rank))

        # a line's identity is (task, sample id, turn or judge or None): the latest line of each is kept
        def response_order(identity: tuple, index: int) -> tuple:
            task, _, turn = identity
            return rank(task), task, index, turn

        def score_order(identity: tuple, index: int) -> tuple:
            task, _, judge = identity
            return rank(task), task, index, judge_rank.get(judge, len(judge_rank)), judge

        def sample_order(identity: tuple, index: int) -> tuple:
            return rank(identity[0]), identity[0], index

        return (
            self._rewrite_sorted(
                self.root / RESPONSES,
                ResponseRecord,
                _response_fields,
                response_order,
                known=known[RESPONSES],
            ),
            self._rewrite_sorted(
                self.root / SCORES, ScoreRecord, _score_fields, score_order, score_pass, known=known[SCORES]
            ),
            # a run made before samples.jsonl existed does not get an empty one
            self._rewrite_sorted(
                self.root / SAMPLES,
                SampleRecord,
                _sample_fields,
                sample_order,
                create=False,
                known=known[SAMPLES],
                records=False,
            ),
        )

    def finalize_order(self, task_order: list[str], judge_order: list[str]) -> None:
        """``sorted_streams`` with nobody riding on it: just put the files in order."""
        for stream in self.sorted_streams(task_order, judge_order):
            deque(stream, maxlen=0)

    @staticmethod
    def _rewrite_sorted(
        path: Path,
        record_type: type[R],
        fields_of: Callable[[R], tuple],
        order_of: Callable[[tuple, int], tuple],
        transform: RecordPass | None = None,
        create: bool = True,
        known: Iterable[tuple[tuple, int, int]] | None = None,
        records: bool = True,
    ) -> Iterator[Any]:
        """Keep the latest line per identity (task, sample, turn or judge), sorted by ``order_of``
        (identity, sample index), through an atomic rename, yielding each record written. Only
        (identity, sample index, offset, length) stay in memory; each kept line is read back and
        written one at a time, so finishing a 10k-sample run costs no more memory than a 1k one
        beyond those small tuples. An iterator abandoned half way leaves the file as it was.
        ``known``: the file's lines as its writer indexed them (``JsonlAppender.known_lines``:
        ``fields_of`` each record, offset, length), instead of an index pass reading the file.
        ``records=False`` (no ``transform``): yield each line written instead of its record, and
        parse a line only where its version is unknown (no writer's index) to upgrade it."""
        # identity -> (sample index, offset, length): the sort order is made from these only when
        # sorting, so that a 10k-sample run's three dicts hold no order tuples besides
        latest: dict[Hashable, tuple[int, int, int]] = {}
        lines = known
        if lines is None:
            lines = (
                (fields_of(record), start, length) for start, length, record in iter_jsonl(path, record_type)
            )
        for (task, sample, sub, index), start, length in lines:
            latest[(task, sample, sub)] = (index, start, length)
        if not path.exists():
            if create:
                path.write_text("", encoding="utf-8")  # as before: a run with no records has empty files
            return
        tmp = temp_path(path)
        try:
            with open(path, "rb") as src, open(tmp, "w", encoding="utf-8") as out:

                def kept(parse: bool = True) -> Iterator[tuple[bytes, Any]]:
                    ordered = sorted(latest.items(), key=lambda item: order_of(item[0], item[1][0]))
                    latest.clear()
                    for _, (_, start, length) in ordered:
                        src.seek(start)
                        raw = src.read(length)
                        yield raw, parse_line(raw, record_type) if parse else None

                if transform is None and not records and known is not None:  # this version's lines
                    for raw, _ in kept(parse=False):
                        out.write(raw.decode("utf-8"))
                        yield raw
                elif transform is None:  # a line this version wrote is copied as it is (no re-dump)
                    for raw, record in kept():
                        current = getattr(record, "schema_version", None) == SCHEMA_VERSION
                        line = raw.decode("utf-8") if current else record.to_json() + "\n"
                        out.write(line)
                        yield record if records else line.encode("utf-8")
                else:
                    for record in transform(record for _, record in kept()):
                        out.write(record.to_json() + "\n")
                        yield record
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# -- the sort fields of each stream's lines (``RunStore.sorted_streams``) ---------------------------
def _response_fields(record: ResponseRecord) -> tuple:
    return record.task, record.sample_id, record.turn, record.sample_index


def _score_fields(record: ScoreRecord) -> tuple:
    return record.task, record.sample_id, record.score.judge, record.sample_index


def _sample_fields(record: SampleRecord) -> tuple:
    return record.task, record.sample.id, None, record.sample_index
