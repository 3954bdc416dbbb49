"""``evalkit study analyze VOTES... --out DIR``: ratings from human votes, per criterion, as
``results.json`` and ``results.html``.

What is in ``results.json`` (``kind: "human"``; the arena writes the same shape with ``kind:
"arena"``): ``raters`` (how many, which were excluded by the attention checks and why),
``criteria`` -> each criterion's Bradley-Terry ratings with CIs, win rates, pairwise win shares,
counts and Krippendorff's alpha; with ``--runs``, ``automatic``: how well each metric the runs'
judges wrote agrees with the people (``evalkit.study.ratings.agreement``), per criterion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.stats import DEFAULT_RESAMPLES
from evalkit.study.ratings import Comparison, agreement, krippendorff_alpha, rate
from evalkit.study.votes import Vote, check_raters, counted, read_votes

RESULTS_JSON = "results.json"
RESULTS_HTML = "results.html"


def models_of(comparisons: Sequence[Comparison]) -> list[str]:
    return sorted({m for c in comparisons for m in (c.a, c.b)})


def per_criterion(votes: list[Vote]) -> dict[str, list[Comparison]]:
    """The counted votes of each criterion, as comparisons (criteria in first-seen order)."""
    out: dict[str, list[Comparison]] = {}
    for v in votes:
        out.setdefault(v.criterion, []).append(v.comparison())
    return out


def human_results(
    votes: list[Vote], seed: int = 0, resamples: int = DEFAULT_RESAMPLES
) -> tuple[dict[str, Any], dict[str, list[Comparison]]]:
    """The results of ``votes`` (attention checks applied) and the comparisons that counted."""
    checks = check_raters(votes)
    kept = per_criterion(counted(votes, checks))
    if not kept:
        raise EvalkitError("no vote counts: every rater failed the attention checks (see the rater list)")
    criteria = {}
    for criterion, comps in kept.items():
        result = rate(models_of(comps), comps, seed=seed, resamples=resamples)
        result["krippendorff_alpha"] = krippendorff_alpha(comps)
        result["n_raters"] = len({c.rater for c in comps})
        criteria[criterion] = result
    excluded = [c for c in checks.values() if c.failed]
    results = {
        "kind": "human",
        "sources": sorted({v.source for v in votes}),
        "raters": {
            "n": len(checks),
            "n_excluded": len(excluded),
            "excluded": [{"rater": c.rater, "reasons": c.reasons} for c in excluded],
            "checks": [
                {
                    "rater": c.rater,
                    "planted": c.planted,
                    "repeats": c.repeats,
                    "contradictions": c.contradictions,
                }
                for c in checks.values()
            ],
        },
        "criteria": criteria,
    }
    return results, kept


def metric_comparisons(run_dirs: Sequence[Path]) -> dict[str, list[Comparison]]:
    """Per ``judge/metric`` that the runs' judges wrote (with a direction), the preference it
    implies between each pair of runs on each conversation both scored: the better value wins,
    equal values tie. What lets analyze tell which automatic metric agrees with people."""
    from itertools import combinations

    from evalkit.judges.base import recorded_metric_specs
    from evalkit.store import RunStore
    from evalkit.study.runs import item_id, load_study_runs

    runs = load_study_runs([Path(p) for p in run_dirs])
    values: dict[str, dict[str, dict[str, float]]] = {}  # judge/metric -> run label -> item -> value
    for run in runs:
        store = RunStore.open_existing(run.root)
        recorded = store.manifest().judges
        for rec in store.iter_latest_scores():
            specs = {s.name: s for s in recorded_metric_specs(recorded, rec.task, rec.score.judge)}
            for metric, value in rec.score.metrics.items():
                spec = specs.get(metric)
                if value is None or spec is None or spec.direction == "descriptive":
                    continue
                signed = value if spec.direction == "higher" else -value
                values.setdefault(f"{rec.score.judge}/{metric}", {}).setdefault(run.label, {})[
                    item_id(rec.task, rec.sample_id)
                ] = signed
    out: dict[str, list[Comparison]] = {}
    for name, by_run in values.items():
        comps = []
        for a, b in combinations(sorted(by_run), 2):
            for item in sorted(set(by_run[a]) & set(by_run[b])):
                x, y = by_run[a][item], by_run[b][item]
                comps.append(Comparison(item=item, a=a, b=b, share=1.0 if x > y else 0.0 if x < y else 0.5))
        out[name] = comps
    return out


def automatic_agreement(
    judges: dict[str, list[Comparison]], human: dict[str, list[Comparison]], seed: int, resamples: int
) -> dict[str, dict[str, Any]]:
    """judge -> criterion -> agreement with the people's votes on that criterion."""
    return {
        name: {crit: agreement(comps, votes, seed=seed, resamples=resamples) for crit, votes in human.items()}
        for name, comps in judges.items()
        if comps
    }


def write_results(results: dict[str, Any], out: Path) -> Path:
    """``results.json`` and ``results.html`` into ``out``; returns the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    template = env.from_string(
        files("evalkit.study").joinpath("static", "results.html.j2").read_text("utf-8")
    )
    (out / RESULTS_HTML).write_text(template.render(r=results), encoding="utf-8")
    return out / RESULTS_HTML


def analyze(
    vote_paths: Sequence[Path],
    out: Path,
    studies: Sequence[Path] = (),
    runs: Sequence[Path] = (),
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Read the votes, rate the models per criterion, and write the results into ``out``."""
    votes = read_votes(vote_paths, studies)
    results, kept = human_results(votes, seed=seed, resamples=resamples)
    if runs:
        results["automatic"] = automatic_agreement(metric_comparisons(runs), kept, seed, resamples)
    write_results(results, out)
    return results
