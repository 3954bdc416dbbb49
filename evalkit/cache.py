"""Content-addressed response cache (SQLite), so reruns and ``--resume`` never repeat a request.

Key = sha256 of (canonical model spec, request with audio replaced by its content digest,
generation parameters). Only successful outputs are stored: a failed request is retried next time.
Audio a model spoke is stored beside the database as ``blobs/<sha256>.wav`` and referenced by path,
keeping rows small. WAL mode lets many runs share one cache file.

Identity (``cache_scope``): an answer is only as reusable as the model's name is exact. A URL and
a served name say nothing about which weights answer behind them (a server restarted with another
checkpoint keeps both), so entries are shared across runs only when the model is *pinned*: by
``--model-revision TAG``, or by an adapter that knows its weights exactly (``pinned_revision``:
a local model folder's content digest, a hub snapshot's commit, a bundled model's package
version). An unpinned model's entries are scoped to the run that made them: they serve that run's
``--resume`` and nothing else. Each entry records the run that made it, so a run's manifest can
say where its answers came from (``answer_sources``).

Writes are committed in batches (every ``FLUSH_ROWS`` rows or ``FLUSH_SECONDS``, and at close):
one transaction per response cost a measurable share of the harness's per-request CPU. A batch is
committed by a writer thread on its own connection (WAL lets the event loop's reads go on
meanwhile), so the loop never waits for SQLite; entries waiting or being written are served from
memory. A process killed between flushes loses only cache entries, never results: the run
directory's responses.jsonl is the durable record and ``--resume`` reads that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.audio import AudioError
from evalkit.records import AudioRef, ChatRequest, ModelOutput
from evalkit.store import temp_path

FLUSH_ROWS = 256
#: rows waiting while the writer thread is busy beyond which ``put`` waits for it (bounded memory)
MAX_PENDING_ROWS = 4 * FLUSH_ROWS
FLUSH_SECONDS = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model_spec TEXT NOT NULL,
    output TEXT NOT NULL,
    created REAL NOT NULL,
    run_id TEXT,
    scope TEXT
)
"""
#: columns added after the first schema (an older cache file gets them on open)
ADDED_COLUMNS = {"run_id": "TEXT", "scope": "TEXT"}
#: files of a model folder hashed in full for its digest; larger ones by name, size and mtime
SMALL_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class CacheEntry:
    """A cached answer and the run that produced it (None: an entry older than that record)."""

    output: ModelOutput
    run_id: str | None


def cache_scope(revision: str | None, run_id: str) -> str:
    """Where an entry may be reused: ``revision=TAG`` (any run of the pinned model) or ``run=ID``
    (only that run, i.e. its ``--resume``)."""
    return f"revision={revision}" if revision else f"run={run_id}"


def scoped_key(request_hash: str, scope: str) -> str:
    """The cache key of a request within a scope (the request hash itself stays the record's)."""
    return hashlib.sha256(f"{scope}\n{request_hash}".encode()).hexdigest()


def folder_digest(folder: Path) -> str:
    """A content digest of a local model folder: small files (configs, tokenizers) hashed in
    full, weight files by relative name, size and modification time (hashing gigabytes per run
    costs minutes; rewriting a weight file changes its mtime)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        if stat.st_size <= SMALL_FILE_BYTES:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def model_folder_revision(name: str) -> str | None:
    """The pinned revision of an in-process model named by ``name``: a hub snapshot folder's
    commit (``.../snapshots/<sha>``), else a local folder's content digest; None for a bare hub
    id, whose latest revision can change under the same name."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return None
    path = path.resolve()
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return f"commit={path.name}"
    return f"digest={folder_digest(path)}"


