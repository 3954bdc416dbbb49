"""The ``spoken-mqa-official`` judge against the AudioBench reference rule (commit 420b28a, "Fix a
bug in Spoken-MQA dataset": src/dataset_src/spoken_mqa.py, src/dataset_src/math_utils/utils.py):
each quirk by hand, then an item-level equivalence check with a plain transcription of the
reference written here (string references; lists are covered in test_official_fidelity.py)."""

from __future__ import annotations

import random
import re

import pytest

from evalkit.judges.base import load_judge
from evalkit.records import ModelOutput, Sample, Score, Turn

DIGIT_SPLITS = ("short_digit", "long_digit")
REASONING_SPLITS = ("single_step_reasoning", "multi_step_reasoning")


def score(reply: str | None, answer: str, split: str = "single_step_reasoning") -> Score:
    sample = Sample(
        id="s",
        task="spoken-mqa",
        conversation=[Turn(role="user", text="q")],
        reference={"answer": answer},
        meta={"split": split},
    )
    return load_judge("spoken-mqa-official").score(sample, [ModelOutput(text=reply)])


def verdict(s: Score) -> tuple[str | None, bool, bool]:
    return s.extracted, s.passed, s.parse_failed


# -- the reference rule, transcribed plainly ------------------------------------------------------
def ref_delete_extra_zero(n):
    """utils.delete_extra_zero. ``eval`` runs only on test-written answers and on captured
    candidates that are ASCII digits, '-', '/' and '.' (checked first), never on free text."""
    try:
        n = float(n)
    except Exception:
        try:
            if not isinstance(n, str):
                raise TypeError
            if re.fullmatch(r"-?\d+/?\.?\d*", n) and not re.fullmatch(r"[-0-9/.]+", n):
                raise SyntaxError("a non-ASCII digit is not a Python numeral")
            n = eval(n, {"__builtins__": {}}, {})  # noqa: S307 - see docstring
        except Exception:
            return n
    if isinstance(n, int):
        return str(n)
    if isinstance(n, float):
        s = str(n).rstrip("0")
        return str(int(s.rstrip("."))) if s.endswith(".") else str(float(s))
    return None


def ref_answer_clean(pred: str) -> str:
    """utils.answer_clean('gsm8k', get_seperation_trigger('gsm8k'), pred)."""
    triggers = ["The answer is:", "The answer is", "the answer is", "####"]
    pred = pred.strip("\n")
    if any(pred.count(t) > 1 for t in triggers):
        pred = pred.split("\n\n")[0]
    parts = re.split("|".join(triggers), pred)
    flag = len(parts) > 1
    if flag:
        pred = parts[-1]
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ")
    pred = pred.replace(",", "")
    found = [ref_delete_extra_zero(x.replace(",", "")) for x in re.findall(r"-?\d+/?\.?\d*", pred)]
    if not found:
        return ""
    return (found[0] if flag else found[-1]).rstrip(".").rstrip("/")


def ref_compare(answer: str, truth: str) -> bool:
    """utils.compare_answer_with_groundtruth(answer, truth) (no groundtruth_num)."""
    if "\\text{" in answer:
        answer = answer.replace("\\text{", "").rstrip("}")
    if "\\text{" in truth:
        truth = truth.replace("\\text{", "").rstrip("}")
    if truth.lower() in ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]:
        return truth.lower() in answer.lower()
    return answer.lower() == truth.lower()


def ref_item(reply: str, answer: str, split: str) -> tuple[str, bool | None]:
    """One item of spokenmqa_dataset_{arithmatic,reasoning}.compute_score for a one-text reference:
    (prediction, correct), correct None where the script stops (a reasoning answer that
    delete_extra_zero turns into None reaches ``'\\text{' in None``)."""
    prediction = ref_answer_clean(reply)
    if split not in DIGIT_SPLITS:  # the reasoning class normalises each answer text
        if "####" in answer:
            answer = ref_delete_extra_zero(answer.split("#### ")[-1].replace(",", ""))
        answer = ref_delete_extra_zero(answer)
        if answer is None:
            return prediction or "empty", None
    if not prediction:
        prediction = "empty"
    if not answer:
        answer = "empty"
    if len(prediction) > 100:
        prediction = prediction[:100]
    return prediction, ref_compare(prediction, answer)


def assert_same_as_reference(reply: str, answer: str, split: str) -> Score | None:
    prediction, correct = ref_item(reply, answer, split)
    if correct is None:  # no verdict in the script: a judge error here
        with pytest.raises(ValueError, match="not a number after delete_extra_zero"):
            score(reply, answer, split)
        return None
    s = score(reply, answer, split)
    unreadable = prediction == "empty"
    # an unreadable reply is a counted parse failure, compared as "empty" as the script does
    assert verdict(s) == (None if unreadable else prediction, correct, unreadable), (reply, answer, split)
    return s


