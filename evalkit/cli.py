"""The ``evalkit`` command line (typer).

Only typer is imported at module level: every command imports what it needs when it runs, so
``evalkit --help`` stays fast and never loads torch. User mistakes (``EvalkitError``) print as one
``error:`` line and exit 2; an interrupted run exits 130 with its files intact.
"""

from __future__ import annotations

import sys
from pathlib import Path
from shlex import quote
from typing import Annotated, Any, NoReturn

import typer

#: the app's settings (``invoked_app`` makes a one-command app with the same)
APP_SETTINGS: dict[str, Any] = {
    "help": "Evaluate audio language models on multi-turn spoken dialogue.",
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
}
app = typer.Typer(**APP_SETTINGS)


def _fail(message: str, code: int = 2) -> None:
    """One ``error:`` line, with URL credentials and the API key's value redacted."""
    from evalkit.manifest import redact_text, secret_values

    typer.echo(f"error: {redact_text(message, secret_values(['OPENAI_API_KEY']))}", err=True)
    raise typer.Exit(code)


#: ``evalkit run --help``'s examples, each line short enough for an 80-column terminal
RUN_EXAMPLES = """Examples:

  evalkit run --model cascade --tasks demo   (the offline demo, as make demo)

  evalkit run --model openai:gpt-4o-audio-preview@https://api.openai.com/v1 \\
    --tasks demo --limit 5

  evalkit run --model step-audio-r1.5 --base-url http://localhost:8000/v1 \\
    --tasks mmau-mini --name "Step-Audio R1.5"

  evalkit run --model cascade:tts=none --tasks mmau-mini --data ~/data/mmau

  evalkit run --resume runs/20261201-120000_cascade_demo_1a2b3c
"""


