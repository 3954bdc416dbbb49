"""The ``official`` scorers of MMAU, MMSU and Spoken-MQA against the authors' scripts, verdict for
verdict, on every kind of reply a reasoning model gives (empty, whitespace, think-only, truncated,
reasoning then answer, wrong format, several letters, option text, numbers with units ...).

Each benchmark's rule is transcribed here again, in this file's own words and from the scripts
alone (nothing imported from the judges):

- MMAU ``evaluation.py`` (Sakshi113/MMAU @ 7468292): ``string_match`` and the accuracy loop;
- MMSU ``mmsu_evaluation.py`` (dingdongwang/MMSU_Bench @ 321b276): the record loop, its stale
  ``model_predict`` (the carry-over) included;
- AudioBench ``spoken_mqa.py`` + ``math_utils/utils.py`` (AudioLLMs/AudioBench @ 420b28a, "Fix a bug
  in Spoken-MQA dataset"): ``answer_clean`` (gsm8k triggers), ``delete_extra_zero`` (with a real
  ``eval`` on the captured digits) and ``compare_answer_with_groundtruth(prediction, *reference)``.

What the scripts receive is the model's answer: a reply's ``<think>...</think>`` part is removed
first (``authors_input``), as evalkit's adapters do, so a think-only or cut-in-thought reply is an
empty answer. The evalkit side gets the raw reply (inline tags included) as ``ModelOutput.text``,
so its own splitting is exercised too. Both sides must agree item by item, and the headline
accuracy (same denominator) must be equal.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from evalkit.judges.base import load_judge
from evalkit.records import ModelOutput, Sample, ScoreRecord, Turn
from evalkit.summary import summarise_judge
from evalkit.tasks.mmsu import MMSUTask

THINK = "<think>"
END_THINK = "</think>"


def authors_input(reply: str) -> str:
    """The string an author's script is given for a reply: what follows the last closing think
    tag; nothing when a think block was opened and never closed (cut by the token limit); the reply
    itself when it has no tag. Written without evalkit's ``split_reasoning``."""
    if END_THINK in reply:
        return reply.rsplit(END_THINK, 1)[1].strip()
    if THINK in reply:
        return reply.split(THINK, 1)[0].strip()
    return reply


def output_of(reply: str, truncated: bool = False) -> ModelOutput:
    return ModelOutput(text=reply, finish_reason="length" if truncated else "stop")


def shapes(rng: random.Random, answers: list[str], fillers: list[str]) -> list[tuple[str, bool]]:
    """(reply, cut by the token limit) pairs of every shape, built around candidate answers."""
    out: list[tuple[str, bool]] = [
        ("", False),
        (" ", False),
        ("\n\n", False),
        ("\t \n", False),
        ("<think>Let me listen again.</think>", False),
        ("<think>Let me listen again.</think>\n\n  ", False),
        ("<think>\nI think it is", True),  # cut in the middle of the thought
        ("Okay, so the", True),  # cut mid-sentence, no tags
        ("None", False),
        ("?!", False),
        ("...", False),
        ("I cannot tell from the audio.", False),
    ]
    for answer in answers:
        filler = rng.choice(fillers)
        out += [
            (answer, False),
            (f"{answer}.", False),
            (f"  {answer}  \n", False),
            (f"<think>{filler}</think>{answer}", False),
            (f"<think>{filler}</think>\n\nThe answer is {answer}.", False),
            (f"{filler}</think>{answer}", False),  # prefilled opening tag
            (f"<think>{filler} so maybe {answer}", True),
            (f"Let me think step by step. {filler} So the answer is {answer}.", False),
            (f"The answer is {answer}", False),
            (f"The answer is: {answer}\n", False),
            (f"Answer: {answer}!", False),
            (f"{answer} because {filler}", False),
            (f"I would say {answer}, but {filler}", True),
        ]
    for _ in range(len(answers)):
        a, b = rng.sample(answers, 2)
        out += [(f"{a} or {b}", False), (f"Between {a} and {b}, {b}.", False), (f"{a}\n{b}", False)]
    return out


# == MMAU ==========================================================================================

