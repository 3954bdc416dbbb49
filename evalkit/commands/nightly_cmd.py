"""`evalkit nightly CONFIG.yaml`: run the suite, compare with the baselines, keep the history.

Exit codes: 0 = no model regressed, 1 = at least one metric of one model is significantly worse
than its baseline or a gate failed (``evalkit.compare``'s rules), 2 = bad config, missing
baseline, an unreachable model or runs that cannot be compared (one ``error:`` line),
130 = interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def nightly(
    config: Annotated[Path, typer.Argument(help="Nightly suite config (YAML; see examples/nightly.yaml)")],
    update_baseline: Annotated[
        bool,
        typer.Option(
            "--update-baseline",
            help="Make tonight's runs the baselines (after comparing with the old ones, if any)",
        ),
    ] = False,
    date: Annotated[
        str | None, typer.Option(help="Date of the night, YYYY-MM-DD (default: today; for backfills)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bars of the runs")] = False,
) -> None:
    """Run a suite of models x tasks, compare each run with its baseline run, append to the
    history, write the comparisons (md + html); exit 1 on any regression."""
    from evalkit.errors import EvalkitError
    from evalkit.nightly import run_nightly

    try:
        result = run_nightly(config, update_baseline=update_baseline, date=date, show_progress=progress)
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished runs and history lines are kept", err=True)
        raise typer.Exit(130) from None
    for night in result.models:
        if night.baseline_dir is None:
            status = "no baseline yet"
        elif night.exit_code:
            failed = [*night.record["regressions"], *night.record.get("gate_failures", [])]
            status = "REGRESSED: " + "; ".join(failed)
        else:
            status = "no regression"
        typer.echo(f"{night.model}: {status}; run {night.run_dir}")
        if night.markdown is not None:
            typer.echo(f"  comparison: {night.markdown} (and .html)")
        if night.record["baseline_updated"]:
            typer.echo("  baseline updated to this run")
    typer.echo(f"night folder: {result.folder}")
    if result.site is not None:
        typer.echo(f"site: {result.site}")
    raise typer.Exit(result.exit_code)