@app.command(epilog=RUN_EXAMPLES)
def run(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model spec: openai:MODEL@URL, a model card (step-audio-r1.5; see `evalkit list models`), "
            "hf:PATH, cascade[:asr=..,llm=..,tts=..]"
        ),
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated task names (see `evalkit list tasks`)")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Display name of the model in reports and the leaderboard (kept in the manifest)"),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Local copy of the (one) task's dataset: folder or JSON/JSONL/parquet file"),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N samples of each task", min=1)] = None,
    concurrency: Annotated[
        int, typer.Option(help="Samples in flight (and requests to the endpoint)", min=1)
    ] = 8,
    out: Annotated[Path, typer.Option(help="Folder that receives the run directory")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run directory")] = None,
    seed: Annotated[int, typer.Option(help="Seed for generation and bootstrap CIs")] = 0,
    max_tokens: Annotated[
        int | None, typer.Option(help="Token budget per reply; beats the model card and the task", min=1)
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature; beats the model card and the task", min=0)
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Nucleus sampling; beats the model card and the task", min=0, max=1)
    ] = None,
    reasoning_budget: Annotated[
        list[str] | None,
        typer.Option(
            help="Sweep: one run per budget N (max_tokens = N), repeatable or a comma list; "
            "lay them side by side with `evalkit report --compare-budgets RUN...`"
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the response cache")
    ] = False,
    cache_path: Annotated[Path | None, typer.Option(help="Response cache file (default: user cache)")] = None,
    retries: Annotated[int, typer.Option(help="Attempts per request on transient errors", min=1)] = 5,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key")
    ] = "OPENAI_API_KEY",
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            help="OpenAI-compatible server for a model card or openai:MODEL spec (http://HOST:PORT/v1); "
            "repeat it for several replicas of one model: requests go to the least busy healthy one"
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only shard I of N (I/N, 1-based) of every task's samples; join with `evalkit merge`"
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(help="Where model replicas run: local (this process) or ray (actors on a Ray cluster)"),
    ] = "local",
    replicas: Annotated[
        int | None,
        typer.Option(help="Model replicas for --executor ray (default: one per GPU, or 2 on CPU)", min=1),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar")] = True,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds one attempt of a request may take in all (a wall-clock deadline, not an idle "
            "one); default: the model card's timeout, else 600 for HTTP models",
            min=0.001,
        ),
    ] = None,
    request_budget: Annotated[
        float | None,
        typer.Option(help="Seconds one request may take across all its retries and waits", min=0.001),
    ] = None,
    model_revision: Annotated[
        str | None,
        typer.Option(
            help="Pin the model's identity (a checkpoint tag or commit you vouch for): only a pinned "
            "model's cached answers serve other runs; unpinned, the cache serves --resume only"
        ),
    ] = None,
    allow_path: Annotated[
        list[Path] | None,
        typer.Option(
            help="Also let samples name files in DIR (repeatable); by default a path must stay "
            "inside its dataset's folder, and anything outside is an input_path error, never read"
        ),
    ] = None,
) -> None:
    """Run an evaluation (or --resume one) and write a run directory with report.html.

    Needs --model and --tasks (or --resume RUN_DIR); names, data paths and options are checked
    before the model loads."""
    from evalkit.errors import EvalkitError
    from evalkit.own_process import collect_less, freeze_live_objects
    from evalkit.runner import RunConfig, Terminated, evaluate

    freeze_live_objects()  # the startup objects: never garbage, walked by every full collection
    collect_less()
    if resume is not None:
        try:
            check_resume_options(ctx)
        except EvalkitError as exc:
            _fail(str(exc))
    elif model is None or tasks is None:
        missing = " and ".join(f for f, v in (("--model", model), ("--tasks", tasks)) if v is None)
        typer.echo(ctx.get_usage(), err=True)
        typer.echo(
            f"error: {missing} missing; e.g. `evalkit run --model cascade --tasks demo` (see --help)",
            err=True,
        )
        raise typer.Exit(2)
    if data is not None:
        try:
            tasks = with_data_option(tasks, data)
        except EvalkitError as exc:
            _fail(str(exc))
    config = RunConfig(
        model=model or "",
        tasks=tasks or "",
        name=name,
        limit=limit,
        concurrency=concurrency,
        seed=seed,
        out_dir=str(out),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        use_cache=not no_cache,
        cache_path=str(cache_path) if cache_path else None,
        max_attempts=retries,
        model_options=model_options(api_key_env, base_url, timeout),
        shard=shard,
        executor=executor,
        replicas=replicas,
        timeout=timeout,
        request_budget=request_budget,
        model_revision=model_revision,
        allow_paths=[str(p.expanduser().absolute()) for p in allow_path or []],
    )
    try:
        configs = budget_configs(config, reasoning_budget, resume)
        stores = [evaluate(c, resume_dir=resume, argv=sys.argv, show_progress=progress) for c in configs]
    except EvalkitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): the same, resumable stop
        typer.echo(interrupt_message(exc), err=True)
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    for store in stores:
        _print_summary(store)
        typer.echo(f"report: {store.root / 'report.html'}")
    if reasoning_budget:
        runs = " ".join(str(s.root) for s in stores)
        typer.echo(f"compare the budgets: evalkit report --compare-budgets {runs}")


def interrupt_message(exc: KeyboardInterrupt) -> str:
    """What to type next after Ctrl-C / SIGTERM: the resume command with the run's own folder
    (``Interrupted.run_dir``), or that nothing was written when the run stopped before it."""
    from evalkit.runner import Terminated

    how = "terminated" if isinstance(exc, Terminated) else "interrupted"
    run_dir = getattr(exc, "run_dir", None)
    if run_dir is None:
        return f"{how} before the run directory was made; nothing to resume"
    return f"{how}: finished requests are saved; continue with: evalkit run --resume {quote(str(run_dir))}"


def budget_configs(config: Any, budgets: list[str] | None, resume: Path | None) -> list[Any]:
    """One run per ``--reasoning-budget`` value (its max_tokens = the budget, so the manifest
    records it with source ``cli``); without the option, the run itself."""
    from dataclasses import replace

    from evalkit.errors import EvalkitError

    if not budgets:
        return [config]
    if resume is not None or config.max_tokens is not None:
        raise EvalkitError("--reasoning-budget sets max_tokens per run: drop --max-tokens / --resume")
    values = [piece.strip() for item in budgets for piece in item.split(",") if piece.strip()]
    if not values or not all(v.isdigit() and int(v) > 0 for v in values):
        raise EvalkitError(
            f"--reasoning-budget {','.join(budgets)!r}: give positive token counts, e.g. 1024,4096"
        )
    return [replace(config, max_tokens=int(v)) for v in dict.fromkeys(values)]


#: the only options a ``--resume`` may set: they pace or show the session, never change an answer
RESUME_OPTIONS = frozenset({"resume", "concurrency", "progress"})


