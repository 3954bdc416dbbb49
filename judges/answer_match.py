"""Shared machinery of answer-matching judges: extract an answer from the reply, compare it with
the reference, per answered turn.

A sample's reference is either ``{"answer": ...}`` (judged on the last reply) or
``{"turns": [ref_or_null, ...]}`` aligned with the answered turns (multi-turn: each non-null entry
is judged on its own reply). A reply the extractor cannot read is a *parse failure*: counted,
shown, and scored as wrong; never replaced by a guess.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from evalkit.judges.base import Judge
from evalkit.records import ModelOutput, Sample, Score


class AnswerMatchJudge(Judge):
    """Subclasses define ``extract`` and ``matches``; this class does turns and bookkeeping."""

    @abstractmethod
    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        """The answer found in ``text``, normalised, or None when it cannot be read."""

    @abstractmethod
    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        """Whether an extracted answer is the reference answer."""

    def expected(self, reference: dict[str, Any]) -> str:
        return str(reference["answer"])

    def _turn_references(self, sample: Sample, n_outputs: int) -> list[dict[str, Any] | None]:
        ref = sample.reference
        if "turns" in ref:
            turns = list(ref["turns"])
            shared = {k: v for k, v in ref.items() if k != "turns"}
            return [None if t is None else {**shared, **t} for t in turns][:n_outputs]
        if "answer" not in ref:
            raise ValueError(f"sample {sample.id!r}: reference has neither 'answer' nor 'turns'")
        return [None] * (n_outputs - 1) + [ref]

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        rows = []
        for turn, ref in enumerate(self._turn_references(sample, len(outputs))):
            if ref is None:
                continue
            text = outputs[turn].text or ""
            extracted = self.extract(text, ref)
            correct = extracted is not None and self.matches(extracted, ref)
            rows.append(
                {
                    "turn": turn,
                    "expected": self.expected(ref),
                    "extracted": extracted,
                    "parse_failed": extracted is None,
                    "correct": correct,
                }
            )
        if not rows:
            raise ValueError(f"sample {sample.id!r}: no turn has a reference answer")
        n_correct = sum(r["correct"] for r in rows)
        last = rows[-1]
        failed = [r["turn"] for r in rows if r["parse_failed"]]
        explanation = "; ".join(
            f"turn {r['turn']}: expected {r['expected']!r}, "
            + ("could not read an answer" if r["parse_failed"] else f"read {r['extracted']!r}")
            for r in rows
        )
        metrics = {"accuracy": float(n_correct == len(rows))}
        if len(rows) > 1:  # conversations: also the share of turns answered right
            metrics["turn_accuracy"] = n_correct / len(rows)
        return Score(
            judge=self.name,
            metrics=metrics,
            passed=n_correct == len(rows),
            extracted=last["extracted"],
            parse_failed=bool(failed),
            explanation=explanation,
            details={"turns": rows},
        )
