"""Answer extraction rules and the answer-matching judges: these rules *are* the score."""

from __future__ import annotations

import pytest

from evalkit.judges.choice import ChoiceJudge
from evalkit.judges.extract import extract_choice, extract_number, normalise_number
from evalkit.judges.numeric import NumericJudge
from evalkit.records import ModelOutput, Sample, Turn

ANIMALS = ["cat", "cow", "dog", "duck"]


# -- extract_number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 1,234.50", "1234.5"),
        ("the answer is 42.", "42"),
        ("THE ANSWER IS 7", "7"),
        ("I think 3 then 7", "7"),  # no marker: the last number
        ("First 10 apples, then 4 more, so 14 in all", "14"),
        ("12.0", "12"),
        ("It comes to 100.00 dollars", "100"),
        ("0.50", "0.5"),
        ("It is -5 degrees", "-5"),
        ("The answer is -2.50.", "-2.5"),
        ("The answer is $1,000", "1000"),
        ("The answer is 5, not 6", "5"),  # the first number after the marker
        ("I was told 9, so the answer is 12 apples", "12"),
        ("The answer is 3. No wait. The answer is 4.", "4"),  # the last marker
        ("The answer is unknown, but 8 seems likely", "8"),  # after the marker
        ("There were 5 cats. The answer is unclear.", "5"),  # marker without number: fallback
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1,234.50", "1234.5"), ("12.0", "12"), ("-0", "0"), ("-0.0", "0"), ("7.", "7"), ("abc", None)],
)
def test_normalise_number(raw: str, expected: str | None) -> None:
    assert normalise_number(raw) == expected


# -- extract_choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # tier 1: "answer is X" / "answer: X"
        ("The answer is D", "D"),
        ("Answer: B", "B"),
        ("I think the answer is b", "B"),
        ("The answer is option (C).", "C"),
        ("The answer is A because it purrs", "A"),
        # tier 1 beats the other tiers
        ("A) is wrong; the answer is C", "C"),
        # tier 2: reply starts with the letter
        ("B", "B"),
        ("B) cow", "B"),
        ("(C) dog", "C"),
        ("D. duck", "D"),
        ("  A, the cat", "A"),
        # tier 3: option / choice
        ("I pick option C.", "C"),
        ("Choice A seems right", "A"),
        # tier 4: a letter in parentheses
        ("I'd go with (B).", "B"),
        # tier 5: a letter followed by ) or .
        ("Hmm, probably D.", "D"),
        # option text, whole words, case-insensitive
        ("A cow says moo", "B"),
        ("It's a cow.", "B"),
        ("Definitely the DOG", "C"),
        ("The answer is a cow.", "B"),  # "a" is the article here, not option A
        ("the answer is a duck", "D"),
    ],
)
def test_extract_choice(text: str, expected: str) -> None:
    assert extract_choice(text, ANIMALS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A or B",  # no tier matches and no option text
        "It is (A) or (B)",  # two letters in the deciding tier
        "The answer is A. Actually the answer is B.",
        "cat or dog",  # two option texts
        "I don't know",
        "",
        "ducks are not cats",  # whole words only: neither "duck" nor "cat" occurs as a word
    ],
)
def test_extract_choice_ambiguous_or_unreadable_is_none(text: str) -> None:
    assert extract_choice(text, ANIMALS) is None


def test_extract_choice_ignores_letters_beyond_the_options() -> None:
    assert extract_choice("The answer is E", ANIMALS) is None
    assert extract_choice("The answer is E", [*ANIMALS, "horse"]) == "E"
    assert extract_choice("(E) or (B)", ANIMALS) == "B"  # E is not an option, so B is unambiguous


# -- the judges -----------------------------------------------------------------------------------


def _sample(n_turns: int, reference: dict, sample_id: str = "s1") -> Sample:
    return Sample(
        id=sample_id,
        task="t",
        conversation=[Turn(role="user", text=f"q{i}") for i in range(n_turns)],
        reference=reference,
    )


