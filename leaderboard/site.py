"""``build_site(run_dirs, out)``: many run directories -> a static leaderboard site.

Layout of ``out`` (every link relative, so the folder works from ``file://`` and any static host)::

    index.html                      overall table + one table per benchmark and dataset version
    models/<model-slug>.html        latest results, history plot, every run with its report
    benchmarks/<task-slug>.html     every dataset version of one benchmark, every run of it
    runs/<run_id>/report.html       copy of the run's report (+ local files it links),
                  manifest.json, summary.json
    data/leaderboard.json|.js       what the pages show (tables, overall, history)
    data/runs.json|.js              each run's manifest and summary.json, verbatim
    assets/plotly.min.js            plotly.js, once
    .evalkit-site                   marker: a rebuild may replace this folder's contents

The rules that decide what is compared with what live in ``evalkit.leaderboard.tables``.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.leaderboard.assets import PLOTLY_JS, copy_run_files, write_data, write_plotly
from evalkit.leaderboard.public import local_folders, scrub_site
from evalkit.leaderboard.runs import RunEntry, assign_model_labels, display_name, expand_inputs, load_run
from evalkit.leaderboard.tables import OVERALL_RULE, VERSION_RULE, leaderboard_data, slugify
from evalkit.reports.formatting import fmt_value
from evalkit.run_files import Manifest

MARKER = ".evalkit-site"
MANAGED = ("index.html", "models", "benchmarks", "runs", "data", "assets", "nights")


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def prepare_out(out: Path) -> None:
    """Make ``out`` ready: a new or empty folder, or a site built before (its marker file). Any other
    non-empty folder is refused, so a mistyped ``--out`` never deletes someone's files."""
    if out.exists() and not out.is_dir():
        raise EvalkitError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise EvalkitError(
            f"{out}: folder is not empty and is not an evalkit site; choose an empty or new --out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in MANAGED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out / MARKER).write_text("built by `evalkit leaderboard build`; rebuilt in place\n", encoding="utf-8")


def load_runs(run_dirs: list[Path], nights: dict[Path, dict[str, Any]] | None = None) -> list[RunEntry]:
    """Load every run; run ids made unique (two folders may hold runs of the same name); each
    nightly run gets its night (``nights``: resolved run folder -> ``{"date", "name",
    "comparison"}``) and every run its label (``assign_model_labels``)."""
    paths = expand_inputs(run_dirs)
    if not paths:
        raise EvalkitError("no run directories given; pass the folders that `evalkit run` made")
    runs = [load_run(p) for p in paths]
    for run in runs:
        run.night = (nights or {}).get(run.path.resolve())
        if run.night is not None:
            run.display = display_name(Manifest.model_validate(run.manifest), run.night.get("name"))
    assign_model_labels(runs)
    seen: set[str] = set()
    for run in runs:
        # the id names a folder of the site: never a path separator or "..", whatever the manifest says
        run.run_id = re.sub(r"[^A-Za-z0-9._+-]+", "-", run.run_id).strip(".-") or "run"
        base, n = run.run_id, 1
        while run.run_id in seen:
            n += 1
            run.run_id = f"{base}-{n}"
        seen.add(run.run_id)
    return runs


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("evalkit.leaderboard", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt_value
    env.filters["pct"] = _pct
    return env


def _static(name: str) -> str:
    return files("evalkit.leaderboard").joinpath("static", name).read_text(encoding="utf-8")


def _runs_data(runs: list[RunEntry], reports: dict[str, str | None]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.run_id,
            "model": run.model,
            "started": run.started_text,
            "status": run.status,
            "source": run.path.name,  # the folder's name only: no local paths on a public site
            "report": reports[run.run_id],
            "notes": run.notes,
            "manifest": run.manifest,
            "summary": run.summary,
        }
        for run in sorted(runs, key=lambda r: (r.started, r.run_id))
    ]


def build_site(
    run_dirs: list[Path],
    out: Path,
    studies: list[Path] | None = None,
    nights: dict[Path, dict[str, Any]] | None = None,
) -> Path:
    """Build the site into ``out`` from ``run_dirs`` (run folders, or folders of run folders) and
    return the path of ``index.html``; ``studies``: preference-study results folders
    (``evalkit.leaderboard.studies``); ``nights``: the nightly runs' nights (``load_runs``; each
    night's comparison page is copied into ``nights/``). Bad input raises ``EvalkitError`` before
    ``out`` is touched. No local folder of the builder appears in any file (``leaderboard.public``)."""
    from evalkit.leaderboard.studies import studies_data

    runs = load_runs([Path(p) for p in run_dirs], nights)
    study_tables = studies_data([Path(p) for p in studies or []], {r.model for r in runs})
    out = Path(out)
    prepare_out(out)
    reports: dict[str, str | None] = {}
    for run in runs:
        copied = copy_run_files(run.path, out / "runs" / run.run_id, inputs=out / "inputs")
        reports[run.run_id] = f"runs/{run.run_id}/report.html" if copied["report"] else None
        if copied["missing"]:
            run.notes.append(f"report links files the run folder lacks: {', '.join(copied['missing'])}")
        if copied["dropped"]:
            run.notes.append(
                f"{len(copied['dropped'])} file(s) the report links were not copied into the site "
                "(only audio inside the run directory and its recorded data folders is)"
            )
    _copy_comparisons(runs, out)
    data = leaderboard_data(runs)
    data["studies"] = study_tables
    write_data(out, "leaderboard", data)
    write_data(out, "runs", _runs_data(runs, reports))
    write_plotly(out)
    _render_pages(out, runs, data, reports)
    scrub_site(out, local_folders([r.path for r in runs], [d for r in runs for d in (r.manifest, r.summary)]))
    return out / "index.html"


def _copy_comparisons(runs: list[RunEntry], out: Path) -> None:
    """Each nightly run's comparison page into ``nights/<date>/``; its night then names the
    copy's site path (``None`` when the night had no baseline or the page is gone)."""
    for run in runs:
        night = run.night
        if night is None:
            continue
        source = night.get("comparison")
        night = run.night = {**night, "comparison": None}
        if source is None or not Path(source).is_file():
            continue
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", str(night.get("date") or "undated"))
        target = out / "nights" / folder / f"{slugify(run.model)}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        night["comparison"] = target.relative_to(out).as_posix()


def _feel_figure(data: dict[str, Any]) -> Any:
    """The reasoning-versus-feel figure of the index page (plotly JSON), None without points."""
    from markupsafe import Markup

    from evalkit.reports.long_turn import feel_figure

    figure = feel_figure(data["long_turn"]["points"])
    return Markup(figure) if figure is not None else None


def _render_pages(
    out: Path, runs: list[RunEntry], data: dict[str, Any], reports: dict[str, str | None]
) -> None:
    env = _env()
    bench_slugs = {task: slugify(task) for task in data["benchmarks"]}
    try:
        evalkit_version = version("evalkit")
    except PackageNotFoundError:
        evalkit_version = "(unknown)"
    common = {
        "css": _static("site.css"),
        "site_js": _static("site.js"),
        "reports": reports,
        "bench_slugs": bench_slugs,
        "nav_benchmarks": [{"task": t, "slug": s} for t, s in bench_slugs.items()],
        "version": evalkit_version,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n_runs": len(runs),
        "version_rule": VERSION_RULE,
        "overall_rule": OVERALL_RULE,
    }
    (out / "index.html").write_text(
        env.get_template("index.html.j2").render(
            root="", data=data, feel_figure=_feel_figure(data), plotly_js=PLOTLY_JS, **common
        ),
        encoding="utf-8",
    )
    (out / "benchmarks").mkdir()
    for task, groups in data["benchmarks"].items():
        labels = {g["slug"]: g["label"] for g in groups}
        task_runs = [
            {
                "started": run.started_text,
                "model": run.model,
                "model_slug": slugify(run.model),
                "settings": run.settings_text,
                "run_id": run.run_id,
                "value": res.value,
                "ci_low": res.ci_low,
                "ci_high": res.ci_high,
                "coverage": res.coverage,
                "version": labels[res.key.slug()],
            }
            for run in sorted(runs, key=lambda r: (r.started, r.run_id), reverse=True)
            for res in run.results
            if res.task == task
        ]
        page = env.get_template("benchmark.html.j2").render(
            root="../", task=task, groups=groups, runs=task_runs, **common
        )
        (out / "benchmarks" / f"{bench_slugs[task]}.html").write_text(page, encoding="utf-8")
    (out / "models").mkdir()
    overall_rows = {row["model"]: row for row in data["overall"]["rows"]}
    for model in data["models"]:
        latest = [
            {
                "task": task,
                "label": group["label"],
                "reference": group["reference"],
                "metric": f"{group['key']['judge']}/{group['key']['metric']}",
                "row": row,
            }
            for task, groups in data["benchmarks"].items()
            for group in groups
            for row in group["rows"]
            if row["model"] == model
        ]
        model_runs = sorted(
            (r for r in runs if r.model == model), key=lambda r: (r.started, r.run_id), reverse=True
        )
        page = env.get_template("model.html.j2").render(
            root="../",
            model=model,
            overall=overall_rows[model],
            latest=latest,
            runs=model_runs,
            plotly_js=PLOTLY_JS,
            history_js=_static("history.js"),
            **common,
        )
        (out / "models" / f"{slugify(model)}.html").write_text(page, encoding="utf-8")
