"""Multiple-choice matching: a letter or an unambiguous option text; never a random guess."""

from __future__ import annotations

from typing import Any

from evalkit.judges.answer_match import AnswerMatchJudge
from evalkit.judges.extract import extract_choice
from evalkit.registry import register_judge


@register_judge("choice")
class ChoiceJudge(AnswerMatchJudge):
    """Multiple choice: letter or unique option text; unreadable replies are parse failures."""

    name = "choice"

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        return extract_choice(text, list(reference["choices"]))

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return extracted == str(reference["answer"]).strip().upper()
