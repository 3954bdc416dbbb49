"""Numeric answer matching (GSM8K-style extraction, exact match after normalisation)."""

from __future__ import annotations

from typing import Any

from evalkit.judges.answer_match import AnswerMatchJudge
from evalkit.judges.extract import extract_number, normalise_number
from evalkit.registry import register_judge


@register_judge("numeric")
class NumericJudge(AnswerMatchJudge):
    """Numeric answer: number after "The answer is", else the last number; exact match."""

    name = "numeric"

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        return extract_number(text)

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return extracted == normalise_number(str(reference["answer"]))


@register_judge("numeric-spoken")
class SpokenNumericJudge(NumericJudge):
    """Numeric answer, number words read as digits first ("two apples" -> 2), then the GSM8K rule."""

    name = "numeric-spoken"

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        # Spoken-style replies say "twelve", not "12". text2num's threshold=0 converts even
        # "one"/"two", which the default leaves alone; in a reply judged for a number that is right.
        from text_to_num import alpha2digit

        return extract_number(alpha2digit(text, "en", threshold=0))