MMAU_ROWS: list[dict[str, Any]] = [
    {
        "id": "m1",
        "question": "What is the dog doing?",
        "choices": ["Dog barking", "Dog howling", "Cat meowing", "Silence"],
        "answer": "Dog barking",
    },
    {
        "id": "m2",
        "question": "Which instrument plays first?",
        "choices": ["Piano", "Electric guitar", "Acoustic guitar", "Drums"],
        "answer": "Acoustic guitar",
    },
    {
        "id": "m3",
        "question": "How many speakers?",
        "choices": ["1", "2", "3", "4"],
        "answer": "2",
    },
    {
        "id": "m4",
        "question": "What emotion?",
        "choices": ["Happy.", "Sad!", "happy and sad", "Neutral"],
        "answer": "Sad!",
    },
    {
        "id": "m5",
        "question": "Tempo?",
        "choices": ["120 BPM", "90 BPM", "60 BPM", "The tempo varies"],
        "answer": "90 BPM",
    },
]


def mmau_tokens(text: str) -> set[str]:
    """Lower-cased ``\\b\\w+\\b`` words, as a set."""
    return set(re.findall(r"\b\w+\b", text.lower()))


def mmau_authors_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """evaluation.py string_match: a prediction with no word is wrong; else every answer word must
    be there and no word that only wrong options have."""
    said = mmau_tokens(prediction)
    if not said:
        return False
    wanted = mmau_tokens(answer)
    forbidden: set[str] = set()
    for choice in choices:
        words = mmau_tokens(choice)
        if words != wanted:
            forbidden |= words - wanted
    return wanted <= said and not (said & forbidden)


def mmau_replies(row: dict[str, Any], rng: random.Random) -> list[tuple[str, bool]]:
    choices = row["choices"]
    answers = [*choices, *"ABCD", "(B)", "Option C", choices[0].lower(), choices[1].upper()]
    fillers = ["the sound is loud", "I hear a rhythm", "there is background noise", "two voices overlap"]
    return shapes(rng, answers, fillers)


def test_mmau_official_matches_evaluation_py() -> None:
    judge = load_judge("mmau-string-match")
    rng = random.Random(11)
    records, authors_correct = [], []
    for row in MMAU_ROWS:
        sample = Sample(
            id=row["id"],
            task="mmau-mini",
            conversation=[Turn(role="user", text=row["question"])],
            reference={"answer": row["answer"], "choices": row["choices"]},
        )
        for reply, cut in mmau_replies(row, rng):
            expected = mmau_authors_match(row["answer"], authors_input(reply), row["choices"])
            score = judge.score(sample, [output_of(reply, cut)])
            assert score.error is None and score.metrics["accuracy"] == float(expected), (row["id"], reply)
            records.append(
                ScoreRecord(task="mmau-mini", sample_id=row["id"], sample_index=len(records), score=score)
            )
            authors_correct.append(expected)
    assert len(records) >= 300
    assert 0 < sum(authors_correct) < len(authors_correct)
    summary = summarise_judge(records, [], 0, ("mmau-mini", "mmau-string-match"))
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["n"] == len(authors_correct)  # the script's denominator: every reply, empty ones too
    assert accuracy["value"] == pytest.approx(sum(authors_correct) / len(authors_correct), abs=1e-12)


def test_mmau_reply_without_words_is_wrong_even_for_an_answer_without_words() -> None:
    """string_match returns False before comparing when the prediction has no word."""
    sample = Sample(
        id="x",
        task="mmau-mini",
        conversation=[Turn(role="user", text="q")],
        reference={"answer": "?", "choices": ["?", "yes"]},
    )
    judge = load_judge("mmau-string-match")
    assert judge.score(sample, [output_of("")]).metrics["accuracy"] == 0.0
    assert judge.score(sample, [output_of("!!")]).metrics["accuracy"] == 0.0
    assert judge.score(sample, [output_of("no idea")]).metrics["accuracy"] == 1.0  # no forbidden word


# == MMSU ==========================================================================================


def mmsu_row(options: str, answer_gt: str) -> dict[str, Any]:
    """A record in mmsu_evaluation.py's fields from "A|B|C|D" option texts."""
    return {f"choice_{c}": text for c, text in zip("abcd", options.split("|"), strict=True)} | {
        "answer_gt": answer_gt
    }