def _outs(*texts: str | None) -> list[ModelOutput]:
    return [ModelOutput(text=t) for t in texts]


def test_numeric_single_turn_correct() -> None:
    score = NumericJudge().score(_sample(1, {"answer": "1,234.50"}), _outs("The answer is 1234.5"))
    assert score.judge == "numeric"
    assert score.metrics == {"accuracy": 1.0}
    assert score.passed is True
    assert score.extracted == "1234.5"
    assert score.parse_failed is False
    assert score.error is None
    assert score.explanation == "turn 0: expected '1,234.50', read '1234.5'"
    assert score.details == {
        "turns": [
            {"turn": 0, "expected": "1,234.50", "extracted": "1234.5", "parse_failed": False, "correct": True}
        ]
    }


def test_numeric_single_turn_wrong() -> None:
    score = NumericJudge().score(_sample(1, {"answer": 12}), _outs("Seven plus five is 13."))
    assert score.metrics == {"accuracy": 0.0}
    assert score.passed is False
    assert score.extracted == "13"
    assert score.parse_failed is False
    assert "expected '12'" in score.explanation and "read '13'" in score.explanation


def test_numeric_parse_failure_is_counted_and_wrong() -> None:
    score = NumericJudge().score(_sample(1, {"answer": "12"}), _outs("I cannot say."))
    assert score.parse_failed is True
    assert score.metrics == {"accuracy": 0.0}
    assert score.passed is False
    assert score.extracted is None
    assert score.explanation == "turn 0: expected '12', could not read an answer"
    assert score.details["turns"][0]["parse_failed"] is True
    assert score.details["turns"][0]["correct"] is False


def test_numeric_empty_text_is_a_parse_failure() -> None:
    score = NumericJudge().score(_sample(1, {"answer": "1"}), _outs(None))
    assert score.parse_failed is True
    assert score.metrics["accuracy"] == 0.0


def test_single_turn_reference_judges_the_last_reply() -> None:
    # a conversation with an "answer" reference is judged on its final reply only
    score = NumericJudge().score(_sample(2, {"answer": "5"}), _outs("no idea", "The answer is 5"))
    assert score.metrics == {"accuracy": 1.0}
    assert [row["turn"] for row in score.details["turns"]] == [1]
    assert score.parse_failed is False


def test_numeric_multi_turn() -> None:
    sample = _sample(3, {"turns": [{"answer": "7"}, {"answer": "10"}, {"answer": "8"}]})
    score = NumericJudge().score(sample, _outs("You have 7.", "The answer is 11", "Eight? I don't know."))
    rows = score.details["turns"]
    assert [r["turn"] for r in rows] == [0, 1, 2]
    assert [r["expected"] for r in rows] == ["7", "10", "8"]
    assert [r["extracted"] for r in rows] == ["7", "11", None]
    assert [r["correct"] for r in rows] == [True, False, False]
    assert [r["parse_failed"] for r in rows] == [False, False, True]
    # accuracy: the whole conversation right; turn_accuracy: 1 of 3 turns right
    assert score.metrics["accuracy"] == 0.0
    assert score.metrics["turn_accuracy"] == pytest.approx(1 / 3)
    assert score.passed is False
    assert score.parse_failed is True  # any turn that could not be read
    assert score.extracted is None  # the last judged turn's reading
    assert score.explanation == (
        "turn 0: expected '7', read '7'; turn 1: expected '10', read '11'; "
        "turn 2: expected '8', could not read an answer"
    )


def test_numeric_multi_turn_all_right_and_skipped_turns() -> None:
    sample = _sample(3, {"turns": [{"answer": "7"}, None, {"answer": "8"}]})
    score = NumericJudge().score(sample, _outs("7", "whatever", "The answer is 8"))
    assert [r["turn"] for r in score.details["turns"]] == [0, 2]
    assert score.metrics == {"accuracy": 1.0, "turn_accuracy": 1.0}
    assert score.passed is True
    assert score.extracted == "8"