def check_resume_options(ctx: typer.Context) -> None:
    """``--resume`` continues a run with the settings its manifest recorded; any other option given
    on the command line would be silently ignored (or, worse, half applied), so it is refused."""
    from evalkit.errors import EvalkitError

    def typed(name: str | None) -> bool:  # by name: typer ships its own copy of click's enum
        source = ctx.get_parameter_source(name) if name else None
        return source is not None and source.name == "COMMANDLINE"

    given = [p for p in ctx.command.params if p.name not in RESUME_OPTIONS and typed(p.name)]
    if given:
        flags = ", ".join(p.opts[0] for p in given)
        raise EvalkitError(
            f"--resume continues a run with the settings in its manifest; {flags} cannot be changed on "
            "resume (only --concurrency and --progress can): drop it, or start a new run"
        )


def model_options(
    api_key_env: str, base_url: list[str] | str | None, timeout: float | None = None
) -> dict[str, Any]:
    """Options handed to the model adapter (and kept in the manifest, so ``--resume`` reaches the
    same servers). ``base_url`` only when given: adapters that are not HTTP clients never see it.
    One URL stays a string; several become a list (one replica each). ``timeout`` (``--timeout``)
    also sets an HTTP client's own timeout, so that it is never tighter than the deadline."""
    options: dict[str, Any] = {"api_key_env": api_key_env}
    if timeout is not None:
        options["timeout"] = timeout
    urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
    if len(urls) == 1:
        options["base_url"] = urls[0]
    elif urls:
        options["base_url"] = urls
    return options


def with_data_option(tasks: str, data: str) -> str:
    """``--tasks mmau-mini --data DIR`` -> ``mmau-mini:data=DIR`` (kept in the manifest, so
    ``--resume`` finds the same data). Several tasks take ``NAME:data=PATH`` each instead."""
    from evalkit.errors import EvalkitError
    from evalkit.tasks.base import split_task_list

    items = split_task_list(tasks)
    if len(items) != 1:
        raise EvalkitError("--data needs exactly one task in --tasks; for several, write NAME:data=PATH each")
    if "," in data or "=" in data:
        raise EvalkitError(f"--data {data!r}: a path with ',' or '=' cannot go in a task spec; rename it")
    return f"{items[0]},data={data}" if ":" in items[0] else f"{items[0]}:data={data}"


def _print_summary(store) -> None:
    from rich.console import Console

    from evalkit.summary import truncation_warnings

    summary = store.summary()
    Console(stderr=False).print(summary_table(summary, store.run_id))
    for line in truncation_warnings(summary):
        typer.echo(line, err=True)
    typer.echo(f"run directory: {store.root}")


def summary_table(summary: Any, run_id: str) -> Any:
    """The run's scores as a rich table that reads at 80 columns: each task is a heading row (no
    task column), only the metric names wrap, and the counts (scored, parse failures, errors) and
    the value with its CI never shrink."""
    from rich import box
    from rich.table import Table
    from rich.text import Text  # names as plain text: a '[' in a file-derived task name is no markup

    table = Table(
        title=f"run {run_id}", box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False
    )
    table.add_column("task / judge / metric", overflow="fold", min_width=12)
    table.add_column("value [95% CI]", no_wrap=True)
    for column in ("scored", "parse\nfail", "errors"):  # a two-line header: 5 more for the names
        table.add_column(column, justify="right", no_wrap=True)
    for task_name, task in summary.tasks.items():
        table.add_row(Text(task_name, style="bold"), "", "", "", "")
        for judge_name, judge in task.judges.items():
            errors = str(judge.n_model_errors + judge.n_judge_errors)
            scored = f"{judge.n_scored}/{judge.n}"
            if not judge.metrics:
                table.add_row(Text(judge_name), "no scored samples", scored, "–", errors)
            for metric, m in judge.metrics.items():
                ci = "" if m.ci_low is None or m.ci_high is None else f" [{m.ci_low:.3f}, {m.ci_high:.3f}]"
                value = "–" if m.value is None else f"{m.value:.3f}"
                row = (f"{value}{ci}", scored, str(judge.n_parse_failures), errors)
                table.add_row(Text(f"{judge_name} / {metric}"), *row)
        table.add_section()  # a rule between tasks
    return table


