"""Shared machinery of answer-matching judges: extract an answer from the reply, compare it with
the reference, per answered turn.

A sample's reference is either ``{"answer": ...}`` (judged on the last reply) or
``{"turns": [ref_or_null, ...]}`` aligned with the answered turns (multi-turn: each non-null entry
is judged on its own reply). A reply the extractor cannot read is a *parse failure*: counted,
shown, and scored as wrong; never replaced by a guess. The one exception is an official scorer whose
script substitutes a fixed prediction for an unreadable reply and compares *that* (AudioBench's
``"empty"``): such a judge sets ``unreadable_prediction`` and the verdict is the script's, while the
parse failure is still counted.

Every reply is read through ``answer_text`` (an empty answer is an answer: it reaches the rule).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from evalkit.judges.base import Judge, share
from evalkit.judges.extract import answer_text
from evalkit.records import ModelOutput, Sample, Score


class AnswerMatchJudge(Judge):
    """Subclasses define ``extract`` and ``matches``; this class does turns and bookkeeping."""

    metrics = (
        share("accuracy", "1 when every referenced turn's answer matches its reference, else 0"),
        share("turn_accuracy", "share of referenced turns answered right (conversations only)"),
    )

    @abstractmethod
    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        """The answer found in ``text``, normalised, or None when it cannot be read."""

    @abstractmethod
    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        """Whether an extracted answer is the reference answer."""

    #: what the authors' script compares in place of a reply it cannot read (None: no comparison,
    #: the parse failure is wrong)
    unreadable_prediction: str | None = None

    def expected(self, reference: dict[str, Any]) -> str:
        answer = reference["answer"]
        return " | ".join(map(str, answer)) if isinstance(answer, list) else str(answer)

    def alternatives(self, reference: dict[str, Any]) -> list[dict[str, Any]]:
        """The references a reply may match, any one sufficing: one per text when ``answer`` is a
        list of acceptable answers, else the reference itself. A judge that reproduces a script
        with its own reading of a list overrides this to return ``[reference]``."""
        answer = reference.get("answer")
        if isinstance(answer, list):
            return [{**reference, "answer": a} for a in answer]
        return [reference]

    def _verdict(self, extracted: str | None, reference: dict[str, Any]) -> bool:
        """Correct or not: the extracted answer against the reference; an unreadable reply is
        wrong, or, where the script substitutes a prediction for it, that prediction's verdict."""
        prediction = extracted if extracted is not None else self.unreadable_prediction
        if prediction is None:
            return False
        return any(self.matches(prediction, alt) for alt in self.alternatives(reference))

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
            extracted = self.extract(answer_text(outputs[turn]), ref)
            correct = self._verdict(extracted, ref)
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
