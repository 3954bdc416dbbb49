"""`evalkit merge` (being built)."""

from __future__ import annotations

import typer


def merge() -> None:
    """(being built)"""
    raise typer.Exit(2)