@app.command("list")
def list_(kind: Annotated[str, typer.Argument(help="models, tasks or judges")]) -> None:
    """List registered models (adapter kinds), tasks or judges."""
    from evalkit import registry

    registries = {"models": registry.models, "tasks": registry.tasks, "judges": registry.judges}
    if kind not in registries:
        _fail(f"unknown kind {kind!r}; use one of: models, tasks, judges")
    for name, doc in registries[kind].describe():
        typer.echo(f"{name:22} {doc}")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories")],
    compare_budgets: Annotated[
        bool,
        typer.Option(
            "--compare-budgets",
            help="The runs are one --reasoning-budget sweep: write the accuracy vs reasoning tokens chart",
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="With --compare-budgets: the page to write")] = Path(
        "budgets.html"
    ),
) -> None:
    """(Re)render report.html of finished run directories (the data files are read, never
    rewritten), or (--compare-budgets) lay a reasoning-budget sweep side by side."""
    from evalkit.errors import EvalkitError
    from evalkit.reports.html import write_report
    from evalkit.store import RunStore

    try:
        if compare_budgets:
            from evalkit.reports.budgets import budget_table, write_budget_report

            page, sweep = write_budget_report(run_dirs, out)
            typer.echo(budget_table(sweep))
            typer.echo(f"budgets: {page}")
            return
        for run_dir in run_dirs:
            # the lock: never render beside a live writer (the files may be half sorted)
            with RunStore.open_existing(run_dir).locked() as store:
                write_report(store)
            typer.echo(f"report: {run_dir / 'report.html'}")
    except EvalkitError as exc:
        _fail(str(exc))


def _register_subcommands() -> None:
    """Commands kept in evalkit/commands/ (one module each, imports lazy inside the command)."""
    from evalkit.commands.cache_cmd import cache_app
    from evalkit.commands.compare_cmd import compare
    from evalkit.commands.leaderboard_cmd import leaderboard_app
    from evalkit.commands.merge_cmd import merge
    from evalkit.commands.nightly_cmd import nightly
    from evalkit.commands.score_cmd import score
    from evalkit.commands.study_cmd import study_app

    app.command()(compare)
    app.command()(nightly)
    app.command()(merge)
    app.command()(score)
    app.add_typer(leaderboard_app, name="leaderboard")
    app.add_typer(cache_app, name="cache")
    app.add_typer(study_app, name="study")


_register_subcommands()


def main() -> None:
    """The ``evalkit`` command: the app, then ``_leave`` with its exit status."""
    from evalkit.own_process import claim

    claim()  # this process is the command: it may tune the collector (``evalkit.own_process``)
    try:
        invoked_app(sys.argv[1:])()
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def invoked_app(args: list[str]) -> typer.Typer:
    """The app that parses ``args``: one with only the invoked command when ``args`` start with a
    top-level command's name, else the whole app (its help, a group such as ``cache``, a mistyped
    name). Why: typer builds the click object of every command (signature, type hints, options)
    before it parses anything, ~0.05 s for all of them; ``evalkit run`` needs one. The command
    parses, helps and fails exactly as in the whole app (``tests/test_cli.py`` compares them)."""
    from typer.main import get_command_name

    name = args[0] if args else None
    for info in app.registered_commands:
        if (info.name or get_command_name(info.callback.__name__)) == name:
            alone = typer.Typer(**APP_SETTINGS)
            alone.registered_commands = [info]
            # a group, as the whole app is (``run`` is a command name), with the app's own callback
            alone.registered_callback = app.registered_callback
            if alone.registered_callback is None:
                alone.callback()(_group)
            return alone
    return app


def _group() -> None:
    """The callback that makes a one-command app a group; its help is ``APP_SETTINGS``'s."""


def _leave(code: object) -> NoReturn:
    """End the process as the interpreter would, without its teardown. Why: after a run, freeing
    every module and object one by one cost ~0.1 s of each command's wall clock (issue 18) and
    writes nothing. What must happen at exit still does: other (non-daemon) threads are waited
    for, the ``atexit`` handlers run (temporary folders, logging, worker pools, Ray) and stdout and
    stderr are flushed; ``code`` is read as ``SystemExit`` reads it. An exception other than
    ``SystemExit`` never comes here: it unwinds and exits as usual, traceback and all."""
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is None or isinstance(code, int):
        status = code or 0
    else:  # SystemExit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (evalkit list | head): the status Python itself gives
            status = status or 120
    os._exit(status)


if __name__ == "__main__":
    main()
