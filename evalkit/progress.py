"""Rich progress display of a run: a phase row (reading data, loading model, loading judges,
generating, judging, finalizing) and one row per task with what is done, a cumulative rate, a live
ETA and the errors. Multi-turn tasks count and time turns (a sample of 20 turns is one slow step
otherwise); resumed work counts as done but never into the rate.

The rows' numbers are plain Python here; the rich display (``progress_view``) is imported only
when it is shown: ``--no-progress`` runs (benchmarks, CI, nightly jobs) never load rich's ~60 ms
of modules before their first request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: the phases in the order a run goes through them (``RunProgress.phase`` takes one of these)
PHASES = (
    "reading data",
    "loading model",
    "loading judges",
    "generating",
    "judging",
    "finalizing",
)


@dataclass
class Counts:
    """One task row's numbers. The rate and ETA count turns for a multi-turn task (``by_turn``),
    samples otherwise; ``fresh`` is those units done by this session, ``started`` its clock."""

    samples_total: int | None
    turns_total: int | None
    samples: int = 0
    #: samples whose turns are all answered (judged or not): "0/15 (15 answered)" while the
    #: judges load their models tells a waiting run from a stuck one
    answered: int = 0
    turns: int = 0
    fresh: int = 0
    errors: int = 0
    started: float = 0.0

    @property
    def by_turn(self) -> bool:
        """More turns than samples: the task is multi-turn."""
        return (
            self.turns_total is not None
            and self.samples_total is not None
            and (self.turns_total > self.samples_total)
        )

    def remaining(self) -> int | None:
        """Units still to do (None when the total is unknown)."""
        total = self.bar_total()
        return None if total is None else max(0, total - self.bar_done())

    def bar_total(self) -> int | None:
        return self.turns_total if self.by_turn else self.samples_total

    def bar_done(self) -> int:
        return self.turns if self.by_turn else self.samples


def rate_and_eta(fresh: int, remaining: int | None, elapsed: float) -> tuple[float | None, float | None]:
    """Cumulative rate (units per second since the session's first unit of work) and the time left
    at that rate; None where there is nothing to measure yet. Cumulative, not a sliding window: a
    run whose answers all come from the cache is over before any window fills."""
    if fresh <= 0 or elapsed <= 0:
        return None, (0.0 if remaining == 0 else None)
    rate = fresh / elapsed
    return rate, (None if remaining is None else remaining / rate)


def clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: short enough for an 80-column row."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def stats_text(counts: Counts, now: float) -> str:
    """``3/10 turns 12/40  1.52 turns/s  ETA 0:23  1 err`` for one task row (errors only when
    there are some): with the task name and the bar, one line of an 80-column terminal."""
    unit = "turns" if counts.by_turn else "samples"
    total = "?" if counts.samples_total is None else str(counts.samples_total)
    done = f"{counts.samples}/{total}"
    if counts.by_turn:
        done = f"{done} turns {counts.turns}/{counts.turns_total}"
    elif counts.answered > counts.samples:
        done = f"{done} ({counts.answered} answered)"
    rate, eta = rate_and_eta(counts.fresh, counts.remaining(), now - counts.started)
    pace = f"{rate:.2f} {unit}/s" if rate is not None else f"– {unit}/s"
    left = f"ETA {clock(eta)}" if eta is not None else "ETA –"
    errors = f"  {counts.errors} err" if counts.errors else ""
    return f"{done}  {pace}  {left}{errors}"


class RunProgress:
    """Thin wrapper so the runner does not depend on rich's API (and tests can turn it off)."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        #: rich's display; None with ``--no-progress``, where nothing is shown
        self._progress: Any = None
        if enabled:
            from evalkit.progress_view import rich_progress

            self._progress = rich_progress(console)
        self._ids: dict[str, int] = {}
        self.counts: dict[str, Counts] = {}
        self._phase_id: int | None = None
        self.current_phase: str | None = None

    @property
    def enabled(self) -> bool:
        """False with ``--no-progress``: nothing is shown, so the totals need not be counted."""
        return self._progress is not None

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """On an error the rows vanish (``transient``): the ``error:`` line stands alone, also where
        stderr is no terminal and rich would otherwise print the last frame before it."""
        if self._progress is None:
            return
        if exc_type is not None:
            self._progress.live.transient = True
        self._progress.stop()

    def phase(self, name: str, detail: str = "") -> None:
        """Show what the run is doing now (one of ``PHASES``); its clock restarts."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; one of {PHASES}")
        self.current_phase = name
        if self._progress is None:
            return
        if self._phase_id is None:
            self._phase_id = self._progress.add_task(name, total=None, detail=detail)
        else:
            self._progress.reset(self._phase_id, description=name, detail=detail)

    def add_task(self, name: str, total: int | None, turns: int | None = None) -> None:
        """A task row; ``turns``: the turns its samples answer in all (multi-turn tasks)."""
        counts = Counts(samples_total=total, turns_total=turns, started=time.monotonic())
        self.counts[name] = counts
        if self._progress is not None:
            self._ids[name] = self._progress.add_task(name, total=counts.bar_total(), counts=counts)

    def _sync(self, name: str) -> None:
        if self._progress is None:  # nothing is drawn: no bookkeeping per turn
            return
        counts = self.counts[name]
        self._progress.update(self._ids[name], total=counts.bar_total(), completed=counts.bar_done())

    def turn(self, name: str, fresh: bool = True) -> None:
        """One turn answered (``fresh``: by this session; False: found in the resumed run)."""
        counts = self.counts[name]
        counts.turns += 1
        if fresh and counts.by_turn:
            counts.fresh += 1
        self._sync(name)

    def answered(self, name: str) -> None:
        """Every turn of one sample is answered; its judges may still be running."""
        self.counts[name].answered += 1

    def drop_turns(self, name: str, n: int) -> None:
        """A sample stopped at a failed turn: its ``n`` later turns will never be asked."""
        counts = self.counts[name]
        if counts.turns_total is not None and n > 0:
            counts.turns_total -= n
            self._sync(name)

    def advance(self, name: str, error: bool = False, resumed: bool = False, turns: int = 0) -> None:
        """One sample finished (judged). ``resumed``: it was already finished before this session
        (its ``turns`` count as done, never into the rate)."""
        counts = self.counts[name]
        counts.samples += 1
        counts.errors += int(error)
        if resumed:
            counts.answered += 1
            counts.turns += turns
        elif not counts.by_turn:
            counts.fresh += 1
        self._sync(name)
