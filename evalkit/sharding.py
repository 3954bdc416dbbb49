"""Shards of a run: ``--shard I/N`` runs every task's samples whose index satisfies
``index % N == I - 1`` (1-based I).

Why by sample index and not by arrival order or a hash of the id: the index is what the run store
already sorts by (``finalize_order``) and records in every line (``sample_index``), it does not
depend on concurrency or timing, and it spreads any ordering in the dataset (easy questions
first, one category after another) evenly over the shards. ``evalkit merge`` re-checks it on
every record, so a folder passed under the wrong shard number cannot slip into a merged run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evalkit.errors import EvalkitError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def owns(self, sample_index: int) -> bool:
        """Whether the sample at this (0-based, per-task) index belongs to this shard."""
        return sample_index % self.count == self.index - 1

    def size(self, total: int | None) -> int | None:
        """How many of ``total`` samples fall in this shard (None when the total is unknown)."""
        if total is None:
            return None
        return len(range(self.index - 1, total, self.count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard | None:
    """``"2/4"`` -> ``Shard(2, 4)``; None stays None (the whole run). Anything else is a one-line
    error naming the flag and the fix."""
    if text is None:
        return None
    match = _SHARD.match(str(text))
    if match is None:
        raise EvalkitError(f"--shard {text!r}: expected I/N with whole numbers, e.g. --shard 1/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise EvalkitError(f"--shard {text!r}: the shard count N must be at least 1, e.g. --shard 1/4")
    if not 1 <= index <= count:
        raise EvalkitError(
            f"--shard {text!r}: the shard index I must be between 1 and {count} (1-based), "
            f"e.g. --shard 1/{count}"
        )
    return Shard(index, count)
