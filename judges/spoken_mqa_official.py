"""Spoken-MQA's reference scorer, reproduced item by item (judge ``spoken-mqa-official``).

The Spoken-MQA authors score through AudioBench (``eval_spoken_mqa.sh`` -> AudioBench commit
``3c4e3861f36bfffffbc1c7c04689b4bf858e82ec``). Files and functions this judge follows:

* ``src/dataset_src/spoken_mqa.py``: ``get_seperation_trigger('gsm8k')`` (the trigger phrases),
  ``spokenmqa_dataset_arithmatic.compute_score`` (short_digit, long_digit) and
  ``spokenmqa_dataset_reasoning.compute_score`` (single_step_reasoning, multi_step_reasoning); the
  split -> class table is AudioBench's ``src/dataset.py``.
* ``src/dataset_src/math_utils/utils.py`` (taken from MAmmoTH): ``answer_clean`` with
  ``dataset='gsm8k'``, ``delete_extra_zero`` and ``compare_answer_with_groundtruth``.

The rule, as those functions apply it to one reply:

1. Strip newlines at both ends. Triggers are ``"The answer is:"``, ``"The answer is"``, ``"the
   answer is"`` and ``"####"`` (case-sensitive; ``'####'`` is there because the scorer asks for the
   *gsm8k* triggers, so a markdown heading ``#### ...`` is a trigger too). *Quirk (answer_clean):* if
   any one trigger occurs more than once (``str.count``, case-sensitive, so ``"The answer is"`` once
   plus ``"the answer is"`` once does not count), only the text before the first ``"\\n\\n"`` is
   kept; that first paragraph may hold no trigger at all.
2. Split the (kept) text on every trigger. If a trigger occurred, read the text after the *last*
   one and take the *first* candidate there; else take the *last* candidate of the whole text.
   *Quirk (answer_clean):* a trigger followed by no number reads nothing (no fallback to the rest
   of the reply), which is a parse failure here and "empty" (wrong) there.
3. Candidates: strip trailing ``.``/``/`` and spaces, delete every comma, then each match of
   ``-?\\d+/?\\.?\\d*`` (so ``.5`` reads as ``5``, ``3-2`` as ``3`` and ``-2``, ``1.5/2`` as ``1.5``
   and ``2``; ``\\d`` also matches non-ASCII digits).
4. The chosen candidate goes through ``delete_extra_zero``: ``float()`` of it; when that fails (a
   fraction ``a/b``), ``eval()`` of it. *This judge never evals*: a fraction is computed from the
   captured digits as Python would compute the literal expression: ``int / int`` true division
   (correctly rounded, as ``float(Fraction(a, b))``), or ``float(a) / float(.d)`` for ``a/.d``;
   Decimal parses plain numbers. When the literal would not evaluate (``1/``, ``1/.``, a zero
   divisor, a leading-zero integer such as ``01/2``, non-ASCII digits, an overflow) the captured
   text is kept as it is. *Quirk (delete_extra_zero):* fractions become decimals (``1/2`` ->
   ``0.5``, ``1/3`` -> ``0.3333333333333333``), and the float is printed with ``repr`` and then
   trailing zeros are cut from that text, so integers >= 1e16 come out in scientific notation
   (``10000000000000000`` -> ``1e+16``), 17-digit integers are rounded to doubles, and an exponent
   ending in 0 loses it (``1e+20`` -> ``1e+2`` -> ``100.0``, ``1e-10`` -> ``0.1``).
5. Strip trailing ``.`` then ``/`` (``1/`` -> ``1``). Nothing read -> parse failure. The reference
   cuts the prediction to 100 characters (``compute_score``), as this judge does.

The expected answer (``compute_score``). *Quirk:* the two digit splits (``short_digit``,
``long_digit``) compare with the dataset text as it is (``"12.0"`` or ``"1,234"`` can never
match a reply, and neither can a long-digit answer >= 1e16); the reasoning splits pass it through
``delete_extra_zero`` (after keeping the part after ``"#### "`` with commas removed, if ``####``
is in it). There, an answer that ``eval`` turns into something other than a number (``"1,234"`` is
a tuple) becomes ``"empty"`` and no reply can match it. Answers are dataset text, so ``float()``
reads them as the reference does; the ``eval`` fallback is replaced by an evaluator of literal
arithmetic (numbers, tuples, unary and binary ``+ - * /``), any other expression counting as a
failed ``eval`` (text kept as it is).

Comparison (``compare_answer_with_groundtruth``, no numeric tolerance): ``\\text{`` wrappers dropped,
then case-insensitive string equality (a ``(a)``..``(f)`` answer matches when contained).

Where this judge differs from the reference, on purpose:

* A reply the rule cannot read is a parse failure, scored wrong. The reference writes ``"empty"``
  and compares it like any prediction, so it would count an unreadable reply *correct* against a
  reasoning answer that itself normalised to ``"empty"`` (``"1,234"``).
* A missing reply (``None``) is scored as an empty one (parse failure); in the reference it reuses
  the previous item's prediction (a stale variable), which cannot be reproduced item by item.
* The ``knowledge`` split is not in the reference script; it gets the reasoning treatment.

The split comes from ``sample.meta["split"]`` (set by the Spoken-MQA tasks) or a ``"split"`` key
in the reference; a sample with neither is a judge error, not a zero.
"""

