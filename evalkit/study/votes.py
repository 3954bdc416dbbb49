"""Votes, whatever file they came in, as one ``Vote`` type; and the attention checks.

Sources (``read_votes`` picks by extension):

- the page's export, ``*.jsonl``: ``{study, rater, trial, criterion, winner, at}`` per line; the
  study's ``key.json`` turns each trial into its item and the models on sides a and b;
- a CSV, ``*.csv``, with columns ``rater,item,a,b,winner`` (and optionally ``criterion``, default
  ``overall``): a and b name the models, winner is ``a``, ``b`` or ``tie``; a side named
  ``@planted`` is the planted clear-cut pair (the other side must win);
- ``evalkit study serve``'s database, ``*.sqlite``: the same fields as the JSONL export.

Attention checks (one rule for every source, on the votes themselves):

- repeated pair: a rater's second vote on the same item and pair of models (the page shows it with
  sides swapped). On ``overall``, two votes naming different models contradict (a tie beside a
  side does not): the rater clicked a side, not a voice. A rater who contradicts themselves on
  every repeat, with at least ``MIN_REPEATS`` of them, fails. Why not "on most": an attentive
  rater flips on close pairs too (two models a few rating points apart split 60/40), so a
  majority rule would exclude honest raters; the count of contradictions is reported either way.
- planted pair: ``overall`` must go to the real side and no criterion to ``@planted``.

A failing rater's votes are left out of every number and counted. Analysis uses each rater's first
vote per (item, pair, criterion); planted pairs never count towards a model.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evalkit.errors import EvalkitError
from evalkit.study.build import PLANTED, load_key
from evalkit.study.ratings import Comparison

Winner = Literal["a", "b", "tie"]
WINNERS = ("a", "b", "tie")
SHARE = {"a": 1.0, "tie": 0.5, "b": 0.0}
OVERALL = "overall"
CSV_COLUMNS = ("rater", "item", "a", "b", "winner")
#: the fewest repeated pairs on which contradicting every time excludes a rater
MIN_REPEATS = 3


@dataclass(frozen=True)
class Vote:
    """One rater's verdict on one criterion of one pair: ``a`` and ``b`` name the models."""

    rater: str
    item: str
    a: str
    b: str
    winner: Winner
    criterion: str = OVERALL
    source: str = ""

    @property
    def planted(self) -> bool:
        return PLANTED in (self.a, self.b)

    @property
    def chosen(self) -> str | None:
        """The model this vote prefers (None for a tie)."""
        return {"a": self.a, "b": self.b}.get(self.winner)

    def comparison(self) -> Comparison:
        return Comparison(item=self.item, a=self.a, b=self.b, share=SHARE[self.winner], rater=self.rater)


def _winner(value: Any, where: str) -> Winner:
    if value not in WINNERS:
        raise EvalkitError(f"{where}: winner {value!r} must be one of a, b, tie")
    return value


def read_csv_votes(path: Path) -> list[Vote]:
    """Votes from a CSV with columns rater,item,a,b,winner[,criterion]."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalkitError(
                f"{path}: missing column(s) {', '.join(missing)}; the header must be rater,item,a,b,winner"
            )
        votes = []
        for n, row in enumerate(reader, start=2):
            where = f"{path}:{n}"
            if not all((row.get(c) or "").strip() for c in ("rater", "item", "a", "b")):
                raise EvalkitError(f"{where}: rater, item, a and b must all be given")
            votes.append(
                Vote(
                    rater=row["rater"].strip(),
                    item=row["item"].strip(),
                    a=row["a"].strip(),
                    b=row["b"].strip(),
                    winner=_winner((row["winner"] or "").strip(), where),
                    criterion=(row.get("criterion") or OVERALL).strip() or OVERALL,
                    source=str(path),
                )
            )
    return votes


def _from_key(line: dict[str, Any], keys: dict[str, dict[str, Any]], where: str, source: str) -> Vote:
    """A page vote (trial id, side) as a Vote naming the models, through its study's key."""
    study = line.get("study")
    if study not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise EvalkitError(
            f"{where}: votes of study {study!r}, but the keys given are for {known}; "
            "pass its folder with --study"
        )
    trial = keys[study]["trials"].get(line.get("trial"))
    if trial is None:
        raise EvalkitError(f"{where}: trial {line.get('trial')!r} is not in study {study}'s key.json")
    rater = line.get("rater")
    if not isinstance(rater, str) or not rater:
        raise EvalkitError(f"{where}: field rater must be a non-empty string")
    criterion = line.get("criterion")
    if criterion not in keys[study]["criteria"]:
        raise EvalkitError(
            f"{where}: criterion {criterion!r} is not one of the study's {keys[study]['criteria']}"
        )
    return Vote(
        rater=rater,
        item=trial["item"],
        a=trial["a"],
        b=trial["b"],
        winner=_winner(line.get("winner"), where),
        criterion=criterion,
        source=source,
    )


