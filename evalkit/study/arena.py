"""``evalkit study arena RUN_A RUN_B ... --judge SPEC --out DIR``: the ``arena`` judge over every
pair of runs on every item they share, then Bradley-Terry over the models, and (given human votes)
the judge's agreement with the people.

Writes into DIR: ``arena.jsonl`` (one line per comparison: item, runs a and b, each criterion's
share won by a, order agreement, the judge's verdicts, or its error), ``calls/judge.jsonl`` (every
judge call, as in a run directory), ``results.json`` and ``results.html`` (``kind: "arena"``: the
same shape as analyze's, plus ``judge`` and, with votes, ``agreement`` per criterion).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import AudioRef, ModelOutput, Sample, Score, Turn
from evalkit.stats import DEFAULT_RESAMPLES
from evalkit.study.analyze import models_of, write_results
from evalkit.study.ratings import Comparison, agreement, rate
from evalkit.study.runs import Item, StudyRun, Unit, load_study_runs, shared_items

ARENA_JSONL = "arena.jsonl"


def as_sample(item: Item) -> Sample:
    """The item's user side as a ``Sample`` the judge reads (audio by path, transcript as text)."""
    turns = [
        Turn(role="user", transcript=u.text, audio=AudioRef(path=u.audio) if u.audio else None)
        for u in item.users
    ]
    return Sample(id=item.sample_id, task=item.task, conversation=turns)


def as_outputs(item: Item) -> list[ModelOutput]:
    return [ModelOutput(text=r.text, audio=AudioRef(path=r.audio) if r.audio else None) for r in item.replies]


def arena_line(item: str, a: str, b: str, score: Score) -> dict[str, Any]:
    """One comparison as ``arena.jsonl`` records it."""
    from evalkit.judges.arena import CRITERIA, METRIC_OF

    if score.error is not None:
        return {"item": item, "a": a, "b": b, "error": score.error.message}
    return {
        "item": item,
        "a": a,
        "b": b,
        "shares": {c: score.metrics[METRIC_OF[c]] for c in CRITERIA},
        "order_agreement": score.metrics["arena_order_agreement"],
        "details": score.details,
    }


def read_arena(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An arena folder's ``results.json`` and ``arena.jsonl`` lines (export-preferences reads them)."""
    path = Path(path)
    try:
        results = json.loads((path / "results.json").read_text(encoding="utf-8"))
        lines = [
            json.loads(x) for x in (path / ARENA_JSONL).read_text(encoding="utf-8").splitlines() if x.strip()
        ]
    except (OSError, ValueError) as exc:
        raise EvalkitError(
            f"{path}: not an arena folder ({exc}); pass the --out of `evalkit study arena`"
        ) from None
    if results.get("kind") != "arena":
        raise EvalkitError(f"{path}/results.json: not arena results; pass the --out of `evalkit study arena`")
    return results, lines


def comparisons_by_criterion(lines: Sequence[dict[str, Any]]) -> dict[str, list[Comparison]]:
    """The judged comparisons of ``arena.jsonl`` per criterion (errors left out)."""
    out: dict[str, list[Comparison]] = {}
    for line in lines:
        for criterion, value in (line.get("shares") or {}).items():
            out.setdefault(criterion, []).append(
                Comparison(item=line["item"], a=line["a"], b=line["b"], share=value, rater="arena")
            )
    return out


async def _judge_all(
    judge: Any, runs: list[StudyRun], items: list[str], concurrency: int
) -> list[dict[str, Any]]:
    slots = asyncio.Semaphore(concurrency)

    async def one(item: str, a: StudyRun, b: StudyRun) -> dict[str, Any]:
        async with slots:
            score = await judge.acompare(
                as_sample(a.items[item]), as_outputs(a.items[item]), as_outputs(b.items[item])
            )
        return arena_line(item, a.label, b.label, score)

    jobs = [one(item, a, b) for item in items for a, b in combinations(runs, 2)]
    return list(await asyncio.gather(*jobs))


def run_arena(
    run_dirs: Sequence[Path],
    judge_spec: str | None,
    out: Path,
    mode: str = "audio",
    unit: Unit = "conversation",
    concurrency: int = 4,
    revision: str | None = None,
    votes: Sequence[Path] = (),
    studies: Sequence[Path] = (),
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Judge every pair of runs on their shared items and write the arena folder ``out``."""
    from evalkit.cache import ResponseCache
    from evalkit.judges.arena import ArenaJudge
    from evalkit.paths import response_cache_path
    from evalkit.service import ModelService, ServiceSettings
    from evalkit.study.analyze import human_results
    from evalkit.study.votes import read_votes

    runs = load_study_runs([Path(p) for p in run_dirs], unit)
    items = shared_items(runs)
    human = human_results(read_votes(votes, studies), seed=seed, resamples=resamples)[1] if votes else None
    judge = ArenaJudge(judge_spec, mode=mode, revision=revision)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(response_cache_path()) if use_cache else None
    service = ModelService(settings=ServiceSettings(concurrency=concurrency), cache=cache, run_dir=out)
    judge.bind(service)

    async def main() -> list[dict[str, Any]]:
        try:
            return await _judge_all(judge, runs, items, concurrency)
        finally:
            await service.aclose()

    try:
        lines = asyncio.run(main())
    finally:
        if cache is not None:
            cache.close()
    (out / ARENA_JSONL).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    by_criterion = comparisons_by_criterion(lines)
    judged = [x for x in lines if "error" not in x]
    results: dict[str, Any] = {
        "kind": "arena",
        "judge": {
            "model": judge.model_spec,
            "mode": judge.mode,
            "revision": revision,
            "position_consistency": (sum(x["order_agreement"] for x in judged) / len(judged))
            if judged
            else None,
            "n_comparisons": len(lines),
            "n_errors": len(lines) - len(judged),
            "errors": [f"{x['item']} {x['a']} vs {x['b']}: {x['error']}" for x in lines if "error" in x][:20],
        },
        "unit": unit,
        "runs": [{"label": r.label, "root": str(r.root)} for r in runs],
        "criteria": {
            c: rate(models_of(comps), comps, seed=seed, resamples=resamples)
            for c, comps in by_criterion.items()
        },
    }
    if human is not None:
        results["agreement"] = {
            c: agreement(by_criterion.get(c, []), comps, seed=seed, resamples=resamples)
            for c, comps in human.items()
        }
    write_results(results, out)
    return results
