"""Content-addressed response cache (SQLite), so reruns and ``--resume`` never repeat a request.

Key = sha256 of (canonical model spec, request with audio replaced by its content digest,
generation parameters). Only successful outputs are stored: a failed request is retried next time.
Audio a model spoke is stored beside the database as ``blobs/<sha256>.wav`` and referenced by path,
keeping rows small. WAL mode lets many runs share one cache file.

Writes are committed in batches (every ``FLUSH_ROWS`` rows or ``FLUSH_SECONDS``, and at close):
one transaction per response cost a measurable share of the harness's per-request CPU. A process
killed between flushes loses only cache entries, never results: the run directory's
responses.jsonl is the durable record and ``--resume`` reads that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from evalkit.audio import AudioError
from evalkit.records import AudioRef, ChatRequest, ModelOutput

FLUSH_ROWS = 256
FLUSH_SECONDS = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model_spec TEXT NOT NULL,
    output TEXT NOT NULL,
    created REAL NOT NULL
)
"""


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
        self._pending: dict[str, tuple[str, str, str, float]] = {}
        self._last_flush = time.monotonic()

    def get(self, key: str) -> ModelOutput | None:
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None:
                text = pending[2]
            else:
                row = self._db.execute("SELECT output FROM responses WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                text = row[0]
        output = ModelOutput.model_validate_json(text)
        if output.audio is not None and output.audio.path and not Path(output.audio.path).exists():
            return None  # blob was cleaned away: treat as a miss rather than return a dangling path
        return output

    def put(self, key: str, model_spec: str, output: ModelOutput) -> None:
        if not output.ok:
            return
        stored = output.model_copy()
        if output.audio is not None and output.audio.data is not None:
            stored.audio = self._store_blob(output.audio)
        with self._lock:
            self._pending[key] = (key, model_spec, stored.to_json(), time.time())
            if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")  # one transaction for the batch (the connection autocommits)
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO responses (key, model_spec, output, created) VALUES (?, ?, ?, ?)",
                    list(self._pending.values()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._pending.clear()
        self._last_flush = time.monotonic()

    def _store_blob(self, ref: AudioRef) -> AudioRef:
        data = ref.read_bytes()
        path = self.blob_dir / f"{hashlib.sha256(data).hexdigest()}.wav"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return AudioRef(path=str(path), sample_rate=ref.sample_rate, mime=ref.mime)

    def __len__(self) -> int:
        with self._lock:
            self._flush_locked()
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self)}

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._db.close()
