"""`evalkit leaderboard build RUNS... --out site/`: a static leaderboard site from run directories.

Only typer at import time (``evalkit --help`` stays fast); the builder is imported when run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

leaderboard_app = typer.Typer(help="Static leaderboard site from run directories.", no_args_is_help=True)


@leaderboard_app.command()
def build(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories (or folders of run directories, e.g. runs/)")
    ],
    out: Annotated[Path, typer.Option(help="Folder that receives the site (new, empty, or a site)")] = Path(
        "site"
    ),
    study: Annotated[
        list[Path] | None,
        typer.Option(
            "--study",
            help="Results of `evalkit study analyze` or `evalkit study arena` (their --out): human and "
            "arena ratings with CIs on the index page; repeatable",
        ),
    ] = None,
) -> None:
    """Build index, per-model and per-benchmark pages, history plots and data files into --out.
    Open OUT/index.html directly or serve the folder from any static host."""
    from evalkit.errors import EvalkitError
    from evalkit.leaderboard.site import build_site

    try:
        index = build_site(runs, out, studies=study or [])
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"site: {index}")