MMSU_ROWS: list[dict[str, Any]] = [
    mmsu_row("Sad|Happy|Angry|Neutral", "Happy"),
    mmsu_row("Calm|Surprised|Fearful|Disgusted", "Calm"),
    mmsu_row("I|never|said|that", "said"),
    mmsu_row("Rising|Falling|Flat|Rising", "Rising"),  # two options hold answer_gt: A or D is right
    mmsu_row("To ask|To refuse|To agree|To greet", "To greet"),
    mmsu_row("One|Two|Three|Four", "Five"),  # answer_gt is no option: never right
]


def mmsu_authors_run(records: list[dict[str, Any]]) -> list[str]:
    """mmsu_evaluation.py over the records in order: per record "correct", "wrong" or "skipped".
    The letter variable lives across records as in the script: an empty (or "None") response
    keeps the letter the last read record left; an empty first record would crash the script
    (raised here as UnboundLocalError too)."""
    outcomes: list[str] = []
    letter: str | None = None
    have_letter = False
    for record in records:
        response = record.get("response", "")
        if response is None:  # .strip() on None: "Error prediction!", record skipped
            outcomes.append("skipped")
            continue
        predict = response.strip().replace("\n", "")
        if predict and predict != "None":
            if predict[0] in "ABCD":
                letter, have_letter = predict[0], True
            elif len(predict) > 1 and predict[-2] in "ABCD":
                letter, have_letter = predict[-2], True
            else:
                outcomes.append("skipped")
                continue
        elif not have_letter:
            raise UnboundLocalError("model_predict")
        options = {
            "A": record["choice_a"],
            "B": record["choice_b"],
            "C": record["choice_c"],
            "D": record["choice_d"],
        }
        outcomes.append("correct" if options[letter] == record["answer_gt"] else "wrong")
    return outcomes


def mmsu_replies(row: dict[str, Any], rng: random.Random) -> list[tuple[str, bool]]:
    options = [row[f"choice_{c}"] for c in "abcd"]
    answers = [*"ABCD", "a", "(C)", "B)", "E", *options]
    fillers = ["the pitch rises", "the voice is soft", "I am not sure", "the speaker pauses"]
    return shapes(rng, answers, fillers)


def mmsu_corpus() -> list[tuple[dict[str, Any], str, bool]]:
    """(row, reply, cut) in a fixed order starting with a readable letter (the script would crash
    on an empty first record), with empty replies spread so that carry-overs meet varied rows."""
    rng = random.Random(5)
    items = [(row, reply, cut) for row in MMSU_ROWS for reply, cut in mmsu_replies(row, rng)]
    rng.shuffle(items)
    return [(MMSU_ROWS[0], "B", False), *items]


def mmsu_evalkit_scores(corpus: list[tuple[dict[str, Any], str, bool]], judge_name: str) -> list[ScoreRecord]:
    """Each item scored alone (in reverse order, as concurrency may finish them), then the task's
    finalize pass over the records in sample-index order."""
    judge = load_judge(judge_name)
    records = []
    for index in reversed(range(len(corpus))):
        row, reply, cut = corpus[index]
        sample = Sample(
            id=f"s{index}",
            task="mmsu-bench",
            conversation=[Turn(role="user", text="q")],
            reference={"answer": row["answer_gt"], "choices": [row[f"choice_{c}"] for c in "abcd"]},
        )
        score = judge.score(sample, [output_of(reply, cut)])
        records.append(ScoreRecord(task="mmsu-bench", sample_id=sample.id, sample_index=index, score=score))
    records.sort(key=lambda r: r.sample_index)
    return list(MMSUTask.finalize_scores(iter(records)))


def verdict_of(record: ScoreRecord) -> str:
    accuracy = record.score.metrics["accuracy"]
    return "skipped" if accuracy is None else "correct" if accuracy == 1.0 else "wrong"


