"""What only evalkit's own process (the ``evalkit`` command, ``cli.main``) may do to the
interpreter: take objects out of the garbage collector's view (``gc.freeze``).

Why: a run allocates millions of short-lived objects, and every full collection walks every
object alive, though most of them live until the process ends: the ~60k of startup (imported
modules, pydantic schemas), then, at the run's end, whatever the requests left (clip and digest
memos, the service's books). Freezing them once cut ~0.15 s from a 1000-request run's request
phase and ~0.06 s from its finalize (issue 18, ``benchmarks/floor.py``). Frozen objects are never
collected, which a caller's long-lived Python session (a notebook, a test's ``CliRunner``)
should not have imposed on it: there ``claim`` was never called and these calls do nothing.
"""

from __future__ import annotations

import gc

_claimed = False


def claim() -> None:
    """This process is the ``evalkit`` command itself (``cli.main`` calls it first)."""
    global _claimed
    _claimed = True


def freeze_live_objects() -> None:
    """In evalkit's own process: every object alive now leaves the collector's view for the rest
    of the process. Called after startup (``evalkit run``) and before a run's finalize."""
    if _claimed:
        gc.freeze()
