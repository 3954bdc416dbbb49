"""`evalkit study build|serve|analyze|arena|export-preferences`: human preference studies.

Only typer at import time (``evalkit --help`` stays fast); ``evalkit.study`` is imported when a
command runs. User mistakes are one ``error:`` line and exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

study_app = typer.Typer(
    help="Blind A/B listening studies, their analysis, the arena judge and preference data.",
    no_args_is_help=True,
)

RunsArg = Annotated[
    list[Path], typer.Argument(help="Run directories (two or more) that ran the same samples")
]
UnitOption = Annotated[
    str, typer.Option(help="What one pair compares: conversation (whole) or turn (one exchange)")
]
SeedOption = Annotated[int, typer.Option(help="Seed for the trial order, sides and bootstrap CIs")]
ResamplesOption = Annotated[int, typer.Option(help="Bootstrap resamples for the CIs", min=50)]
StudyOption = Annotated[
    list[Path] | None, typer.Option("--study", help="Study folder (its key.json) for page votes; repeatable")
]


def _guarded(action: Callable[[], Any]) -> Any:
    """Run ``action``; an ``EvalkitError`` is one ``error:`` line and exit 2."""
    from evalkit.errors import EvalkitError

    try:
        return action()
    except EvalkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _unit(unit: str) -> str:
    from evalkit.errors import EvalkitError

    if unit not in ("conversation", "turn"):
        raise EvalkitError(f"--unit {unit!r}: use conversation or turn")
    return unit


@study_app.command()
def build(
    runs: RunsArg,
    out: Annotated[Path, typer.Option(help="Folder that receives the study (new, empty, or a study)")],
    unit: UnitOption = "conversation",
    seed: SeedOption = 0,
    max_trials: Annotated[
        int | None, typer.Option(help="At most N pairs (drawn with the seed)", min=1)
    ] = None,
    repeats: Annotated[
        int, typer.Option(help="Pairs shown again with sides swapped (attention check)", min=0)
    ] = 3,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Show the replies' text beside their audio")
    ] = False,
    title: Annotated[str, typer.Option(help="The page's title")] = "Listening study",
) -> None:
    """A static blind A/B listening page over the items the runs share. Open OUT/index.html from
    disk or any static host (without OUT/key.json: the key says which model is which)."""
    from evalkit.study.build import build_study

    page = _guarded(
        lambda: build_study(
            runs,
            out,
            unit=_unit(unit),
            seed=seed,
            max_trials=max_trials,
            repeats=repeats,
            show_text=show_text,
            title=title,
        )
    )
    typer.echo(f"study page: {page}")
    typer.echo(f"key (keep private, analyze reads it): {page.parent / 'key.json'}")


@study_app.command()
def serve(
    study_dir: Annotated[Path, typer.Argument(help="The folder `evalkit study build` made")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this machine only)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one)", min=0, max=65535)] = 8765,
    db: Annotated[
        Path | None, typer.Option(help="SQLite file for the votes (default STUDY_DIR/votes.sqlite)")
    ] = None,
) -> None:
    """Serve the study page and store every rater's votes in SQLite, until Ctrl-C."""
    from evalkit.study.serve import make_server

    server = _guarded(lambda: make_server(study_dir, host=host, port=port, db=db))
    address, bound = server.server_address[:2]
    typer.echo(
        f"serving the study at http://{address}:{bound}/ "
        f"(votes: {db or study_dir / 'votes.sqlite'}); Ctrl-C stops"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()


@study_app.command()
def analyze(
    votes: Annotated[
        list[Path],
        typer.Argument(
            help="Votes: the page's .jsonl exports, .csv (rater,item,a,b,winner), serve's .sqlite"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for results.json and results.html")],
    study: StudyOption = None,
    runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--runs",
            help="The studied runs: also measure how each of their judges' metrics agrees with the people",
        ),
    ] = None,
    seed: SeedOption = 0,
    resamples: ResamplesOption = 1000,
) -> None:
    """Bradley-Terry ratings with bootstrap CIs, win rates and Krippendorff's alpha per criterion;
    raters failing the attention checks are excluded and counted."""
    from evalkit.study.analyze import analyze as run_analysis

    results = _guarded(
        lambda: run_analysis(votes, out, studies=study or [], runs=runs or [], seed=seed, resamples=resamples)
    )
    raters = results["raters"]
    typer.echo(f"raters: {raters['n']} ({raters['n_excluded']} excluded by the attention checks)")
    _echo_rankings(results, out)


@study_app.command()
def arena(
    runs: RunsArg,
    judge: Annotated[
        str | None, typer.Option(help="Judge model spec (default: $EVALKIT_ARENA_JUDGE)")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for arena.jsonl, calls/, results.json and results.html")
    ] = Path("arena"),
    mode: Annotated[
        str, typer.Option(help="audio (the judge hears both sides) or text (it reads them)")
    ] = "audio",
    unit: UnitOption = "conversation",
    concurrency: Annotated[int, typer.Option(help="Comparisons in flight", min=1)] = 4,
    revision: Annotated[
        str | None, typer.Option(help="Pin the judge model (its answers are cached across runs)")
    ] = None,
    votes: Annotated[
        list[Path] | None, typer.Option("--votes", help="Human votes: also report the judge's agreement")
    ] = None,
    study: StudyOption = None,
    seed: SeedOption = 0,
    resamples: ResamplesOption = 1000,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the response cache")
    ] = False,
) -> None:
    """A judge model compares every pair of runs on every shared item (both orders, ties allowed);
    Bradley-Terry over the models; with --votes, its agreement with people."""
    from evalkit.errors import EvalkitError
    from evalkit.study.arena import run_arena

    def go() -> dict[str, Any]:
        if mode not in ("audio", "text"):
            raise EvalkitError(f"--mode {mode!r}: use audio or text")
        return run_arena(
            runs, judge, out, mode=mode, unit=_unit(unit), concurrency=concurrency, revision=revision,
            votes=votes or [], studies=study or [], seed=seed, resamples=resamples, use_cache=not no_cache,
        )  # fmt: skip

    results = _guarded(go)
    info = results["judge"]
    typer.echo(f"judged {info['n_comparisons']} comparisons ({info['n_errors']} judge errors)")
    _echo_rankings(results, out)


