"""What a run's end needs, imported in a background thread while its requests are in flight.

Why: the end of every run (``finalize``: summary.json and report.html; the CLI's summary table)
imports ~0.15 s of modules (jinja2, the report's, rich's table) and loads the compiled report
template. Done there, that time is added after the last answer, to every run's wall clock. Once
every sample is in flight (the runner's sample iterator is exhausted), the event loop mostly
waits in ``select()`` for the last answers, with the GIL released: a thread started then does
that work in time the run waits anyway. Started with the request phase instead, it competed with
the first wave of requests for the GIL and lengthened the phase by more than it saved
(``benchmarks/floor.py`` measured both). Imports are idempotent and serialised by the import
system's per-module locks, so the end simply finds the modules loaded, or waits for the one the
thread is loading. Nothing here changes what the run computes.
"""

from __future__ import annotations

import importlib
import threading

#: the modules a run's end imports, in the order it imports them
FINISH_MODULES = (
    "evalkit.finalize",
    "evalkit.reports.charts",
    "evalkit.reports.html",
    "evalkit.reports.long_turn",
    "jinja2",
    "rich.console",
    "rich.table",
)


def warm_finish(modules: tuple[str, ...] = FINISH_MODULES) -> threading.Thread:
    """Start importing ``modules`` (then loading the report template and building the manifest's
    and summary's validators) in a daemon thread; join it before the end needs them
    (``finish_warm``)."""
    thread = threading.Thread(target=_load, args=(modules,), name="evalkit-warmup", daemon=True)
    thread.start()
    return thread


def finish_warm(thread: threading.Thread | None) -> None:
    """Wait for the warm-up (normally over long before): the end then runs with the GIL its own."""
    if thread is not None:
        thread.join()


def _load(modules: tuple[str, ...]) -> None:
    try:
        for name in modules:
            importlib.import_module(name)
        from evalkit.reports.html import report_template
        from evalkit.run_files import Manifest, Summary

        report_template()
        for model in (Manifest, Summary):  # their validators are built on first use (defer_build)
            model.model_rebuild()
    except Exception:  # noqa: BLE001 - the end imports and loads the same again, and raises there
        return
