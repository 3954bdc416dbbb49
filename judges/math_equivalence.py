"""Symbolic answer equivalence with Hugging Face ``math-verify``: ``1/2``, ``0.5`` and ``\\frac{1}{2}``
are the same answer, which exact string matching after number normalisation cannot see.

Nothing from a reply is ever ``eval``-ed: math-verify parses LaTeX / plain expressions into sympy
objects and compares those. A reply in which math-verify finds no expression is a parse failure
(counted, scored wrong).

Timeouts. math-verify bounds parsing and comparison with ``signal.alarm``, which only works in a
process's main thread. The judge runs in the process pool (``execution = "process"``), in a
worker whose calls run in that worker's main thread: the alarm works there and a pathological expression
(sympy can take minutes on some) is cut off after ``TIMEOUT_S`` and read as a parse failure instead
of blocking the run. Should the judge ever be called from another thread (a threaded re-scorer),
the signal timeout is switched off (math-verify's ``parsing_timeout=None`` / ``timeout_seconds=None``)
rather than letting math-verify raise; the caller then owns the time limit.
"""

from __future__ import annotations

import threading
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.judges.answer_match import AnswerMatchJudge
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge

#: seconds math-verify may spend parsing one text, and comparing one pair
TIMEOUT_S = 5


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError:
        raise EvalkitError("the math-verify judge needs `math-verify`: pip install -e '.[bench]'") from None
    return math_verify


def _timeout() -> int | None:
    """The signal timeout where signals work (the main thread), else None (no signal handling)."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@register_judge("math-verify")
class MathVerifyJudge(AnswerMatchJudge):
    """Symbolic equivalence (math-verify): 1/2 = 0.5 = \\frac{1}{2}; no expression -> parse failure."""

    name = "math-verify"
    execution = "process"

    def __init__(self) -> None:
        # AnswerMatchJudge calls ``extract`` then ``matches`` for the same turn, one turn at a time;
        # the parsed reply is kept between the two so that ``matches`` compares the sympy objects,
        # not their display string (re-parsing "50" from "50%" would lose the percent).
        self._parsed: tuple[str, list[Any]] | None = None

    def parse(self, text: str) -> list[Any]:
        """math-verify's parse of ``text`` (empty when it finds no expression)."""
        return _math_verify().parse(text, parsing_timeout=_timeout())

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        parsed = self.parse(text)
        if not parsed:
            self._parsed = None
            return None
        shown = str(parsed[-1])  # math-verify's last item is the matched source string
        self._parsed = (shown, parsed)
        return shown

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        if self._parsed is None or self._parsed[0] != extracted:
            raise RuntimeError("math-verify: matches() called without the extract() of the same turn")
        gold = self.parse(str(reference["answer"]))
        if not gold:  # the dataset's fault, not the model's: a judge error, never a zero
            raise ValueError(f"math-verify cannot parse the reference answer {reference['answer']!r}")
        return bool(_math_verify().verify(gold, self._parsed[1], timeout_seconds=_timeout()))

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        try:
            return super().score(sample, outputs)
        finally:
            self._parsed = None
