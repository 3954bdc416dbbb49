"""Number formatting shared by report.html and the leaderboard pages, so a metric reads the same
(three decimals, "–" for missing) wherever it is published."""

from __future__ import annotations

from typing import Any

MISSING = "–"


def fmt_value(value: Any) -> str:
    """A metric or fact: floats to three decimals, missing as "–", anything else as text."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
