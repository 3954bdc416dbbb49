"""Answer extractors, one implementation each, shared by every task that needs them.

Rules are written out here, because they *are* the score: change one and the numbers change.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from evalkit.models.reasoning import CLOSE, OPEN, split_reasoning
from evalkit.records import ModelOutput


def answer_text(output: ModelOutput) -> str:
    """The reply an answer rule reads: ``output.text`` ("" when the model said nothing), with any
    inline ``<think>...</think>`` an adapter without a reasoning parser left in it split off. Every
    official scorer reads this string: the authors' scripts score the model's answer, and an empty
    or think-only reply is an (empty) answer, scored by the rule like any other."""
    text = output.text or ""
    if OPEN in text or CLOSE in text:
        text, _ = split_reasoning(text)
    return text


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)


def normalise_number(raw: str) -> str | None:
    """``"1,234.50"`` -> ``"1234.5"``; ``"12.0"`` -> ``"12"``; None if not a number."""
    cleaned = raw.replace(",", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_number(text: str) -> str | None:
    """GSM8K-style: the first number after the last "The answer is", else the last number in the
    text; commas and trailing zeros stripped. None when the text holds no number."""
    marks = list(ANSWER_IS.finditer(text))
    if marks:
        after = text[marks[-1].end() :]
        found = NUMBER.search(after)
        if found:
            return normalise_number(found.group())
    numbers = NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


LETTERS = "ABCDEFGHIJ"

# Tiers, tried in order; the first tier that finds exactly one distinct letter decides.
# A tier that finds two different letters makes the reply ambiguous -> parse failure.
_CHOICE_TIERS = [
    # a lower-case "a" followed by a space is the article ("the answer is a cow"), not option A
    re.compile(r"answer\s*(?:is|:)\s*(?:option\s*)?\(?(?-i:(?!a\s))([A-J])\b(?![a-z'])", re.IGNORECASE),
    re.compile(r"^\W*\(?([A-J])(?:[).:,]|$)"),  # reply starts with "B)", "(B)", "B.", or is "B"
    re.compile(r"\b(?:option|choice)\s*\(?([A-J])\b", re.IGNORECASE),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"(?:^|\s)([A-J])[).](?:\s|$)", re.MULTILINE),
]


def extract_choice(text: str, choices: list[str]) -> str | None:
    """The letter a reply picks among ``choices`` (A, B, C, ...), or None.

    1. letter patterns, in tiers (``answer is B`` > leading ``B)`` > ``option B`` > ``(B)`` > ``B.``);
    2. else the option text: exactly one option's text occurs in the reply (case-insensitive,
       whole words), e.g. "a cow says moo" -> the option "cow".
    Ambiguity at the deciding step (two letters, or two option texts) is a parse failure.
    """
    letters = LETTERS[: len(choices)]
    stripped = text.strip()
    for tier in _CHOICE_TIERS:
        found = {m.group(1).upper() for m in tier.finditer(stripped)} & set(letters)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    lowered = stripped.lower()
    hits = [
        letters[i]
        for i, choice in enumerate(choices)
        if choice.strip() and re.search(rf"(?<!\w){re.escape(choice.strip().lower())}(?!\w)", lowered)
    ]
    return hits[0] if len(hits) == 1 else None
