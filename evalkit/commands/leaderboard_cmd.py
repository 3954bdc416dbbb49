"""`evalkit leaderboard ...` (being built)."""

from __future__ import annotations

import typer

leaderboard_app = typer.Typer(help="Static leaderboard site from run directories.", no_args_is_help=True)


@leaderboard_app.command()
def build() -> None:
    """(being built)"""
    raise typer.Exit(2)