def request_key(model_spec: str, request: ChatRequest) -> str:
    """The cache key of one request to one model (raises AudioError if input audio is unreadable)."""
    try:
        payload = {"model": model_spec, "request": request.cache_payload()}
    except OSError as exc:  # hashing reads every clip: a missing one is bad input, not a crash
        if isinstance(exc, FileNotFoundError):
            raise AudioError(f"{exc.filename}: audio file not found; fix the path in the dataset") from None
        raise AudioError(f"{exc.filename}: cannot read audio file ({exc.strerror})") from None
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Thread-safe SQLite store of ``ModelOutput`` by request key."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.path.parent / "blobs"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE responses ADD COLUMN {column} {kind}")
        self._pending: dict[str, tuple[str, str, str, float, str | None, str | None]] = {}
        self._last_flush = time.monotonic()
        #: the batch the writer thread is committing (served until the next flush sees it done)
        self._writing: dict[str, tuple[str, str, str, float, str | None, str | None]] = {}
        self._written: Future[None] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._write_db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._write_db.execute("PRAGMA synchronous=NORMAL")
        #: scopes that had no entry when this process began using them (``declare_new_scope``), and
        #: the keys this process has put into them since, as a bit set (``PutKeys``)
        self._new_scopes: set[str] = set()
        self._new_scope_keys = PutKeys()

    def get(self, key: str) -> ModelOutput | None:
        entry = self.get_entry(key)
        return None if entry is None else entry.output

    def declare_new_scope(self, scope: str) -> None:
        """Say that ``scope`` holds no entry yet: it names a run created just now (an unpinned
        model's ``run=ID``). Lookups in it are then answered from this process's own puts without
        a query: a miss cost ~60 us of CPU per request in a busy run, every request of a new run
        being a miss (issue 18)."""
        with self._lock:
            self._new_scopes.add(scope)

    def get_entry(self, key: str, scope: str | None = None) -> CacheEntry | None:
        """The answer stored under ``key`` (made in ``scope``, when the caller knows it) and the run
        that made it, or None."""
        if scope in self._new_scopes and key not in self._new_scope_keys:
            return None  # nothing of a new scope exists but what this process put (``declare_new_scope``)
        with self._lock:
            pending = self._pending.get(key) or self._writing.get(key)
            if pending is not None:
                text, run_id = pending[2], pending[4]
            else:
                row = self._db.execute(
                    "SELECT output, run_id FROM responses WHERE key = ?", (key,)
                ).fetchone()
                if row is None:
                    return None
                text, run_id = row
        output = ModelOutput.model_validate_json(text)
        if output.audio is not None and output.audio.path and not Path(output.audio.path).exists():
            return None  # blob was cleaned away: treat as a miss rather than return a dangling path
        return CacheEntry(output, run_id)

    def put(
        self,
        key: str,
        model_spec: str,
        output: ModelOutput,
        run_id: str | None = None,
        scope: str | None = None,
    ) -> None:
        if not output.ok:
            return
        stored = output.model_copy()
        if output.audio is not None and output.audio.data is not None:
            stored.audio = self._store_blob(output.audio)
        with self._lock:
            if scope in self._new_scopes:
                self._new_scope_keys.add(key)
            self._pending[key] = (key, model_spec, stored.to_json(), time.time(), run_id, scope)
            due = len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            busy = self._written is not None and not self._written.done()
            if due and (not busy or len(self._pending) >= MAX_PENDING_ROWS):
                self._wait_writer_locked()  # done already (its error, if any, raised), or memory bound
                batch, self._pending = self._pending, {}
                self._writing, self._last_flush = batch, time.monotonic()
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(1, thread_name_prefix="evalkit-cache")
                self._written = self._writer.submit(_commit, self._write_db, list(batch.values()))

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _wait_writer_locked(self) -> None:
        """Wait for the writer thread's batch (it takes no lock) and raise its error, if any."""
        written, self._written = self._written, None
        self._writing = {}
        if written is not None:
            written.result()

    def _flush_locked(self) -> None:
        self._wait_writer_locked()
        if self._pending:
            _commit(self._write_db, list(self._pending.values()))  # the writer is idle: same thread rule
            self._pending.clear()
        self._last_flush = time.monotonic()

    def _store_blob(self, ref: AudioRef) -> AudioRef:
        data = ref.read_bytes()
        path = self.blob_dir / f"{hashlib.sha256(data).hexdigest()}.wav"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            tmp.write_bytes(data)
            tmp.replace(path)
        return AudioRef(path=str(path), sample_rate=ref.sample_rate, mime=ref.mime)

    def __len__(self) -> int:
        with self._lock:
            self._flush_locked()
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self)}

    def info(self) -> dict[str, Any]:
        """What ``evalkit cache info`` prints: entries per model and per kind of scope, blobs."""
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(
                "SELECT model_spec, CASE WHEN scope LIKE 'revision=%' THEN 'pinned' "
                "WHEN scope LIKE 'run=%' THEN 'one run' ELSE 'unscoped (older evalkit)' END, COUNT(*) "
                "FROM responses GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        blobs = list(self.blob_dir.glob("*.wav")) if self.blob_dir.is_dir() else []
        return {
            "path": str(self.path),
            "entries": sum(r[2] for r in rows),
            "models": [{"model": r[0], "scope": r[1], "entries": r[2]} for r in rows],
            "blobs": len(blobs),
            "blob_bytes": sum(b.stat().st_size for b in blobs),
        }

    def clear(self) -> int:
        """Delete every entry and audio blob; returns how many entries there were."""
        with self._lock:
            self._wait_writer_locked()
            self._pending.clear()
            count = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            self._db.execute("DELETE FROM responses")
            self._db.execute("VACUUM")
        if self.blob_dir.is_dir():
            for blob in self.blob_dir.glob("*.wav"):
                blob.unlink()
        return int(count)

    def close(self) -> None:
        with self._lock:
            try:
                self._flush_locked()
            finally:
                if self._writer is not None:
                    self._writer.shutdown()
                self._write_db.close()
                self._db.close()


class PutKeys:
    """The keys put into new scopes, as a 1 Mbit set of bits (128 KiB, whatever the run's size): a
    key whose two bits are not both set was never put, so its lookup needs no query; one whose bits
    are set is looked up (it was put, or, about once in 3,000 lookups at 10k keys, another key set
    them). Each key is a sha256 in hex, so its digits are already uniform bits."""

    BITS = 1 << 20

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)

    def _positions(self, key: str) -> tuple[int, int]:
        return int(key[:8], 16) % self.BITS, int(key[8:16], 16) % self.BITS

    def add(self, key: str) -> None:
        for bit in self._positions(key):
            self._bits[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, key: str) -> bool:
        return all(self._bits[bit >> 3] & (1 << (bit & 7)) for bit in self._positions(key))


def _commit(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """One transaction for a batch of rows (the connection autocommits otherwise)."""
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT OR REPLACE INTO responses (key, model_spec, output, created, run_id, scope) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
