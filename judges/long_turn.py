"""``long-turn-checks``: memory probes, an early instruction and a role, scored turn by turn.

What the long-turn suite (``evalkit.tasks.long_turn``) asks besides how a reply sounds: does the
model still know, at turn 14, the dog's name the user gave at turn 2 (``memory_recall``: the share
of a probe's expected keywords the reply names, 0 when it repeats a corrected fact); does an
instruction given early still hold (``instruction_held``: each reply from the turn it was given);
does it stay in character (``in_character``: each reply, when the scenario casts a role).

Scoring mode ``keywords`` (the only one): case-insensitive whole-word matching of the scenario's
keywords (``tasks/long_turn/scenarios.py``, ``Check.failures`` and ``Probe.recall``). It is
cheap and reproducible but literal: a reply that paraphrases ("your pup") misses a probe. A rubric
(LLM) judge on the same checks is the stricter reading; this one is the floor every run gets.

Per-turn numbers go to ``details["turn_metrics"]`` (``{"turn": k, metric: value}``, ``k`` the
0-based answered turn, None where a check does not apply), which summary.json averages by turn
index over conversations; the metrics are the conversation's means.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, ClassVar, Literal

from evalkit.judges.base import Judge, JudgeOptions, build_options, share
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge
from evalkit.tasks.long_turn.scenarios import Check, Instruction, Probe, Role

PER_TURN = ("memory_recall", "instruction_held", "in_character")


class LongTurnChecksOptions(JudgeOptions):
    """``mode``: how a check is read; ``keywords`` is whole-word matching of the scenario's words."""

    mode: Literal["keywords"] = "keywords"


@register_judge("long-turn-checks")
class LongTurnChecks(Judge):
    """Memory probes, early-instruction adherence and staying in character, per turn (keywords)."""

    name = "long-turn-checks"
    Options = LongTurnChecksOptions
    scorer_version = "1"
    metrics: ClassVar = (
        share(
            "memory_recall",
            "share of a memory probe's expected keywords the reply names (0 if it "
            "repeats a corrected fact), mean over the conversation's probes",
        ),
        share("instruction_held", "share of replies from the instruction's turn on that keep it"),
        share("in_character", "share of replies that keep the scenario's role"),
    )

    def __init__(self, mode: str | None = None):
        self.options = build_options(LongTurnChecksOptions, self.name, mode=mode)

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        ref = sample.reference
        probes = {p.turn - 1: p for p in (Probe.model_validate(x) for x in ref.get("probes", []))}
        instruction = Instruction.model_validate(ref["instruction"]) if ref.get("instruction") else None
        role = Role.model_validate(ref["role"]) if ref.get("role") else None
        rows, failures = [], []
        for k, output in enumerate(outputs):
            reply = output.text or ""
            row: dict[str, Any] = {"turn": k, **dict.fromkeys(PER_TURN)}
            if k in probes:
                row["memory_recall"] = probes[k].recall(reply)
            if instruction is not None and k >= instruction.turn - 1:
                row["instruction_held"] = _held(instruction, reply, k, "instruction", failures)
            if role is not None:
                row["in_character"] = _held(role, reply, k, "role", failures)
            rows.append(row)
        metrics = {m: _mean([r[m] for r in rows]) for m in PER_TURN}
        passed = all(v is None or v == 1.0 for v in metrics.values())
        return Score(
            judge=self.name,
            metrics=metrics,
            passed=passed,
            explanation="; ".join(failures[:5]) or None,
            details={"turn_metrics": rows, "failures": failures, "mode": self.options.mode},
        )


def _held(check: Check, reply: str, turn: int, what: str, failures: list[str]) -> float:
    """1.0 when ``reply`` keeps ``check``, else 0.0 with the reason noted."""
    broken = check.failures(reply)
    if broken:
        failures.append(f"turn {turn} {what}: {', '.join(broken)}")
    return 0.0 if broken else 1.0


def _mean(values: list[float | None]) -> float | None:
    """The mean of the values that apply (None when none does: not applicable, never zero)."""
    present = [v for v in values if v is not None]
    return fmean(present) if present else None