from __future__ import annotations

import ast
import operator
import re
from decimal import Decimal
from typing import Any

from evalkit.judges.answer_match import AnswerMatchJudge
from evalkit.records import Sample
from evalkit.registry import register_judge

#: get_seperation_trigger('gsm8k'); order matters for the split ("The answer is:" before "The answer is")
TRIGGERS = ("The answer is:", "The answer is", "the answer is", "####")
_TRIGGER = re.compile("|".join(re.escape(t) for t in TRIGGERS))
_CANDIDATE = re.compile(r"-?\d+/?\.?\d*")
_ASCII_DIGITS = re.compile(r"[0-9]+")

#: hub split names -> how the reference treats the expected answer
RAW_ANSWER_SPLITS = frozenset({"short_digit", "long_digit"})  # spokenmqa_dataset_arithmatic
NORMALISED_ANSWER_SPLITS = frozenset(
    {"single_step_reasoning", "multi_step_reasoning", "knowledge"}  # spokenmqa_dataset_reasoning
)
MAX_PREDICTION_CHARS = 100
CHOICE_ANSWERS = ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)")


def float_text(value: float) -> str:
    """How delete_extra_zero prints a float: ``repr``, trailing ``0`` characters cut from that text,
    then an integer if only the point is left, else the repr of the float read back."""
    text = repr(value).rstrip("0")
    if text.endswith("."):
        return str(int(text.rstrip(".")))
    return repr(float(text))


def _int_literal(digits: str) -> int | None:
    """The value of an unsigned Python integer literal, None when Python would reject it (non-ASCII
    digits; a leading zero in a non-zero literal)."""
    if not _ASCII_DIGITS.fullmatch(digits) or (digits[0] == "0" and digits.strip("0")):
        return None
    return int(digits)


def _fraction_value(token: str) -> str:
    """``eval`` of a captured ``a/b`` token, computed without eval; the token itself when the
    literal would not evaluate."""
    numerator, denominator = token.split("/")
    negative = numerator.startswith("-")
    try:
        top = _int_literal(numerator.lstrip("-"))
        if top is None:
            return token
        top = -top if negative else top
        if denominator.startswith("."):  # int / float literal
            if not _ASCII_DIGITS.fullmatch(denominator[1:]):  # "1/." is a syntax error
                return token
            return float_text(float(top) / float(Decimal(denominator)))
        bottom = _int_literal(denominator) if denominator else None  # "1/" is a syntax error
        if bottom is None:
            return token
        return float_text(top / bottom)  # int true division: correctly rounded, as eval does it
    except (ZeroDivisionError, OverflowError, ValueError):
        return token


def candidate_value(token: str) -> str:
    """delete_extra_zero of one captured candidate (``-?\\d+/?\\.?\\d*``)."""
    if "/" in token:
        return _fraction_value(token)
    return float_text(float(Decimal(token)))  # float(token) never fails on a slash-free candidate


