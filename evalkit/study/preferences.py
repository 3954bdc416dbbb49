"""``evalkit study export-preferences --format trl``: chosen/rejected pairs for reward-model and
DPO training, from human votes or from the arena judge.

TRL's preference layout, conversational form (what its ``RewardTrainer`` and ``DPOTrainer`` read):
one JSONL line per pair with

- ``prompt``: the shared context, a list of messages: the conversation's first user turn;
- ``chosen`` / ``rejected``: the rest of each side's conversation, starting with its reply
  (``assistant``; for a multi-turn item the later user turns are in both, each side with its own
  replies before them);

and beside them, ignored by the trainers: ``prompt_audio``, ``chosen_audio``, ``rejected_audio``
(the audio file of each message, aligned with the messages, null where a turn had none; paths into
the run directories, never the study's renamed copies), and provenance: ``item``, ``criterion``,
``source`` (``human`` or ``arena``), ``judge`` (the arena's judge model), ``study``,
``chosen_model`` / ``rejected_model``, ``chosen_run`` / ``rejected_run`` (run folders),
``n_judgements`` (votes, or the arena's two orders) and ``preference`` (the chosen side's share,
0.5 < p <= 1). Items whose judgements come out even are left out (and counted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.study.ratings import Comparison
from evalkit.study.runs import Item, StudyRun, Unit, load_study_runs

FORMATS = ("trl",)


def _messages(item: Item, start: int) -> tuple[list[dict[str, str]], list[str | None]]:
    """The conversation of one side from its reply at turn ``start`` on: messages and audio."""
    messages: list[dict[str, str]] = []
    audio: list[str | None] = []
    for k in range(start, len(item.replies)):
        if k > start:
            messages.append({"role": "user", "content": item.users[k].text or ""})
            audio.append(item.users[k].audio)
        messages.append({"role": "assistant", "content": item.replies[k].text or ""})
        audio.append(item.replies[k].audio)
    return messages, audio


def trl_row(chosen: Item, rejected: Item, provenance: dict[str, Any]) -> dict[str, Any]:
    """One preference pair in TRL's conversational layout, with audio paths and provenance."""
    first = chosen.users[0]
    chosen_msgs, chosen_audio = _messages(chosen, 0)
    rejected_msgs, rejected_audio = _messages(rejected, 0)
    return {
        "prompt": [{"role": "user", "content": first.text or ""}],
        "chosen": chosen_msgs,
        "rejected": rejected_msgs,
        "prompt_audio": [first.audio],
        "chosen_audio": chosen_audio,
        "rejected_audio": rejected_audio,
        **provenance,
    }


def preference_rows(
    comparisons: Sequence[Comparison], runs: dict[str, StudyRun], provenance: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """Rows for every (item, pair) whose judgements lean one way (mean share != 0.5); and how
    many came out even. ``runs`` maps each model label to its run."""
    grouped: dict[tuple[str, str, str], list[float]] = {}
    for c in comparisons:
        first, second = sorted((c.a, c.b))
        grouped.setdefault((c.item, first, second), []).append(c.share if c.a == first else 1 - c.share)
    rows, even = [], 0
    for (item, first, second), shares in sorted(grouped.items()):
        p = sum(shares) / len(shares)
        if p == 0.5:
            even += 1
            continue
        win, lose = (first, second) if p > 0.5 else (second, first)
        missing = [m for m in (win, lose) if m not in runs or item not in runs[m].items]
        if missing:
            raise EvalkitError(
                f"model {missing[0]!r}: no run given holds item {item!r}; pass its run directory with --runs"
            )
        rows.append(
            trl_row(
                runs[win].items[item],
                runs[lose].items[item],
                {
                    "item": item,
                    **provenance,
                    "chosen_model": win,
                    "rejected_model": lose,
                    "chosen_run": str(runs[win].root),
                    "rejected_run": str(runs[lose].root),
                    "n_judgements": len(shares),
                    "preference": max(p, 1 - p),
                },
            )
        )
    return rows, even


def runs_by_label(roots: Sequence[str | Path], unit: Unit) -> dict[str, StudyRun]:
    return {r.label: r for r in load_study_runs([Path(p) for p in roots], unit)}


def export_preferences(
    out: Path,
    votes: Sequence[Path] = (),
    studies: Sequence[Path] = (),
    arena: Path | None = None,
    runs: Sequence[Path] = (),
    criterion: str = "overall",
    fmt: str = "trl",
) -> dict[str, Any]:
    """Write the preference file ``out`` (JSONL) from human votes (attention checks applied) or an
    arena folder; returns counts. Run folders come from the study key or the arena's results,
    else ``runs``."""
    from evalkit.study.analyze import per_criterion
    from evalkit.study.arena import comparisons_by_criterion, read_arena
    from evalkit.study.build import load_key
    from evalkit.study.votes import check_raters, counted, read_votes

    if fmt not in FORMATS:
        raise EvalkitError(f"--format {fmt!r}: known formats: {', '.join(FORMATS)}")
    if bool(votes) == (arena is not None):
        raise EvalkitError(
            "give either --votes (with --study for page exports) or --arena DIR, not both or neither"
        )
    if arena is not None:
        results, lines = read_arena(arena)
        comps = comparisons_by_criterion(lines).get(criterion, [])
        roots = list(runs) or [r["root"] for r in results["runs"]]
        unit = results.get("unit", "conversation")
        provenance = {
            "criterion": criterion,
            "source": "arena",
            "judge": results["judge"]["model"],
            "study": "",
        }
    else:
        keys = [load_key(s) for s in studies]
        all_votes = read_votes(votes, studies)
        comps = per_criterion(counted(all_votes, check_raters(all_votes))).get(criterion, [])
        roots = list(runs) or [r["root"] for key in keys for r in key["runs"]]
        unit = keys[0]["unit"] if keys else "conversation"
        provenance = {
            "criterion": criterion,
            "source": "human",
            "judge": "",
            "study": ",".join(k["study_id"] for k in keys),
        }
    if not roots:
        raise EvalkitError("the votes name models but no run directories: pass them with --runs RUN...")
    if not comps:
        raise EvalkitError(
            f"no counted judgements on criterion {criterion!r}; choose another with --criterion"
        )
    rows, even = preference_rows(comps, runs_by_label(list(dict.fromkeys(roots)), unit), provenance)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"path": str(out), "n_pairs": len(rows), "n_even": even}
