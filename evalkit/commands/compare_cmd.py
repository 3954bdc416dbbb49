"""`evalkit compare` (being built)."""

from __future__ import annotations

import typer


def compare() -> None:
    """(being built)"""
    raise typer.Exit(2)