# -- quirk 1: a trigger with no number after it reads nothing -------------------------------------
@pytest.mark.parametrize("split", DIGIT_SPLITS + REASONING_SPLITS)
def test_trigger_without_a_number_is_a_parse_failure(split: str) -> None:
    s = score("I computed 42. The answer is forty two.", "42", split)
    assert verdict(s) == (None, False, True) and s.metrics == {"accuracy": 0.0}
    # the generic GSM8K-style judge (mode gsm8k) falls back to the last number instead
    sample = Sample(id="s", task="t", conversation=[Turn(role="user", text="q")], reference={"answer": "42"})
    generic = load_judge("numeric").score(
        sample, [ModelOutput(text="I computed 42. The answer is forty two.")]
    )
    assert generic.extracted == "42" and generic.passed
    assert verdict(score("The answer is 42, I computed forty two", "42", split)) == ("42", True, False)


@pytest.mark.parametrize("reply", ["", "\n\n", "I do not know.", "The answer is unknown", "####"])
def test_replies_without_a_number_are_parse_failures(reply: str) -> None:
    assert verdict(score(reply, "7")) == (None, False, True)


def test_missing_reply_is_a_parse_failure() -> None:
    assert verdict(score(None, "7")) == (None, False, True)


# -- quirk 2: a trigger repeated -> first paragraph only ------------------------------------------
@pytest.mark.parametrize(
    ("reply", "extracted"),
    [
        ("The answer is 7.\n\nWait, recheck. The answer is 8.", "7"),  # "The answer is" twice
        ("Work: 3+4=7.\n\nThe answer is 8. The answer is 8.", "7"),  # 1st paragraph: no trigger, last number
        ("The answer is 7.\n\nWait, the answer is 8.", "8"),  # each variant once: no cut, last trigger
        ("The answer is: 8", "8"),  # "The answer is:" also counts as "The answer is": once each
        ("\n\nThe answer is 7.\n\nThe answer is 8.", "7"),  # leading newlines stripped first
        ("The answer is 7.\nThe answer is 8.", "8"),  # no blank line: the whole reply, last trigger
        ("#### Step 1\nadd 3\n\n#### Result\n8", "1"),  # '####' headings are triggers (gsm8k set)
    ],
)
def test_repeated_trigger_keeps_the_first_paragraph(reply: str, extracted: str) -> None:
    s = score(reply, "8")
    assert s.extracted == extracted and s.passed is (extracted == "8")


# -- quirk 3: fractions and the float printing of delete_extra_zero --------------------------------
@pytest.mark.parametrize(
    ("reply", "extracted"),
    [
        ("The answer is 1/2.", "0.5"),
        ("The answer is 3/4", "0.75"),
        ("The answer is 1/3", "0.3333333333333333"),
        ("The answer is -6/3", "-2"),
        ("The answer is 2/.5", "4"),  # int / float literal
        ("The answer is 7/", "7"),  # trailing slash stripped
        ("The answer is 01/2", "01/2"),  # eval rejects a leading-zero literal: text kept
        ("The answer is 1/0", "1/0"),  # ZeroDivisionError: text kept
        ("The answer is 1/0.5", "1/0"),  # the candidate stops at the second '.': 1/0 then 5
        ("The answer is .5", "5"),  # a candidate starts with a digit
        ("The answer is 1.5/2", "1.5"),
        ("The answer is 12.50 dollars", "12.5"),
        ("The answer is 12.0", "12"),
        ("The answer is 1,234,567.", "1234567"),
        ("The answer is 3-2", "3"),
        ("Total: 10000000000000000", "1e+16"),  # >= 1e16: scientific notation
        ("The answer is 12345678901234567", "1.2345678901234568e+16"),
        ("The answer is 9007199254740993", "9007199254740992"),  # rounded to a double
        ("The answer is 100000000000000000000", "100.0"),  # 1e+20 -> "1e+2" -> 100.0
        ("The answer is 0.0000000001", "0.1"),  # 1e-10 -> "1e-1"
        ("The answer is 0.00001", "1e-05"),
    ],
)
def test_fractions_and_float_printing(reply: str, extracted: str) -> None:
    assert score(reply, "0").extracted == extracted


def test_fraction_matches_decimal_answer_only_where_the_answer_is_normalised() -> None:
    assert score("The answer is 1/2", "0.5", "single_step_reasoning").passed
    assert score("The answer is 1/2", "0.50", "multi_step_reasoning").passed  # answer normalised too
    assert score("The answer is 1/2", "0.5", "short_digit").passed
    assert not score("The answer is 1/2", "1/2", "short_digit").passed  # "0.5" != "1/2"
    assert score("The answer is 1/2", "1/2", "single_step_reasoning").passed  # answer: eval 1/2


