"""MMSU's scoring rule (``mmsu_evaluation.py`` in github.com/dingdongwang/MMSU_Bench, commit
``321b2767d8fcab91e117e63d7fab920c78bd5db1``, the script's only version), verdict for verdict.

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

The carry-over (``official``). The script never resets ``model_predict`` between records, so in
case 2 a record *reuses the letter of the last earlier record that had one read* (case 3 records and
other case 2 records leave it as it was), and that letter is compared with *this* record's options
and ``answer_gt``. Exactly: walk the records in file order, keeping L = the letter set by the latest
record that reached step 3's assignment; a case-2 record is correct iff option L of its own row has
the text ``answer_gt``. The file order is the order ``mmsu_inference.py`` writes: the dataset's
order (it loops over the input file and writes one line per item), which is evalkit's sample index
order (hub row order, or the local files' order). So the verdict depends on the fixed dataset order
and the replies to earlier items, nothing else. A case-2 record with no L yet (no earlier record
had a letter read) makes the script stop with ``UnboundLocalError``; evalkit scores it wrong instead
(in the denominator, no letter), the one place where no verdict of the script exists.

How evalkit computes it, in one code path: the judge scores each reply alone, concurrently, and
writes what the carry-over needs into ``details`` (``letter``: the letter *read*, or None;
``matching_letters``: the letters whose option text is ``answer_gt``; ``carry: "pending"`` on a
case-2 reply). ``resolve_carry_over`` then walks a task's score records in sample-index order and
sets each pending record's verdict from the letter carried to it (``details["carry"]`` becomes
``{"letter": L, "from": sample id}``); the MMSU task runs it from ``Task.finalize_scores`` at every
finalize (after the streams are sorted, before summary.json and report.html), so scores.jsonl, the
summary, the report and ``evalkit compare`` all see the script's verdicts. It reads only those
item-local details, so running it again (a resumed run, a merge of shards) gives the same result.
Records of failed model calls or judges (errors) are passed over: they do not change L, as an item
missing from the script's file would not. Until the pass runs, a pending record reads ``accuracy``
0.0 (the item-independent verdict).

Other departures, and why:

- A ``response`` that is JSON null makes the script print "Error prediction!" and skip the record.
  A successful ``ModelOutput`` always carries the answer; a None text is treated as ``""`` (case 2).
- Inline ``<think>...</think>`` left in the text by an adapter without a reasoning parser is split
  off first (``answer_text``), so the letter rule reads the answer, not the thoughts. A think-only
  or truncated-in-thought reply is an empty answer: case 2.

How a verdict becomes a Score:

- letter read, option text == answer_gt: ``accuracy`` 1.0, ``answered`` 1;
- letter read, otherwise: ``accuracy`` 0.0, ``answered`` 1;
- case 2 (empty / "None"): ``answered`` 0, ``parse_failed``; ``accuracy`` from the carried letter
  in ``mmsu-official``, 0.0 in the other modes;
- case 3, skipped: ``accuracy`` **None**, ``answered`` 0, ``parse_failed``, ``details.skipped``.
  ``evalkit.summary`` leaves None out of a metric's mean, so a skipped item leaves the accuracy
  denominator exactly as the script does, while ``n_parse_failures`` and the ``answered`` mean keep
  it visible (``accuracy.n`` < ``n_scored`` by the number of skipped items).

Modes (the task's ``modes``): ``official`` -> ``mmsu-official`` (the script, carry-over included;
its scores also carry ``accuracy_independent``, the item-independent verdict, so summary.json and
the report show both numbers side by side); ``independent`` -> ``mmsu-independent`` (the same rule
with no carry-over: a case-2 reply is wrong); ``strict`` -> ``mmsu-strict`` (no carry-over, and a
reply the rule cannot read, case 3, counts as wrong too: the denominator is every item);
``extract`` -> ``mmsu-extract`` (evalkit's tiered ``extract_choice``, letter patterns then a unique
option text, comparing option texts as the official rule does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from evalkit.judges.base import Judge, share
from evalkit.judges.choice import ChoiceJudge
from evalkit.judges.extract import answer_text
from evalkit.records import ModelOutput, Sample, Score, ScoreRecord
from evalkit.registry import register_judge

LETTERS = ("A", "B", "C", "D")
#: ``details["carry"]`` of a case-2 reply before ``resolve_carry_over`` has given it a letter
PENDING = "pending"

Verdict = Literal["correct", "wrong", "skipped"]


@dataclass(frozen=True)
class LetterRead:
    """What the official rule reads from one reply: the letter (or None) and whether the script
    would have skipped the record (``continue``) rather than counted it."""

    letter: str | None
    skipped: bool
    cleaned: str


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


def matching_letters(reference: dict[str, Any]) -> list[str]:
    """The letters whose option text is ``answer_gt`` (step 4): the letters that score correct."""
    return [
        letter
        for letter, text in zip(LETTERS, option_texts(reference), strict=True)
        if text == reference["answer"]
    ]


def official_verdict(response: str, reference: dict[str, Any]) -> tuple[Verdict, LetterRead]:
    """correct / wrong / skipped for one reply under the item-independent rule (case 2: wrong)."""
    read = read_letter(response)
    if read.skipped:
        return "skipped", read
    correct = read.letter is not None and read.letter in matching_letters(reference)
    return ("correct" if correct else "wrong"), read


class _MMSULetterJudge(Judge):
    """Shared scoring of the letter-rule modes; they differ only in the two class switches."""

    metrics = (
        share("accuracy", "1 when the letter read by the official rule names the answer, else 0"),
        share("answered", "1 when the reply has a readable letter, else 0"),
        share("accuracy_independent", "accuracy of this item alone, before the carry-over pass"),
    )

    #: True: a reply the rule would ``continue`` past gets accuracy None (out of the denominator)
    skip_unreadable: bool
    #: True: a case-2 reply takes the carried letter (``resolve_carry_over``), as the script does
    carry_over: bool = False

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if not outputs:
            raise ValueError(f"sample {sample.id!r}: no model output to score")
        ref = sample.reference
        verdict, read = official_verdict(answer_text(outputs[-1]), ref)
        skipped = verdict == "skipped" and self.skip_unreadable
        accuracy = None if skipped else float(verdict == "correct")
        pending = self.carry_over and read.letter is None and not read.skipped
        if read.letter is not None:
            explanation = f"read {read.letter!r}; expected option text {ref['answer']!r}"
        elif read.skipped:
            what = "skipped (not counted)" if skipped else "counted as wrong"
            explanation = f"no letter at [0] or [-2] of {read.cleaned[:80]!r}: {what}"
        elif pending:
            explanation = "empty or 'None' reply: takes the previous item's letter (carry-over)"
        else:
            explanation = "empty or 'None' reply: counted as wrong"
        metrics = {"accuracy": accuracy, "answered": float(read.letter is not None)}
        details: dict[str, Any] = {
            "verdict": verdict,
            "skipped": skipped,
            "expected": ref["answer"],
            "letter": read.letter,
            "matching_letters": matching_letters(ref),
        }
        if self.carry_over:
            metrics["accuracy_independent"] = accuracy
        if pending:
            details["carry"] = PENDING
        return Score(
            judge=self.name,
            metrics=metrics,
            passed=verdict == "correct",
            extracted=read.letter,
            parse_failed=read.letter is None,
            explanation=explanation,
            details=details,
        )


def _carried(score: Score, carried: tuple[str, str] | None) -> Score:
    """A case-2 score with the carried letter applied (``carried``: letter and the sample it was
    read from, or None when no earlier item had one)."""
    letter, source = carried if carried is not None else (None, None)
    correct = letter is not None and letter in score.details["matching_letters"]
    if letter is None:
        explanation = "empty or 'None' reply and no earlier letter to carry over: counted as wrong"
    else:
        explanation = f"empty or 'None' reply: carries {letter!r} over from {source!r} (as the script does)"
    return score.model_copy(
        update={
            "metrics": {**score.metrics, "accuracy": float(correct)},
            "passed": correct,
            "explanation": explanation,
            "details": {**score.details, "carry": {"letter": letter, "from": source}},
        }
    )


def resolve_carry_over(records: Iterable[ScoreRecord]) -> Iterator[ScoreRecord]:
    """The script's carry-over over one task's score records in sample-index (dataset) order: each
    case-2 score of a carrying judge takes the letter last *read* by that judge on an earlier record.
    Pure and idempotent: it reads only the item-local ``details`` the judge wrote."""
    last: dict[str, tuple[str, str]] = {}
    for rec in records:
        score = rec.score
        carry = score.details.get("carry") if score.error is None else None
        if carry is not None:
            rec = rec.model_copy(update={"score": _carried(score, last.get(score.judge))})
        elif score.error is None and score.details.get("letter") is not None:
            last[score.judge] = (score.details["letter"], rec.sample_id)
        yield rec


@register_judge("mmsu-official")
class MMSUOfficialJudge(_MMSULetterJudge):
    """MMSU's published rule, carry-over included; replies it cannot read are skipped."""

    name = "mmsu-official"
    skip_unreadable = True
    carry_over = True


@register_judge("mmsu-independent")
class MMSUIndependentJudge(_MMSULetterJudge):
    """MMSU's letter rule item by item: an empty reply is wrong (no carry-over); unreadable skipped."""

    name = "mmsu-independent"
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

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return option_texts(reference)[LETTERS.index(extracted)] == reference["answer"]
