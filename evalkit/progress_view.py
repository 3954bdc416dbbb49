"""The rich display of ``progress.RunProgress``: a phase row and one row per task (bar and the
numbers of ``progress.stats_text``). Its own module so that a run without a display never imports
rich (see ``progress``)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from evalkit.progress import clock, stats_text


class StatsColumn(ProgressColumn):
    """The row's numbers, computed at every refresh (rich's own speed and ETA columns use a 30 s
    window of completions: 0.00/s after a run served from the cache, and a frozen ETA between
    slow completions). The phase row shows its detail and how long the phase has taken."""

    def render(self, task: Task) -> Text:
        counts = task.fields.get("counts")
        if counts is None:  # the phase row
            return Text(f"{clock(task.elapsed or 0.0)}  {task.fields.get('detail', '')}", style="dim")
        return Text(stats_text(counts, time.monotonic()), style="red" if counts.errors else "")


def rich_progress(console: Console | None = None) -> Progress:
    """The display, drawn on ``console`` (stderr by default)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=8),
        StatsColumn(),
        console=console or Console(file=sys.stderr),
    )