def read_jsonl_votes(path: Path, keys: dict[str, dict[str, Any]]) -> list[Vote]:
    """The page's exported votes, through the studies' keys."""
    votes = []
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise EvalkitError(
                f"{path}:{n}: not a JSON line ({exc}); pass the file the study page exported"
            ) from None
        if not isinstance(line, dict):
            raise EvalkitError(f"{path}:{n}: a vote line must be a JSON object")
        votes.append(_from_key(line, keys, f"{path}:{n}", str(path)))
    return votes


def read_sqlite_votes(path: Path, keys: dict[str, dict[str, Any]]) -> list[Vote]:
    """Votes stored by ``evalkit study serve`` (table ``votes``), through the studies' keys."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        # a rater who went back and changed a pair posted it again: the latest answer stands
        rows = db.execute(
            "SELECT study, rater, trial, criterion, winner FROM votes WHERE id IN (SELECT MAX(id) FROM votes "
            "GROUP BY study, rater, trial, criterion) ORDER BY id"
        ).fetchall()
    names = ("study", "rater", "trial", "criterion", "winner")
    return [
        _from_key(dict(zip(names, row, strict=True)), keys, f"{path} row {n}", str(path))
        for n, row in enumerate(rows, 1)
    ]


def read_votes(paths: Iterable[Path], studies: Iterable[Path] = ()) -> list[Vote]:
    """Every vote of ``paths`` (.jsonl, .csv, .sqlite), with the keys of the study folders given."""
    keys = {key["study_id"]: key for key in (load_key(s) for s in studies)}
    readers = {
        ".csv": read_csv_votes,
        ".jsonl": lambda p: read_jsonl_votes(p, keys),
        ".sqlite": lambda p: read_sqlite_votes(p, keys),
    }
    votes: list[Vote] = []
    for path in paths:
        path = Path(path)
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise EvalkitError(
                f"{path}: votes must be a .jsonl export, a .csv (rater,item,a,b,winner) or a .sqlite"
            )
        if not path.is_file():
            raise EvalkitError(f"{path}: no such votes file")
        votes.extend(reader(path))
    if not votes:
        raise EvalkitError("no votes in the files given")
    return votes


@dataclass
class RaterCheck:
    """One rater's attention checks: the planted pair and the repeated pairs."""

    rater: str
    planted: Literal["passed", "failed", "not seen"] = "not seen"
    repeats: int = 0
    contradictions: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.reasons)


def _pair(v: Vote) -> tuple[str, str, str]:
    return (v.item, *sorted((v.a, v.b)))


def check_raters(votes: list[Vote]) -> dict[str, RaterCheck]:
    """Each rater's attention checks (the rules in the module docstring)."""
    checks: dict[str, RaterCheck] = {}
    first_overall: dict[tuple[str, tuple[str, str, str]], Vote] = {}
    for v in votes:
        check = checks.setdefault(v.rater, RaterCheck(v.rater))
        if v.planted:
            real_side = "b" if v.a == PLANTED else "a"
            if v.criterion == OVERALL:
                wrong, why = v.winner != real_side, "overall did not go to the real reply"
            else:
                wrong, why = v.chosen == PLANTED, f"{v.criterion} went to the broken reply"
            if wrong:
                check.reasons.append(f"planted pair: {why}")
            if check.planted != "failed":
                check.planted = "failed" if wrong else "passed"
            continue
        if v.criterion != OVERALL:
            continue
        key = (v.rater, _pair(v))
        if key not in first_overall:
            first_overall[key] = v
            continue
        check.repeats += 1
        before = first_overall[key].chosen
        if before is not None and v.chosen is not None and before != v.chosen:
            check.contradictions += 1
    for check in checks.values():
        if check.repeats >= MIN_REPEATS and check.contradictions == check.repeats:
            check.reasons.append(
                f"contradicted themselves on {check.contradictions} of {check.repeats} repeated pairs"
            )
    return checks


def counted(votes: list[Vote], checks: dict[str, RaterCheck]) -> list[Vote]:
    """The votes that count: raters who passed, no planted pair, each rater's first vote per
    (item, pair, criterion)."""
    seen: set[tuple[str, str, tuple[str, str, str]]] = set()
    out = []
    for v in votes:
        key = (v.rater, v.criterion, _pair(v))
        if checks[v.rater].failed or v.planted or key in seen:
            continue
        seen.add(key)
        out.append(v)
    return out