def test_fractions_agree_with_python_literal_evaluation() -> None:
    """The judge computes fractions without eval; these constants are test-written literals."""
    from evalkit.judges.spoken_mqa_official import candidate_value

    for token in ["1/2", "-1/3", "22/7", "0/5", "00/5", "-0/3", "1/.3", "10/.25", "123456789/7", "7/1"]:
        assert candidate_value(token) == ref_delete_extra_zero(token), token
    for token in ["1/", "1/.", "01/2", "1/05", "1/0", "1/00", "3/.0", "٣/4", "3/٤"]:
        assert candidate_value(token) == token == ref_delete_extra_zero(token), token


# -- quirk 4: only the case-sensitive triggers (and '####') -----------------------------------------
@pytest.mark.parametrize(
    ("reply", "extracted"),
    [
        ("THE ANSWER IS 5, from 2 and 3", "3"),  # not a trigger: last number
        ("The Answer Is 5, from 2 and 3", "3"),
        ("Answer: 5, from 2 and 3", "3"),
        ("So the answer is 5, from 2 and 3", "5"),
        ("The answer is: 5, from 2 and 3", "5"),
        ("#### 5 from 2 and 3", "5"),
        ("The answer is 5 apples, 6 pears", "5"),  # first number after the last trigger
        ("I think 4. The answer is 5. No, the answer is 6", "6"),
    ],
)
def test_triggers_are_case_sensitive(reply: str, extracted: str) -> None:
    assert score(reply, "5").extracted == extracted


# -- quirk 5: the digit splits compare with the raw answer text -------------------------------------
@pytest.mark.parametrize(
    ("reply", "answer", "digit_split_correct", "reasoning_correct"),
    [
        ("The answer is 12", "12.0", False, True),
        ("The answer is 12.0", "12", True, True),  # the reply is normalised everywhere
        ("The answer is 1234", "#### 1,234", False, True),  # gsm8k-style answer, reasoning only
        ("The answer is 0.5", ".5", False, True),
        ("The answer is 12345678901234567", "12345678901234567", False, True),  # both rounded alike
        ("The answer is 10000000000000000", "1E+16", True, True),  # case-insensitive equality
        ("The answer is 1234567890123456", "1234567890123456", True, True),
    ],
)
def test_digit_splits_do_not_normalise_the_answer(
    reply: str, answer: str, digit_split_correct: bool, reasoning_correct: bool
) -> None:
    for split in DIGIT_SPLITS:
        assert score(reply, answer, split).passed is digit_split_correct, split
    for split in (*REASONING_SPLITS, "knowledge"):
        assert score(reply, answer, split).passed is reasoning_correct, split


def test_reasoning_answer_that_is_no_number_has_no_verdict() -> None:
    """eval("1,234") is a tuple: delete_extra_zero returns None and the comparison raises."""
    assert ref_item("I do not know", "1,234", "single_step_reasoning") == ("empty", None)
    with pytest.raises(ValueError, match="not a number after delete_extra_zero"):
        score("The answer is 1234", "1,234", "single_step_reasoning")
    assert score("The answer is 1234", "1,234", "short_digit").passed is False  # raw text: no match


def test_unreadable_reply_is_compared_as_empty() -> None:
    """The script writes "empty" for an unreadable reply and compares it like any prediction."""
    assert ref_item("I do not know", "empty", "short_digit") == ("empty", True)
    assert verdict(score("I do not know", "empty", "short_digit")) == (None, True, True)
    assert verdict(score("I do not know", "7", "short_digit")) == (None, False, True)


def test_prediction_cut_to_100_characters() -> None:
    long = "0" + "1" * 120 + "/3"  # a leading-zero literal: kept as text, then cut
    s = score(f"The answer is {long}", "7")
    assert s.extracted == long[:100] and not s.passed


def test_split_comes_from_meta_or_reference_and_is_required() -> None:
    judge = load_judge("spoken-mqa-official")
    out = [ModelOutput(text="The answer is 12")]
    turn = [Turn(role="user", text="q")]
    by_ref = Sample(id="a", task="t", conversation=turn, reference={"answer": "12.0", "split": "long_digit"})
    assert judge.score(by_ref, out).passed is False
    with pytest.raises(ValueError, match="needs the Spoken-MQA split"):
        judge.score(Sample(id="b", task="t", conversation=turn, reference={"answer": "12"}), out)
    with pytest.raises(ValueError, match="got 'bogus'"):
        judge.score(
            Sample(id="c", task="t", conversation=turn, reference={"answer": "12"}, meta={"split": "bogus"}),
            out,
        )


