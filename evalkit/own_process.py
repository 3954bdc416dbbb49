"""What only evalkit's own process (the ``evalkit`` command, ``cli.main``) may do to the
interpreter's garbage collector: take objects out of its view (``gc.freeze``), and collect the
youngest generation every 20,000 allocations rather than every 700.

Why: a run allocates millions of short-lived objects, and every full collection walks every
object alive, though most of them live until the process ends: the ~60k of startup (imported
modules, pydantic schemas), then, at the run's end, whatever the requests left (clip and digest
memos, the service's books). Freezing them once cut ~0.15 s from a 1000-request run's request
phase and ~0.06 s from its finalize (issue 18, ``benchmarks/floor.py``). Frozen objects are never
collected. The request path makes no reference cycles (``tests/test_hot_path.py`` asserts it),
so the ~180 young collections and ~16 middle ones of a 1000-request run found almost nothing,
for ~0.1 s of its wall clock; at 20,000 there are ~6, ~0.045 s. Neither is what a caller's
long-lived Python session (a notebook, a test's ``CliRunner``) should have imposed on it: there
``claim`` was never called and these calls do nothing.
"""

from __future__ import annotations

import gc

_claimed = False
#: allocations between two collections of the youngest generation (Python's default: 700)
YOUNG_THRESHOLD = 20_000


def claim() -> None:
    """This process is the ``evalkit`` command itself (``cli.main`` calls it first)."""
    global _claimed
    _claimed = True


def freeze_live_objects() -> None:
    """In evalkit's own process: every object alive now leaves the collector's view for the rest
    of the process. Called after startup (``evalkit run``) and before a run's finalize."""
    if _claimed:
        gc.freeze()


def collect_less() -> None:
    """In evalkit's own process: the youngest generation is collected every ``YOUNG_THRESHOLD``
    allocations (the older generations' ratios kept). Called once, before a run starts."""
    if _claimed:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
