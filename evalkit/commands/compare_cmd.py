"""`evalkit compare BASE_RUN CAND_RUN`: paired per-metric differences and regressions.

Exit codes are the contract with CI: 0 = no significant regression, 1 = at least one metric is
significantly worse (the rule is in ``evalkit.compare``) or a gate failed (the candidate's
coverage, error rates or shared items; each failure is also one line on stderr), 2 = the runs
cannot be compared (missing run directory or manifest, different dataset versions, a malformed
option) with one ``error:`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def compare(
    base_run: Annotated[Path, typer.Argument(help="The baseline run directory")],
    cand_run: Annotated[Path, typer.Argument(help="The candidate run directory")],
    min_effect: Annotated[
        float,
        typer.Option(
            help="Smallest change (absolute, in the metric's units) that counts as better/worse", min=0
        ),
    ] = 0.02,
    alpha: Annotated[
        float, typer.Option(help="Significance level (the CI level is 1 - alpha)", min=1e-6, max=0.5)
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the paired bootstrap")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples", min=100)] = 2000,
    direction: Annotated[
        list[str] | None,
        typer.Option(
            help="METRIC=higher|lower|descriptive (or JUDGE/METRIC=...): overrides the judge's declaration"
        ),
    ] = None,
    min_coverage: Annotated[
        float,
        typer.Option(help="Gate: least share of the items that the candidate must score", min=0, max=1),
    ] = 0.98,
    max_error_increase: Annotated[
        float,
        typer.Option(help="Gate: most the candidate's model/judge-error rate may exceed the base's", min=0),
    ] = 0.02,
    min_shared: Annotated[
        float,
        typer.Option(help="Gate: least share of the base's scored items scored in both runs", min=0, max=1),
    ] = 0.95,
    md: Annotated[Path | None, typer.Option(help="Also write the markdown to this file")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Write an HTML page of the comparison to this file")
    ] = None,
) -> None:
    """Compare two runs of the same tasks: paired bootstrap CIs, exact McNemar, verdict per metric;
    exit 1 on a significant regression or a failed gate (coverage, error rates, shared items)."""
    from evalkit.compare import CompareOptions, compare_runs, parse_directions, to_html, to_markdown
    from evalkit.errors import EvalkitError

    try:
        options = CompareOptions(
            min_effect=min_effect,
            alpha=alpha,
            seed=seed,
            resamples=resamples,
            directions=parse_directions(direction or []),
            min_coverage=min_coverage,
            max_error_increase=max_error_increase,
            min_shared=min_shared,
        )
        result = compare_runs(base_run, cand_run, options)
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # flipped items link into both reports relative to where the file is written (--md's folder
    # for the printed text too, so the file and the terminal say the same)
    text = to_markdown(result, links_from=md.parent if md is not None else None)
    typer.echo(text, nl=False)
    for gate in result.gate_failures:
        typer.echo(gate.message, err=True)
    page = to_html(result, links_from=html.parent) if html is not None else None
    for path, content in ((md, text), (html, page)):
        if path is not None and content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    raise typer.Exit(result.exit_code)
