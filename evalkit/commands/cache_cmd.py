"""`evalkit cache info|clear`: what the response cache holds, and emptying it.

The cache (``evalkit.cache``) keeps answers by request and model identity. ``info`` lists its
entries per model spec and scope (``pinned``: shared by every run of a pinned model; ``one run``:
an unpinned model's answers, serving only that run's ``--resume``), and its audio blobs. ``clear``
deletes every entry and blob (a running evaluation keeps working: it just asks again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

cache_app = typer.Typer(help="Inspect or empty the response cache.", no_args_is_help=True)

CachePathOption = Annotated[
    Path | None, typer.Option(help="Response cache file (default: the user cache, or $EVALKIT_CACHE_DIR)")
]


def _open(cache_path: Path | None):
    from evalkit.cache import ResponseCache
    from evalkit.paths import response_cache_path

    return ResponseCache(cache_path or response_cache_path())


@cache_app.command()
def info(cache_path: CachePathOption = None) -> None:
    """Entries per model and scope, and the audio blobs beside them."""
    cache = _open(cache_path)
    try:
        data = cache.info()
    finally:
        cache.close()
    typer.echo(f"cache: {data['path']}")
    typer.echo(f"entries: {data['entries']}; audio blobs: {data['blobs']} ({data['blob_bytes']} bytes)")
    for row in data["models"]:
        typer.echo(f"  {row['entries']:>8}  {row['scope']:<24} {row['model']}")


@cache_app.command()
def clear(
    cache_path: CachePathOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete every cached answer and audio blob."""
    cache = _open(cache_path)
    try:
        if not yes:
            typer.confirm(f"delete every entry of {cache.path}?", abort=True)
        count = cache.clear()
    finally:
        cache.close()
    typer.echo(f"cleared {count} entries from {cache.path}")