@study_app.command("export-preferences")
def export_preferences(
    out: Annotated[Path, typer.Option(help="The preference file to write (JSONL)")],
    fmt: Annotated[
        str, typer.Option("--format", help="Layout: trl (prompt/chosen/rejected, conversational)")
    ] = "trl",
    votes: Annotated[
        list[Path] | None, typer.Option("--votes", help="Human votes (.jsonl, .csv, .sqlite)")
    ] = None,
    study: StudyOption = None,
    arena_dir: Annotated[
        Path | None, typer.Option("--arena", help="An `evalkit study arena` folder instead of votes")
    ] = None,
    runs: Annotated[
        list[Path] | None, typer.Option("--runs", help="Run directories (needed for CSV votes)")
    ] = None,
    criterion: Annotated[str, typer.Option(help="Which criterion decides chosen vs rejected")] = "overall",
) -> None:
    """Chosen/rejected pairs with their shared context, text and audio paths, and provenance."""
    from evalkit.study.preferences import export_preferences as export

    counts = _guarded(
        lambda: export(
            out,
            votes=votes or [],
            studies=study or [],
            arena=arena_dir,
            runs=runs or [],
            criterion=criterion,
            fmt=fmt,
        )
    )
    typer.echo(
        f"{counts['n_pairs']} preference pairs ({counts['n_even']} even items left out): {counts['path']}"
    )


def _echo_rankings(results: dict, out: Path) -> None:
    """Each criterion's models, best first with their ratings, then where the results page is
    (``study analyze`` and ``study arena`` print the same)."""
    from evalkit.study.analyze import RESULTS_HTML

    for criterion, result in results["criteria"].items():
        ranked = ", ".join(f"{m} {result['models'][m]['rating']:.0f}" for m in result["ranking"])
        typer.echo(f"{criterion}: {ranked}")
    typer.echo(f"results: {out / RESULTS_HTML}")