def test_mmsu_official_matches_mmsu_evaluation_py_with_carry_over() -> None:
    corpus = mmsu_corpus()
    assert len(corpus) >= 300
    expected = mmsu_authors_run([{**row, "response": authors_input(reply)} for row, reply, _ in corpus])
    records = mmsu_evalkit_scores(corpus, "mmsu-official")
    assert [verdict_of(r) for r in records] == expected
    carried = [r for r in records if isinstance(r.score.details.get("carry"), dict)]
    assert len(carried) >= 20  # the corpus does exercise the carry-over
    assert any(r.score.passed for r in carried) and not all(r.score.passed for r in carried)
    counted = [e for e in expected if e != "skipped"]
    summary = summarise_judge(records, [], 0, ("mmsu-bench", "mmsu-official"))
    assert summary["metrics"]["accuracy"]["n"] == len(counted)
    assert summary["metrics"]["accuracy"]["value"] == pytest.approx(
        counted.count("correct") / len(counted), abs=1e-12
    )
    # the same scores also carry the item-independent number, which differs here
    independent = summary["metrics"]["accuracy_independent"]
    assert (
        independent["n"] == len(counted) and independent["value"] != summary["metrics"]["accuracy"]["value"]
    )


def test_mmsu_independent_mode_is_the_rule_without_carry_over() -> None:
    corpus = mmsu_corpus()
    official = mmsu_evalkit_scores(corpus, "mmsu-official")
    independent = mmsu_evalkit_scores(corpus, "mmsu-independent")
    for off, ind in zip(official, independent, strict=True):
        if isinstance(off.score.details.get("carry"), dict):
            assert verdict_of(ind) == "wrong"
        else:
            assert verdict_of(ind) == verdict_of(off)
        assert ind.score.metrics["accuracy"] == off.score.metrics["accuracy_independent"]


def test_mmsu_carry_over_is_idempotent_and_skips_errors_and_skipped_items() -> None:
    from evalkit.records import ErrorInfo, Score

    corpus = [
        (MMSU_ROWS[0], "A", False),  # reads A (wrong: Happy is B)
        (MMSU_ROWS[1], "The answer is unclear", False),  # skipped: L stays A
        (MMSU_ROWS[1], "", False),  # carries A -> Calm: correct
        (MMSU_ROWS[2], "<think>hmm</think>", False),  # think-only: carries A -> "I": wrong
    ]
    records = mmsu_evalkit_scores(corpus, "mmsu-official")
    failed = ScoreRecord(
        task="mmsu-bench",
        sample_id="err",
        sample_index=1,
        score=Score(judge="mmsu-official", error=ErrorInfo(kind="model_error", message="x")),
    )
    records.insert(1, failed)
    once = list(MMSUTask.finalize_scores(iter(records)))
    twice = list(MMSUTask.finalize_scores(iter(once)))
    assert once == twice
    assert [verdict_of(r) if r.score.error is None else "error" for r in once] == [
        "wrong",
        "error",
        "skipped",
        "correct",
        "wrong",
    ]
    assert once[3].score.details["carry"] == {"letter": "A", "from": "s0"}
    assert once[3].score.parse_failed and once[3].score.metrics["answered"] == 0.0


def test_mmsu_empty_first_reply_is_wrong_where_the_script_stops() -> None:
    records = mmsu_evalkit_scores([(MMSU_ROWS[0], "", False), (MMSU_ROWS[0], "B", False)], "mmsu-official")
    assert [verdict_of(r) for r in records] == ["wrong", "correct"]
    assert records[0].score.details["carry"] == {"letter": None, "from": None}
    with pytest.raises(UnboundLocalError):
        mmsu_authors_run([{**MMSU_ROWS[0], "response": ""}])


# == Spoken-MQA ====================================================================================

TRIGGERS = ["The answer is:", "The answer is", "the answer is", "####"]
CANDIDATE = r"-?\d+/?\.?\d*"
DIGIT_SPLITS = ("short_digit", "long_digit")
REASONING_SPLITS = ("single_step_reasoning", "multi_step_reasoning")


