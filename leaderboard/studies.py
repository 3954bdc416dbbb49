"""Preference studies on the leaderboard: the ``results.json`` of ``evalkit study analyze`` (human
votes) and ``evalkit study arena`` (an automatic pairwise judge), passed to ``evalkit leaderboard
build --study DIR``, as one table each: per model, its Bradley-Terry rating with its CI on every
criterion, and its overall win rate.

A study's models are named as the leaderboard names them (``evalkit.study.runs.run_label`` uses
``evalkit.leaderboard.runs.model_name``), so a row links to the model's page when the model has
runs on the site too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.leaderboard.tables import slugify

#: the criterion the rows are sorted by, and shown first
LEAD = "overall"


def _criterion(models: dict[str, Any], model: str) -> dict[str, Any] | None:
    info = models.get(model)
    if info is None:
        return None
    return {
        "rating": info["rating"],
        "low": info["rating_ci"][0],
        "high": info["rating_ci"][1],
        "win_rate": info["win_rate"],
        "n": info["n_comparisons"],
    }


def load_study(path: Path, site_models: set[str]) -> dict[str, Any]:
    """One study folder (or its results.json) as the leaderboard shows it."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalkitError(
            f"{file}: cannot read study results ({exc}); pass the --out of `evalkit study analyze` or `arena`"
        ) from None
    criteria = results.get("criteria") if isinstance(results, dict) else None
    if not isinstance(criteria, dict) or results.get("kind") not in ("human", "arena"):
        raise EvalkitError(f"{file}: not study results; pass the --out of `evalkit study analyze` or `arena`")
    order = sorted(criteria, key=lambda c: (c != LEAD, list(criteria).index(c)))
    lead = criteria.get(LEAD) or criteria[order[0]]
    models = sorted({m for c in criteria.values() for m in c.get("models", {})})
    models.sort(key=lambda m: -(lead["models"].get(m, {}).get("rating") or float("-inf")))
    raters = results.get("raters") or {}
    return {
        "name": file.parent.name,
        "kind": results["kind"],
        "judge": (results.get("judge") or {}).get("model"),
        "n_raters": raters.get("n"),
        "n_excluded": raters.get("n_excluded"),
        "criteria": order,
        "rows": [
            {
                "model": m,
                "model_slug": slugify(m) if m in site_models else None,
                "by_criterion": {c: _criterion(criteria[c].get("models", {}), m) for c in order},
            }
            for m in models
        ],
    }


def studies_data(paths: list[Path], site_models: set[str]) -> list[dict[str, Any]]:
    """Every study given, in the order given."""
    return [load_study(p, site_models) for p in paths]
