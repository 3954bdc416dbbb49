"""`evalkit score`: judge a finished run again from its samples.jsonl and responses.jsonl, with no
call to the model under test (``evalkit.rescore``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def score(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory")],
    judges: Annotated[
        str | None,
        typer.Option(help="Comma-separated judges to run (default: each task's own judges)"),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Samples judged at a time", min=1)] = 8,
    finalize_only: Annotated[
        bool,
        typer.Option(
            "--finalize-only",
            help="Judge nothing: sort the files, rewrite summary.json and report.html (after a full disk)",
        ),
    ] = False,
) -> None:
    """Re-judge a finished run in place (under its lock): new scores.jsonl, summary.json, report.html."""
    from evalkit.errors import EvalkitError
    from evalkit.rescore import refinalize, rescore

    names = [j.strip() for j in (judges or "").split(",") if j.strip()] or None
    try:
        if finalize_only and names:
            raise EvalkitError("--finalize-only judges nothing: drop --judges, or drop --finalize-only")
        store = refinalize(run_dir) if finalize_only else rescore(run_dir, names, concurrency)
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{'finalized' if finalize_only else 're-judged'} {store.root}")
    typer.echo(f"report: {store.root / 'report.html'}")