def audiobench_number(value: Any) -> Any:
    """delete_extra_zero: float(), else eval() (only ever given test-written references and the
    regex-captured candidates, digits, '-', '/' and '.'), printed back as the script prints it."""
    try:
        number = float(value)
    except Exception:
        try:
            number = eval(value, {"__builtins__": {}}, {})  # noqa: S307 - see docstring
        except Exception:
            return value
    if isinstance(number, int):
        return str(number)
    if isinstance(number, float):
        text = str(number).rstrip("0")
        return str(int(text.rstrip("."))) if text.endswith(".") else str(float(text))
    return None


def audiobench_prediction(reply: str) -> str:
    """answer_clean('gsm8k', ...), then compute_score's "empty" and 100-character cut."""
    text = reply.strip("\n")
    if any(text.count(t) > 1 for t in TRIGGERS):
        text = text.split("\n\n")[0]
    pieces = re.split("|".join(TRIGGERS), text)
    after_trigger = len(pieces) > 1
    if after_trigger:
        text = pieces[-1]
    text = text.strip("\n").rstrip(".").rstrip("/").strip(" ").replace(",", "")
    found = [audiobench_number(c) for c in re.findall(CANDIDATE, text)]
    chosen = "" if not found else (found[0] if after_trigger else found[-1]).rstrip(".").rstrip("/")
    return (chosen or "empty")[:100]


def audiobench_reference(answer: str | list[str], split: str) -> Any:
    """compute_score's reference: the arithmetic class takes the value as it is ("empty" when
    falsy); the reasoning class normalises each text of the list. A string is one text."""
    texts = [answer] if isinstance(answer, str) else list(answer)
    if split in DIGIT_SPLITS:
        return texts or "empty"
    normalised = []
    for text in texts:
        if "####" in text:
            text = audiobench_number(text.split("#### ")[-1].replace(",", ""))
        normalised.append(audiobench_number(text))
    return normalised or "empty"


def audiobench_compare(answer: str, truth: Any, truth_num: Any = None) -> bool:
    """compare_answer_with_groundtruth; the groundtruth_num branch is followed as far as it goes."""
    if "\\text{" in answer:
        answer = answer.replace("\\text{", "").rstrip("}")
    if "\\text{" in truth:
        truth = truth.replace("\\text{", "").rstrip("}")
    if truth.lower() in ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]:
        return truth.lower() in answer.lower()
    if answer.lower() == truth.lower():
        return True
    if truth_num is None:
        return False
    assert not isinstance(truth_num, int | float)  # the references are texts
    try:
        as_list = list(eval(answer, {"__builtins__": {}}, {}))  # noqa: S307 - a captured number or "empty"
    except Exception:
        return False
    raise AssertionError(f"the list comparison would run on {as_list!r}")  # never reached on this corpus


def audiobench_item(reply: str, answer: str | list[str], split: str) -> bool:
    reference = audiobench_reference(answer, split)
    if isinstance(reference, str):
        reference = [reference]
    return audiobench_compare(audiobench_prediction(authors_input(reply)), *reference)


SPOKEN_MQA_REFERENCES: list[str | list[str]] = [
    "7", ["7"], "42", ["42"], ["12.0"], "12.0", ["0.5"], ".5", ["1/2"], ["1234"], ["#### 1,234"],
    "#### 1,234", ["-3"], ["7", "8"], ["8", "7"], ["2468"], ["10000000000000000"], ["(b)"],
]  # fmt: skip
#: digit splits only: the reasoning class cannot score them (see the judge-error test below)
DIGIT_ONLY_REFERENCES: list[str | list[str]] = ["1,234", ["1,234"]]


def spoken_mqa_replies(rng: random.Random) -> list[tuple[str, bool]]:
    answers = [
        "7",
        "8",
        "42",
        "12",
        "12.0",
        "0.5",
        ".5",
        "1/2",
        "1,234",
        "1234",
        "-3",
        "2468",
        "10000000000000000",
        "(b)",
    ]
    answers += ["$7.00", "7 apples", "42 km", "50%", "seven", "1 234", "7/"]
    fillers = ["3 + 4 = 7", "first 40 then 2", "we subtract 5 from 12", "half of 1 is 0.5"]
    replies = shapes(rng, answers, fillers)
    replies += [
        ("The answer is 7.\n\nThe answer is 8.", False),
        ("#### 42", False),
        ("#### Work\n12\n\n#### Answer\n42", False),
        ("The answer is", False),
        ("The answer is unknown", False),
        ("the answer is 7, The answer is 8", False),
        ("The answer is 1e3", False),
        ("The answer is ٧", False),
    ]
    return replies