def test_official_mode_uses_this_judge() -> None:
    from evalkit.tasks.base import resolve_tasks

    for suffix in ("short-digit", "long-digit", "single-step", "multi-step", "knowledge"):
        [task] = resolve_tasks(f"spoken-mqa-{suffix}")
        assert task.judges == ("spoken-mqa-official",)
    [task] = resolve_tasks("spoken-mqa-short-digit:mode=gsm8k")
    assert task.judges == ("numeric",)


# -- equivalence ---------------------------------------------------------------------------------
HAND_WRITTEN = [
    "",
    " ",
    "\n",
    "42",
    "The answer is 42",
    "The answer is 42.",
    "The answer is: 42",
    "the answer is 42",
    "The answer is $42.00.",
    "The answer is -3.",
    "The answer is -.5",
    "The answer is 3 - 5",
    "The answer is 1/2",
    "The answer is 1/2/3",
    "The answer is 2/4.",
    "The answer is 10/4",
    "The answer is 5/./",
    "The answer is 1,000,000",
    "The answer is 1,000.50",
    "The answer is 007",
    "The answer is 007/2",
    "The answer is ٤٢",
    "The answer is 42%",
    "The answer is forty-two",
    "Three plus four is seven. The answer is seven.",
    "First, 6 x 7 = 42.\n\nThe answer is 42.",
    "Step 1: 12 / 4 = 3\nStep 2: 3 + 9 = 12\nThe answer is 12",
    "The answer is 12.\n\nThe answer is 13.",
    "The answer is 12.\n\nthe answer is 13.",
    "Let me think.\n\nThe answer is 12. The answer is 13.",
    "#### 42",
    "## Solution\n#### Final\n42\n\n#### 43",
    "The answer is\n\n42",
    "The answer is 42.\n\n\nThe answer is: 41",
    "I'm not sure, maybe 3 or 4.",
    "THE ANSWER IS 9 because 3 times 3",
    "The answer is 1e5",
    "The answer is 3.14159.",
    "The answer is 0.1 + 0.2",
    "The answer is 99999999999999999999999",
    "The answer is 0.000000000000000000001",
    "1" * 400,
    "The answer is " + "9" * 120,
    "The answer is 1/" + "3" * 30,
    "The answer is 12...",
    "The answer is 12./",
    "The answer is ./7",
]

NUMBERS = [
    "0", "7", "-7", "12", "42", "100", "0.5", ".5", "12.50", "12.0", "3.14", "1,234", "12,345,678",
    "1/2", "3/4", "-6/3", "2/.5", "01/2", "1/0", "7/", "1.5/2", "10000000000000000",
    "12345678901234567", "9007199254740993", "100000000000000000000", "0.00001", "0.0000000001",
    "-0", "00", "999999999999999", "٣", "1e3",
]  # fmt: skip

TEMPLATES = [
    "The answer is {n}.",
    "The answer is: {n}",
    "the answer is {n}",
    "The Answer Is {n}",
    "THE ANSWER IS {n}",
    "#### {n}",
    "{n}",
    "So we get {m} and then {n}.",
    "First {m} apples, then {n} pears. The answer is {n}.",
    "The answer is {n}, not {m}.",
    "We know {m}.\n\nThe answer is {n}.\n\nThe answer is {m}.",
    "The answer is {m}.\n\nWait: the answer is {n}.",
    "Reasoning: {m} + {m} = {n}\n\nSo the answer is {n}",
    "\n\nThe answer is {n}\n\n",
    "The answer is {n}/",
    "I computed {n}. The answer is unknown.",
    "{m} - {n}",
    "Total = ${n}.00 (about {m}).",
    "The answer is {m}{n}",
    "#### Work\n{m}\n\n#### Answer\n{n}",
]


def corpus() -> list[str]:
    rng = random.Random(20250515)
    replies = list(HAND_WRITTEN)
    for template in TEMPLATES:
        for _ in range(12):
            replies.append(template.format(n=rng.choice(NUMBERS), m=rng.choice(NUMBERS)))
    return replies


def test_equivalence_with_the_reference_rule() -> None:
    replies = corpus()
    assert len(replies) >= 200
    answers = ["7", "42", "12", "0.5", "12.0", "1,234", "1/2", "-7", "1e+16", "#### 1,234", "00"]
    rng = random.Random(7)
    outcomes = {"correct": 0, "wrong": 0, "parse_failed": 0}
    for reply in replies:
        prediction, _ = ref_item(reply, "0", "short_digit")
        # score against the number the reference reads (so some are right) and a few others
        pool = [*rng.sample(answers, 3), prediction if prediction != "empty" else "7"]
        for answer in pool:
            for split in DIGIT_SPLITS + REASONING_SPLITS:
                s = assert_same_as_reference(reply, answer, split)
                if s is None:
                    continue
                key = "parse_failed" if s.parse_failed else "correct" if s.passed else "wrong"
                outcomes[key] += 1
    assert all(n >= 50 for n in outcomes.values()), outcomes