def read_prediction(reply: str) -> str:
    """answer_clean('gsm8k', triggers, reply) followed by compute_score's 100-character cut;
    ``""`` when nothing can be read."""
    text = reply.strip("\n")
    if any(text.count(trigger) > 1 for trigger in TRIGGERS):
        text = text.split("\n\n")[0]
    pieces = _TRIGGER.split(text)
    after_trigger = len(pieces) > 1
    segment = pieces[-1] if after_trigger else text
    segment = segment.strip("\n").rstrip(".").rstrip("/").strip(" ").replace(",", "")
    tokens = _CANDIDATE.findall(segment)
    if not tokens:
        return ""
    chosen = candidate_value(tokens[0] if after_trigger else tokens[-1])
    return chosen.rstrip(".").rstrip("/")[:MAX_PREDICTION_CHARS]


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class _NotLiteralArithmetic(Exception):
    pass


def _literal_arithmetic(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _literal_arithmetic(node.body)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_literal_arithmetic(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_literal_arithmetic(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_literal_arithmetic(node.left), _literal_arithmetic(node.right))
    raise _NotLiteralArithmetic


def normalise_reference_number(text: str | None) -> str | None:
    """delete_extra_zero on dataset text: the float text, the text as it is when it is not a number,
    or None when the eval fallback yields a non-number (``"1,234"`` is a tuple)."""
    if text is None:
        return None  # float(None) and eval(None) both raise: delete_extra_zero returns its input
    try:
        return float_text(float(text))
    except ValueError:
        pass
    try:
        value = _literal_arithmetic(ast.parse(text.lstrip(" \t"), mode="eval"))  # eval strips these
    except Exception:  # noqa: BLE001 - any failing eval leaves the text as it is
        return text
    if isinstance(value, int):  # bool included, as isinstance(True, int)
        return str(value)
    if isinstance(value, float):
        return float_text(value)
    return None


def expected_answer(answer: str, split: str) -> str:
    """What compute_score compares with: the raw text on the digit splits, normalised on the others;
    ``"empty"`` for an answer that ends up empty."""
    value: str | None = answer
    if split not in RAW_ANSWER_SPLITS:
        if "####" in answer:
            value = normalise_reference_number(answer.split("#### ")[-1].replace(",", ""))
        value = normalise_reference_number(value)
    return value or "empty"


def same_answer(prediction: str, expected: str) -> bool:
    """compare_answer_with_groundtruth without a numeric ground truth."""
    if "\\text{" in prediction:
        prediction = prediction.replace("\\text{", "").rstrip("}")
    if "\\text{" in expected:
        expected = expected.replace("\\text{", "").rstrip("}")
    if expected.lower() in CHOICE_ANSWERS:
        return expected.lower() in prediction.lower()
    return prediction.lower() == expected.lower()


@register_judge("spoken-mqa-official")
class SpokenMQAOfficialJudge(AnswerMatchJudge):
    """Spoken-MQA as AudioBench scores it (answer_clean + compare_answer_with_groundtruth)."""

    name = "spoken-mqa-official"

    def _turn_references(self, sample: Sample, n_outputs: int) -> list[dict[str, Any] | None]:
        refs = super()._turn_references(sample, n_outputs)
        out: list[dict[str, Any] | None] = []
        for ref in refs:
            if ref is not None:
                ref = {"split": sample.meta.get("split"), **ref}
                split = ref["split"]
                if split not in RAW_ANSWER_SPLITS | NORMALISED_ANSWER_SPLITS:
                    known = ", ".join(sorted(RAW_ANSWER_SPLITS | NORMALISED_ANSWER_SPLITS))
                    raise ValueError(
                        f"sample {sample.id!r}: spoken-mqa-official needs the Spoken-MQA split "
                        f"(sample.meta['split'] or reference['split'], one of {known}); got {split!r}"
                    )
            out.append(ref)
        return out

    def extract(self, text: str, reference: dict[str, Any]) -> str | None:
        return read_prediction(text) or None

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return same_answer(extracted, expected_answer(str(reference["answer"]), reference["split"]))
