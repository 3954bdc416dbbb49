"""`evalkit nightly` (being built)."""

from __future__ import annotations

import typer


def nightly() -> None:
    """(being built)"""
    raise typer.Exit(2)
