"""`evalkit merge`: join the run directories of `evalkit run --shard I/N` into one run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def merge(
    shard_runs: Annotated[
        list[Path], typer.Argument(help="The run directories of shards 1/N ... N/N (any order)")
    ],
    out: Annotated[Path, typer.Option(help="The merged run directory to create (new or empty folder)")],
) -> None:
    """Merge the shards of one run into a run directory identical to an unsharded run's."""
    from evalkit.errors import EvalkitError
    from evalkit.merge import merge_shards

    try:
        store = merge_shards(shard_runs, out, argv=sys.argv)
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    shards = store.read_manifest()["merged"]["shards"]
    typer.echo(f"merged {len(shards)} shards into {store.root}")
    typer.echo(f"report: {store.root / 'report.html'}")
