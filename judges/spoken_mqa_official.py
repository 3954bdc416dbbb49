"""Spoken-MQA's reference scorer, reproduced item by item (judge ``spoken-mqa-official``).

The Spoken-MQA authors score through AudioBench (their README clones AudioBench's default branch
and runs ``eval_spoken_mqa.sh``). This judge follows AudioBench's current scorer: commit
``420b28a419813914678d2c6e839777079e70ebc5`` ("Fix a bug in Spoken-MQA dataset", 2025-06-17; the
branch head ``e991641d`` merges it and changes nothing more in these files). That commit made the
reasoning splits read ``answer.text`` as a *list* of reference texts, as the hub stores them (its
committed logs show references like ``["143550"]`` on every split). Files and functions followed:

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
   of the reply): the prediction is "empty" (step 6).
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
5. Strip trailing ``.`` then ``/`` (``1/`` -> ``1``). The reference cuts the prediction to 100
   characters (``compute_score``), as this judge does.
6. *Nothing read* (an empty, whitespace-only or think-only reply, a reply with no number, a trigger
   with no number after it): the script writes ``"empty"`` as the prediction and compares it like
   any other (``unreadable_prediction``). It is wrong against every numeric reference, and right
   against a reference that is itself ``"empty"`` (see below). The reply is still counted as a
   parse failure. A missing reply (``None``) is read as ``""``: in the script it would reuse the
   previous item's prediction (a stale variable), which no item-by-item scorer can reproduce.

The reference (``compute_score``). ``answer.text`` is a list of texts (the hub) or a string (a
flattened local copy); a string is read as a one-item list, as the arithmetic class does explicitly.
(The reasoning class would iterate a string's characters, "12" becoming ["1", "2"]: a shape its own
data never has, so it is not reproduced.) An empty list (or ``""``) becomes ``"empty"``.

* The two digit splits (``short_digit``, ``long_digit``) compare with the texts as they are
  (*quirk:* ``"12.0"`` or ``"1,234"`` can never match a reply, nor can a long-digit answer >= 1e16).
* The reasoning splits pass each text through ``delete_extra_zero`` (after keeping the part after
  ``"#### "`` with commas removed, if ``####`` is in it). Answers are dataset text, so ``float()``
  reads them as the reference does; the ``eval`` fallback is replaced by an evaluator of literal
  arithmetic (numbers, tuples, unary and binary ``+ - * /``), any other expression counting as a
  failed ``eval`` (text kept as it is). A text ``eval`` turns into a non-number (``"1,234"`` is a
  tuple) normalises to None.

Comparison: ``compare_answer_with_groundtruth(prediction, *reference)``, so the *first* reference
text is the ground truth string and a second one lands in ``groundtruth_num``: ``\\text{`` wrappers
dropped, then case-insensitive string equality (a ``(a)``..``(f)`` answer matches when contained).
A second text only matters when the first does not match: then the script evals the prediction and
calls ``list()`` on it, which fails for every prediction ``answer_clean`` can produce (a number, an
unevaluable token, or ``"empty"``), so the verdict is False. Hence, as the script computes it, *only
the first acceptable answer counts*. Where the script itself stops with an exception, no verdict
exists and this judge raises (a judge error naming the reason): three or more reference texts
(``TypeError``: too many arguments) and a first text that normalised to None (``'\\text{' in None``).

The ``knowledge`` split is not in the reference script; it gets the reasoning treatment.

The split comes from ``sample.meta["split"]`` (set by the Spoken-MQA tasks) or a ``"split"`` key
in the reference; a sample with neither is a judge error, not a zero.

An earlier version of this judge followed AudioBench commit ``3c4e3861`` (one reference string per
item) and scored an unreadable reply wrong without comparing. On a string reference that commit and
this one agree on every reply; they differ only on a reasoning text that normalises to None (there
``"empty"``, matched by an unreadable reply; here the script raises), which the hub does not hold.
On the hub's lists the earlier judge compared the list's printed form (``"['53.2']"``), matching
nothing. Neither is kept as a mode.
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


#: what compute_score writes for a prediction or a reference that is empty
EMPTY = "empty"
#: compare_answer_with_groundtruth(answer, groundtruth_str, groundtruth_num=None) takes two at most
MAX_REFERENCE_TEXTS = 2


def acceptable_answers(answer: str | list[str]) -> list[str]:
    """``answer.text`` as a list of reference texts: a list as it is, a string as a one-item list
    (``""`` as none)."""
    if isinstance(answer, str):
        return [answer] if answer else []
    return list(answer)


def _normalised_reasoning_text(text: str) -> str | None:
    """The reasoning class's treatment of one reference text: the part after ``"#### "`` with commas
    removed when ``####`` is in it, then ``delete_extra_zero``."""
    value: str | None = text
    if "####" in text:
        value = normalise_reference_number(text.split("#### ")[-1].replace(",", ""))
    return normalise_reference_number(value)


def expected_answers(answer: str | list[str], split: str) -> list[str | None]:
    """What compute_score passes to the comparison: the texts as they are on the digit splits,
    normalised on the others (None where ``delete_extra_zero`` yields no number); ``["empty"]``
    when there is no text."""
    texts = acceptable_answers(answer)
    if split not in RAW_ANSWER_SPLITS:
        return [_normalised_reasoning_text(t) for t in texts] or [EMPTY]
    return list(texts) or [EMPTY]


def ground_truth(expected: list[str | None]) -> str:
    """The text ``compare_answer_with_groundtruth(prediction, *expected)`` compares with: the first
    one (a second lands in ``groundtruth_num``, which never matches; see the module docstring).
    Raises where the script stops with an exception instead of giving a verdict."""
    if len(expected) > MAX_REFERENCE_TEXTS:
        raise ValueError(
            f"{len(expected)} reference texts {expected!r}: AudioBench's compare_answer_with_groundtruth "
            f"takes at most {MAX_REFERENCE_TEXTS} (the script stops with TypeError), so no verdict exists"
        )
    first = expected[0]
    if first is None:
        raise ValueError(
            "the first reference text is not a number after delete_extra_zero (it returns None), so "
            "AudioBench's comparison stops with TypeError: no verdict exists; fix the dataset row"
        )
    return first


def expected_answer(answer: str | list[str], split: str) -> str:
    """The ground truth one reply is compared with (see ``ground_truth``)."""
    return ground_truth(expected_answers(answer, split))


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
    #: compute_score: ``if not model_prediction: model_prediction = "empty"``
    unreadable_prediction = EMPTY

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

    def alternatives(self, reference: dict[str, Any]) -> list[dict[str, Any]]:
        """The script reads a list of texts itself (only the first counts): no alternatives."""
        return [reference]

    def expected(self, reference: dict[str, Any]) -> str:
        return expected_answer(reference["answer"], reference["split"])

    def matches(self, extracted: str, reference: dict[str, Any]) -> bool:
        return same_answer(extracted, self.expected(reference))