def test_no_reference_answer_raises() -> None:
    with pytest.raises(ValueError, match="neither 'answer' nor 'turns'"):
        NumericJudge().score(_sample(1, {}), _outs("1"))
    with pytest.raises(ValueError, match="no turn has a reference answer"):
        NumericJudge().score(_sample(2, {"turns": [None, None]}), _outs("1", "2"))


def test_choice_single_turn() -> None:
    ref = {"answer": "B", "choices": ANIMALS}
    right = ChoiceJudge().score(_sample(1, ref), _outs("A cow says moo"))
    assert right.judge == "choice"
    assert right.metrics == {"accuracy": 1.0}
    assert right.extracted == "B"
    assert right.passed is True
    assert right.explanation == "turn 0: expected 'B', read 'B'"

    wrong = ChoiceJudge().score(_sample(1, ref), _outs("The answer is (A)"))
    assert wrong.metrics == {"accuracy": 0.0}
    assert wrong.extracted == "A"
    assert wrong.parse_failed is False


def test_choice_reference_letter_is_normalised() -> None:
    score = ChoiceJudge().score(_sample(1, {"answer": " c ", "choices": ANIMALS}), _outs("C"))
    assert score.metrics == {"accuracy": 1.0}


def test_choice_ambiguous_is_parse_failure_not_guess() -> None:
    score = ChoiceJudge().score(_sample(1, {"answer": "B", "choices": ANIMALS}), _outs("cat or cow"))
    assert score.parse_failed is True
    assert score.extracted is None
    assert score.metrics == {"accuracy": 0.0}
    assert "could not read an answer" in score.explanation


def test_choice_multi_turn_shares_choices() -> None:
    # shared keys (choices) apply to every turn; each turn has its own answer
    ref = {"choices": ANIMALS, "turns": [{"answer": "A"}, {"answer": "D"}]}
    score = ChoiceJudge().score(_sample(2, ref), _outs("The answer is A", "duck"))
    assert score.metrics == {"accuracy": 1.0, "turn_accuracy": 1.0}
    assert [r["extracted"] for r in score.details["turns"]] == ["A", "D"]

    half = ChoiceJudge().score(_sample(2, ref), _outs("B)", "(D)"))
    assert half.metrics == {"accuracy": 0.0, "turn_accuracy": 0.5}
    assert [r["correct"] for r in half.details["turns"]] == [False, True]


def test_judges_are_registered_by_name() -> None:
    from evalkit.judges.base import load_judge

    assert isinstance(load_judge("numeric"), NumericJudge)
    assert isinstance(load_judge("choice"), ChoiceJudge)


@pytest.mark.parametrize(
    ("reply", "expected", "correct"),
    [
        ("You have two apples left.", "8", False),  # read as 2: wrong, not a parse failure
        ("You have eight apples left.", "8", True),
        ("The answer is twenty four.", "24", True),
        ("Two boxes hold twenty four eggs, so the answer is twenty four.", "24", True),
        ("One hundred and five", "105", True),
        ("It is 42.", "42", True),  # digits still work
    ],
)
def test_numeric_spoken_reads_number_words(reply: str, expected: str, correct: bool) -> None:
    from evalkit.judges.numeric import SpokenNumericJudge

    sample = Sample(
        id="s", task="t", conversation=[Turn(role="user", text="q")], reference={"answer": expected}
    )
    score = SpokenNumericJudge().score(sample, [ModelOutput(text=reply)])
    assert score.parse_failed is False
    assert score.passed is correct


def test_numeric_spoken_without_any_number_is_a_parse_failure() -> None:
    from evalkit.judges.numeric import SpokenNumericJudge

    sample = Sample(id="s", task="t", conversation=[Turn(role="user", text="q")], reference={"answer": "3"})
    score = SpokenNumericJudge().score(sample, [ModelOutput(text="I'm ready to assist you.")])
    assert score.parse_failed is True and score.passed is False
