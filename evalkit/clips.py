"""Each input clip read, hashed and encoded once per run, not once per turn.

Why: a clip is needed many times in a run. The manifest fingerprint hashes it, samples.jsonl records
its sha256, every request's cache key names it by content, and every turn of a conversation sends
the whole history again, so turn k of a conversation hashed and re-encoded all k clips so far
(quadratic in turns; issue 18). Two memos make that linear:

- ``file_sha256``: a file's content digest, remembered by (path, size, mtime, inode): a stat per
  ask, the bytes read once while the file is unchanged. Bounded (``DIGEST_ENTRIES``, least
  recently used out), a few hundred bytes an entry, so a 10k-item run stays flat.
- ``ObjectMemo``: values computed from one object (an ``AudioRef``: its in-memory bytes' digest,
  its base64 wire encoding) kept exactly as long as that object lives. A sample's clips live while
  its conversation is answered, so the encoding is made once per clip and per sample and freed
  with the sample: memory follows the samples in flight, never the run's size.

Cache keys are unchanged: the digest is the same sha256 of the same bytes, only remembered.

Across runs, ``DigestIndex`` keeps file digests in evalkit's cache folder (``digests.sqlite``) by
the same (path, size, mtime, inode, device) key, so the next run of a dataset (a nightly job, a
rerun) stats each clip instead of reading and hashing it again. A file modified less than
``SETTLED_NS`` before it was hashed is not kept (it may still be being written: the same guard as
git's "racy" index entries); a file rewritten since has another mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

#: file digests remembered (least recently used out beyond this)
DIGEST_ENTRIES = 1 << 15
#: a file must be unmodified this long before its digest is kept across runs
SETTLED_NS = 2_000_000_000
#: the index's file name in evalkit's cache folder
DIGEST_INDEX = "digests.sqlite"
#: new digests written to the index in one transaction
INDEX_BATCH = 512

_Key = tuple[str, int, int, int, int]


class DigestIndex:
    """File digests kept across processes (``digests.sqlite``), keyed like ``FileDigests``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a remembered digest need not survive a power cut
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, dev INTEGER NOT NULL, sha256 TEXT NOT NULL)"
        )
        self._new: list[tuple[str, int, int, int, int, str]] = []

    def get(self, key: _Key) -> str | None:
        row = self._db.execute(
            "SELECT sha256 FROM digests WHERE path = ? AND size = ? AND mtime_ns = ? AND ino = ? AND dev = ?",
            key,
        ).fetchone()
        return row[0] if row else None

    def add(self, key: _Key, value: str) -> None:
        self._new.append((*key, value))
        if len(self._new) >= INDEX_BATCH:
            self.flush()

    def flush(self) -> None:
        rows, self._new = self._new, []
        if rows:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", rows)

    def drop(self) -> None:
        """Close the connection without writing what is not yet flushed."""
        self._new = []
        self._db.close()


T = TypeVar("T")


class FileDigests:
    """sha256 of files by (path, size, mtime, inode, device); ``reads`` counts files actually hashed."""

    def __init__(self, max_entries: int = DIGEST_ENTRIES):
        self.max_entries = max_entries
        self.reads = 0
        self._memo: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._lock = threading.Lock()
        self._index: DigestIndex | None = None

    def use_index(self, path: Path) -> None:
        """Keep digests across runs in ``path`` (``DigestIndex``), from now on in this process. A
        folder where SQLite cannot write (a read-only home) keeps them in this process only, as
        the report's compiled templates fall back to compiling."""
        with self._lock:
            if self._index is not None and self._index.path == path:
                return
            self._close_index_locked()
            try:
                self._index = DigestIndex(path)
            except (OSError, sqlite3.Error):
                self._index = None

    def flush_index(self) -> None:
        """Write the digests made since the last flush to the index (a run does at its phases' ends)."""
        with self._lock:
            self._on_index_locked(lambda index: index.flush())

    def _on_index_locked(self, operation: Callable[[DigestIndex], T]) -> T | None:
        """``operation`` on the index, if there is one. An index that fails (a full disk, a damaged
        file) is dropped for the rest of the process, its unwritten digests with it: it only saves
        rereading clips, so it must never fail a run (the run's own disk-full path reports what
        does)."""
        if self._index is None:
            return None
        try:
            return operation(self._index)
        except sqlite3.Error:
            index, self._index = self._index, None
            index.drop()
            return None

    def _close_index_locked(self) -> None:
        self._on_index_locked(lambda index: index.flush())
        if self._index is not None:
            index, self._index = self._index, None
            index.drop()

    def digest(self, path: str | os.PathLike[str]) -> str:
        """The file's sha256 (hex); raises ``OSError`` when it cannot be read."""
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
        with self._lock:
            known = self._memo.get(key)
            if known is not None:
                self._memo.move_to_end(key)
                return known
            known = self._on_index_locked(lambda index: index.get(key))
        if known is None:
            with open(path, "rb") as fh:
                known = hashlib.file_digest(fh, "sha256").hexdigest()
            with self._lock:
                self.reads += 1
                if stat.st_mtime_ns <= time.time_ns() - SETTLED_NS:
                    self._on_index_locked(lambda index: index.add(key, known))
        with self._lock:
            self._memo[key] = known
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return known

    def clear(self) -> None:
        """Forget this process's digests and stop using an index (tests start from nothing)."""
        with self._lock:
            self._memo.clear()
            self.reads = 0
            self._close_index_locked()


#: the process's file digests (a run is one process; its judges' processes have their own)
DIGESTS = FileDigests()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A file's content digest, read once while the file is unchanged (``FileDigests``)."""
    return DIGESTS.digest(path)


class ObjectMemo:
    """Values computed from an object, each made once and dropped when the object is collected.

    ``key`` must name everything the value depends on that may change on a mutable object
    (e.g. an ``AudioRef``'s path and the identity of its bytes). ``made`` counts values computed.
    A value must not refer to its object: the memo would keep both alive for good."""

    def __init__(self) -> None:
        self.made = 0
        self._values: dict[int, dict[Hashable, Any]] = {}
        self._lock = threading.Lock()

    def get(self, obj: object, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            slot = self._values.get(id(obj))
            if slot is not None and key in slot:
                return slot[key]
        value = make()
        if value is obj:  # it would keep its own object alive: neither would ever be dropped
            raise ValueError(f"an ObjectMemo value must not be its own object ({type(obj).__name__})")
        with self._lock:
            slot = self._values.get(id(obj))
            if slot is None:
                slot = self._values[id(obj)] = {}
                weakref.finalize(obj, self._forget, id(obj))
            slot[key] = value
            self.made += 1
        return value

    def _forget(self, ident: int) -> None:
        with self._lock:
            self._values.pop(ident, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


#: digests of in-memory audio bytes, per ``AudioRef`` (``AudioRef.digest``)
OBJECT_DIGESTS = ObjectMemo()
