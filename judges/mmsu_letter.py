"""MMSU's scoring rule (``mmsu_evaluation.py`` in github.com/dingdongwang/MMSU_Bench, commit
321b2767), item by item.

The published rule, per record:

1. ``predict = response.strip().replace("\\n", "")``: surrounding whitespace stripped, then every
   newline removed (so ``"The answer is\\nC."`` reads as ``"The answer isC."``).
2. If ``predict`` is empty or the literal string ``"None"``, no letter is read, *but the record still
   counts in the denominator* (the script falls through to ``total_count += 1``).
3. Else the letter is ``predict[0]`` if it is one of ``A B C D`` (upper case only); else
   ``predict[-2]`` if that is one of ``A B C D`` (made for "The answer is A."); else the record is
   **skipped**: ``continue`` before the counters, so it is in neither numerator nor denominator.
4. Correct when the chosen option's *text* equals ``answer_gt`` (exact string equality). Because
   options are compared by text, a row whose ``answer_gt`` equals two options' texts accepts either
   letter, and a row whose ``answer_gt`` equals no option can never be answered right.

Where evalkit departs from the script, and why:

- The script never resets ``model_predict`` between records, so in case 2 a record silently reuses
  the *previous record's* letter (and the very first record crashes with NameError). A verdict that
  depends on another item cannot be resumed, cached, or computed concurrently, so here case 2 reads
  no letter and is scored **wrong** (accuracy 0, still in the denominator, as in the script).
- A ``response`` that is JSON null makes the script print "Error prediction!" and skip the record.
  A successful ``ModelOutput`` always carries text; a None text is treated as ``""`` (case 2).
- Inline ``<think>...</think>`` left in the text by an adapter without a reasoning parser is split
  off first (``split_reasoning``), so the letter rule reads the answer, not the thoughts.

How a verdict becomes a Score (``mmsu-official``):

- letter read, option text == answer_gt: ``accuracy`` 1.0, ``answered`` 1;
- letter read, otherwise: ``accuracy`` 0.0, ``answered`` 1;
- case 2 (empty / "None"): ``accuracy`` 0.0, ``answered`` 0, ``parse_failed``;
- case 3, skipped: ``accuracy`` **None**, ``answered`` 0, ``parse_failed``, ``details.skipped``.
  ``evalkit.summary`` leaves None out of a metric's mean, so a skipped item leaves the accuracy
  denominator exactly as the script does, while ``n_parse_failures`` and the ``answered`` mean keep
  it visible (``accuracy.n`` < ``n_scored`` by the number of skipped items).

``mmsu-strict`` reads letters the same way but scores every unreadable reply (cases 2 and 3) as
wrong, so its denominator is every item. ``mmsu-extract`` uses evalkit's tiered ``extract_choice``
(letter patterns, then a unique option text) and compares option texts as the official rule does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evalkit.judges.base import Judge
from evalkit.judges.choice import ChoiceJudge
from evalkit.models.reasoning import CLOSE, OPEN, split_reasoning
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge

LETTERS = ("A", "B", "C", "D")

Verdict = Literal["correct", "wrong", "skipped"]


@dataclass(frozen=True)
class LetterRead:
    """What the official rule reads from one reply: the letter (or None) and whether the script
    would have skipped the record (``continue``) rather than counted it."""

    letter: str | None
    skipped: bool
    cleaned: str


def answer_text(output: ModelOutput) -> str:
    """The reply the rule reads: ``output.text`` with any inline think blocks split off."""
    text = output.text or ""
    if OPEN in text or CLOSE in text:
        text, _ = split_reasoning(text)
    return text


def read_letter(response: str) -> LetterRead:
    """The official letter rule (steps 1-3 in the module docstring) on one response."""
    predict = response.strip().replace("\n", "")
    if not predict or predict == "None":
        return LetterRead(None, skipped=False, cleaned=predict)
    if predict[0] in LETTERS:
        return LetterRead(predict[0], skipped=False, cleaned=predict)
    if len(predict) > 1 and predict[-2] in LETTERS:
        return LetterRead(predict[-2], skipped=False, cleaned=predict)
    return LetterRead(None, skipped=True, cleaned=predict)


def option_texts(reference: dict[str, Any]) -> list[str]:
    choices = list(reference["choices"])
    if len(choices) != len(LETTERS):
        raise ValueError(f"MMSU reference needs 4 choices, got {len(choices)}")
    return choices


def official_verdict(response: str, reference: dict[str, Any]) -> tuple[Verdict, LetterRead]:
    """correct / wrong / skipped for one reply under the official rule (no carry-over)."""
    read = read_letter(response)
    if read.skipped:
        return "skipped", read
    if read.letter is None:
        return "wrong", read
    chosen = option_texts(reference)[LETTERS.index(read.letter)]
    return ("correct" if chosen == reference["answer"] else "wrong"), read


class _MMSULetterJudge(Judge):
    """Shared scoring for the official and strict modes; they differ only in ``skip_unreadable``."""

    #: True: a reply the rule would ``continue`` past gets accuracy None (out of the denominator)
    skip_unreadable: bool

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if not outputs:
            raise ValueError(f"sample {sample.id!r}: no model output to score")
        ref = sample.reference
        verdict, read = official_verdict(answer_text(outputs[-1]), ref)
        skipped = verdict == "skipped" and self.skip_unreadable
        accuracy = None if skipped else float(verdict == "correct")
        if read.letter is not None:
            explanation = f"read {read.letter!r}; expected option text {ref['answer']!r}"
        elif read.skipped:
            what = "skipped (not counted)" if skipped else "counted as wrong"
            explanation = f"no letter at [0] or [-2] of {read.cleaned[:80]!r}: {what}"
        else:
            explanation = "empty or 'None' reply: counted as wrong"
        return Score(
            judge=self.name,
            metrics={"accuracy": accuracy, "answered": float(read.letter is not None)},
            passed=verdict == "correct",
            extracted=read.letter,
            parse_failed=read.letter is None,
            explanation=explanation,
            details={"verdict": verdict, "skipped": skipped, "expected": ref["answer"]},
        )


@register_judge("mmsu-official")
class MMSUOfficialJudge(_MMSULetterJudge):
    """MMSU's published letter rule; replies it cannot read are skipped (out of the denominator)."""

    name = "mmsu-official"
    skip_unreadable = True


@register_judge("mmsu-strict")
class MMSUStrictJudge(_MMSULetterJudge):
    """MMSU's letter rule, but a reply it cannot read counts as wrong (denominator = every item)."""

    name = "mmsu-strict"
    skip_unreadable = False


@register_judge("mmsu-extract")
class MMSUExtractJudge(ChoiceJudge):
    """Tiered letter/option-text extraction; correct when the chosen option's text is answer_gt.

    The ``choice`` judge compares a letter with ``reference["answer"]``; MMSU's answer is the
    option *text*, so this subclass compares texts instead (as the official rule does)."""

    name = "mmsu-extract"

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        if OPEN in text or CLOSE in text:
            text, _ = split_reasoning(text)
        return super().extract(text, reference)

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return option_texts(reference)[LETTERS.index(extracted)] == reference["answer"]