@pytest.mark.parametrize("split", DIGIT_SPLITS + REASONING_SPLITS)
def test_spoken_mqa_official_matches_audiobench(split: str) -> None:
    judge = load_judge("spoken-mqa-official")
    replies = spoken_mqa_replies(random.Random(split))
    records, authors_correct = [], []
    extra = DIGIT_ONLY_REFERENCES if split in DIGIT_SPLITS else []
    for reference in [*SPOKEN_MQA_REFERENCES, *extra]:
        sample = Sample(
            id=f"{split}-{len(records)}",
            task="spoken-mqa",
            conversation=[Turn(role="user", text="q")],
            reference={"answer": reference},
            meta={"split": split},
        )
        for reply, cut in replies:
            expected = audiobench_item(reply, reference, split)
            score = judge.score(sample, [output_of(reply, cut)])
            assert score.error is None and score.passed is expected, (reference, reply)
            records.append(
                ScoreRecord(task="spoken-mqa", sample_id=sample.id, sample_index=len(records), score=score)
            )
            authors_correct.append(expected)
    assert len(replies) >= 300 / 4 and len(records) >= 300
    assert 0 < sum(authors_correct) < len(authors_correct)
    summary = summarise_judge(records, [], 0, ("spoken-mqa", "spoken-mqa-official"))
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["n"] == len(authors_correct)  # correct + wrong: every item, unreadable ones too
    assert accuracy["value"] == pytest.approx(sum(authors_correct) / len(authors_correct), abs=1e-12)


def spoken_score(reply: str, reference: Any, split: str) -> Any:
    sample = Sample(
        id="s",
        task="t",
        conversation=[Turn(role="user", text="q")],
        reference={"answer": reference},
        meta={"split": split},
    )
    return load_judge("spoken-mqa-official").score(sample, [output_of(reply)])


@pytest.mark.parametrize("split", DIGIT_SPLITS + REASONING_SPLITS)
def test_spoken_mqa_unreadable_reply_is_the_prediction_empty(split: str) -> None:
    for reply in ["", "   ", "<think>7</think>", "<think>cut", "no number"]:
        score = spoken_score(reply, ["7"], split)
        assert score.parse_failed and score.passed is False and score.metrics["accuracy"] == 0.0
    # "empty" is compared like any prediction: a reference that is itself "empty" accepts it
    assert spoken_score("", "Empty", split).passed is True
    assert audiobench_item("", "Empty", split) is True


def test_spoken_mqa_only_the_first_acceptable_answer_counts() -> None:
    for split in DIGIT_SPLITS + REASONING_SPLITS:
        assert spoken_score("The answer is 7", ["7", "8"], split).passed is True
        assert spoken_score("The answer is 8", ["7", "8"], split).passed is False
        assert audiobench_item("The answer is 8", ["7", "8"], split) is False


@pytest.mark.parametrize(
    ("reference", "split", "why"),
    [
        (["1", "2", "3"], "short_digit", "at most 2"),
        (["7", "8", "9"], "multi_step_reasoning", "at most 2"),
        (["1,234"], "single_step_reasoning", "not a number after delete_extra_zero"),
    ],
)
def test_spoken_mqa_references_the_script_cannot_score_are_judge_errors(
    reference: Any, split: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        spoken_score("The answer is 7", reference, split)
    with pytest.raises(TypeError):  # the script itself stops there
        audiobench_item("The answer is 7", reference, split)


def test_corpus_sizes() -> None:
    """300+ replies per benchmark (MMAU: per row set; MMSU: one ordered run; Spoken-MQA: per split)."""
    rng = random.Random(0)
    assert sum(len(mmau_replies(row, rng)) for row in MMAU_ROWS) >= 300
    assert len(mmsu_corpus()) >= 300
    assert len(spoken_mqa_replies(rng)) * len(SPOKEN_MQA_REFERENCES) >= 300
