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
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

#: file digests remembered (least recently used out beyond this)
DIGEST_ENTRIES = 1 << 15

T = TypeVar("T")


class FileDigests:
    """sha256 of files by (path, size, mtime, inode, device); ``reads`` counts files actually hashed."""

    def __init__(self, max_entries: int = DIGEST_ENTRIES):
        self.max_entries = max_entries
        self.reads = 0
        self._memo: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, path: str | os.PathLike[str]) -> str:
        """The file's sha256 (hex); raises ``OSError`` when it cannot be read."""
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
        with self._lock:
            known = self._memo.get(key)
            if known is not None:
                self._memo.move_to_end(key)
                return known
        with open(path, "rb") as fh:
            value = hashlib.file_digest(fh, "sha256").hexdigest()
        with self._lock:
            self.reads += 1
            self._memo[key] = value
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._memo.clear()
            self.reads = 0


#: the process's file digests (a run is one process; its judges' processes have their own)
DIGESTS = FileDigests()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A file's content digest, read once while the file is unchanged (``FileDigests``)."""
    return DIGESTS.digest(path)


class ObjectMemo:
    """Values computed from an object, each made once and dropped when the object is collected.

    ``key`` must name everything the value depends on that may change on a mutable object
    (e.g. an ``AudioRef``'s path and the identity of its bytes). ``made`` counts values computed."""

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
