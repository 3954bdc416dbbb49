"""Rich progress display: one bar per task with throughput and error counts."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: seconds between refreshes of the samples/s figure
RATE_REFRESH_S = 0.25


class RunProgress:
    """Thin wrapper so the runner does not depend on rich's API (and tests can turn it off)."""

    def __init__(self, enabled: bool = True):
        console = Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.2f} samples/s"),
            TextColumn("[red]{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._ids: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._rate_at: dict[str, float] = {}

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def add_task(self, name: str, total: int | None) -> None:
        self._ids[name] = self._progress.add_task(name, total=total, errors=0, rate=0.0)
        self._errors[name] = 0

    def advance(self, name: str, error: bool = False) -> None:
        task_id = self._ids[name]
        if error:
            self._errors[name] += 1
        self._progress.advance(task_id)
        now = time.monotonic()
        # rich's speed sums every sample of the last 30 s: once per sample that grows quadratically
        # with throughput, so the rate shown is refreshed a few times a second (errors at once)
        if error or now - self._rate_at.get(name, 0.0) >= RATE_REFRESH_S:
            self._rate_at[name] = now
            speed = self._progress.tasks[task_id].speed or 0.0
            self._progress.update(task_id, errors=self._errors[name], rate=speed)
