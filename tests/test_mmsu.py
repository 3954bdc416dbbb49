"""MMSU (``mmsu-bench``): loading the official layout, the official prompt, the published letter
rule (checked by hand and against an independent transcription of ``mmsu_evaluation.py``), and a
CLI run against the loopback server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.errors import EvalkitError
from evalkit.judges.base import load_judge
from evalkit.records import ModelOutput, Sample, ScoreRecord, Turn
from evalkit.summary import summarise_judge
from evalkit.tasks.base import resolve_tasks
from evalkit.tasks.prompts import template_digest

INSTRUCTION = (
    "Choose the most suitable answer from options A, B, C, and D to respond the question in next "
    "line, **you should only choose A or B or C or D.** Do not provide any additional explanations "
    "or content."
)

ROWS: list[dict[str, Any]] = [
    {
        "id": "emo-1",
        "audio_path": "audio/emo-1.wav",
        "question": "What emotion does the speaker convey?",
        "choice_a": "Sad",
        "choice_b": "Happy",
        "choice_c": "Angry",
        "choice_d": "Neutral",
        "answer_gt": "Happy",
        "task_name": "emotion_recognition",
        "category": "Perception",
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Speaking style",
        "linguistics_sub_discipline": "None",
    },
    {
        "id": "emo-2",
        "audio_path": "audio/emo-2.wav",
        "question": "How does the speaker feel?",
        "choice_a": "Calm",
        "choice_b": "Surprised",
        "choice_c": "Fearful",
        "choice_d": "Disgusted",
        "answer_gt": "Calm",
        "task_name": "emotion_recognition",
        "category": "Perception",
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Speaking style",
        "linguistics_sub_discipline": "None",
    },
    {
        "id": "stress-1",
        "audio_path": "audio/stress-1.wav",
        "question": "Which word is stressed?",
        "choice_a": "I",
        "choice_b": "never",
        "choice_c": "said",
        "choice_d": "that",
        "answer_gt": "said",
        "task_name": "word_stress",
        "category": "Perception",
        "sub-category": "Linguistics",
        "sub-sub-category": "Phonology",
        "linguistics_sub_discipline": "Prosody",
    },
    {
        "id": "intent-1",
        "audio_path": "audio/intent-1.wav",
        "question": "What does the speaker intend?",
        "choice_a": "To ask",
        "choice_b": "To refuse",
        "choice_c": "To agree",
        "choice_d": "To joke",
        "answer_gt": "To joke",
        "task_name": "intent_reasoning",
        "category": "Reasoning",
        "sub-category": "Linguistics",
        "sub-sub-category": "Semantics",
        "linguistics_sub_discipline": "Pragmatics",
    },
    {
        "id": "pitch-1",
        "audio_path": "audio/pitch-1.wav",
        "question": "Is the pitch rising or falling?",
        "choice_a": "Rising",
        "choice_b": "Falling",
        "choice_c": "Flat",
        "choice_d": "Rising",  # answer_gt equals two options' texts: either letter is right
        "answer_gt": "Rising",
        "task_name": "pitch_contour",
        "category": "Reasoning",
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Speaker traits",
        "linguistics_sub_discipline": "None",
    },
    {
        "id": "gender-1",
        "audio_path": "audio/gender-1.wav",
        "question": "What is the speaker's gender?",
        "choice_a": "Male",
        "choice_b": "Female",
        "choice_c": "Child",
        "choice_d": "Unknown",
        "answer_gt": "Female",
        "task_name": "speaker_gender",
        "category": "Perception",
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Speaker traits",
        "linguistics_sub_discipline": "None",
    },
]


def write_tone(path: Path, freq: float, rate: int = 16000, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")


@pytest.fixture
def mmsu_dir(tmp_path: Path) -> Path:
    """The official local layout: one JSONL file per task plus an audio folder."""
    root = tmp_path / "MMSU"
    by_task: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(ROWS):
        write_tone(root / row["audio_path"], 220.0 * (i + 1))
        by_task.setdefault(row["task_name"], []).append(row)
    for task_name, rows in by_task.items():
        (root / f"{task_name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def sample_of(row: dict[str, Any]) -> Sample:
    choices = [row[f"choice_{c}"] for c in "abcd"]
    return Sample(
        id=row["id"],
        task="mmsu-bench",
        conversation=[Turn(role="user", text="q")],
        reference={"answer": row["answer_gt"], "choices": choices},
        meta={"category": row["category"]},
    )


def judge_verdict(judge_name: str, row: dict[str, Any], reply: str) -> str:
    score = load_judge(judge_name).score(sample_of(row), [ModelOutput(text=reply)])
    accuracy = score.metrics["accuracy"]
    return "skipped" if accuracy is None else ("correct" if accuracy == 1.0 else "wrong")


# -- loading and prompt -----------------------------------------------------------------------------


def test_loads_local_layout(mmsu_dir: Path) -> None:
    [task] = resolve_tasks(f"mmsu-bench:data={mmsu_dir}")
    samples = list(task.samples())
    assert task.name == "mmsu-bench" and task.judges == ("mmsu-official",)
    assert len(samples) == len(ROWS) and task.count() == len(ROWS)
    by_id = {s.id: s for s in samples}
    assert set(by_id) == {r["id"] for r in ROWS}

    sample = by_id["emo-1"]
    [turn] = sample.conversation
    assert turn.role == "user"
    assert turn.text == (
        f"{INSTRUCTION}\n\nQuestion: What emotion does the speaker convey?\n\n"
        "A. Sad\nB. Happy\nC. Angry\nD. Neutral"
    )
    assert turn.text.startswith(INSTRUCTION + "\n")
    assert Path(turn.audio.path) == mmsu_dir / "audio/emo-1.wav"
    assert Path(turn.audio.path).is_file()
    assert sample.reference == {"answer": "Happy", "choices": ["Sad", "Happy", "Angry", "Neutral"]}
    assert sample.meta == {
        "task_name": "emotion_recognition",
        "category": "Perception",
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Speaking style",
        "linguistics_sub_discipline": "None",
    }
    assert task.group_by == ("category", "sub-category", "task_name")

    info = task.dataset_info()
    assert info["count"] == len(ROWS)
    assert info["id"] == "ddwang2000/MMSU" and info["split"] == "train" and info["mode"] == "official"
    assert len(info["fingerprint"]) == 64
    assert info["prompt_template"] == "mmsu.j2"
    assert info["prompt_sha256"] == template_digest("mmsu.j2")


def test_audio_column_wins_over_audio_path(mmsu_dir: Path) -> None:
    [task] = resolve_tasks(f"mmsu-bench:data={mmsu_dir}")
    row = {**ROWS[0], "audio": {"bytes": b"RIFF-fake", "path": "x.wav"}}
    assert task.to_sample(row, 0).conversation[0].audio.data == b"RIFF-fake"
    row = {**ROWS[0], "audio": None}  # hub-style column present but empty: the path is used
    assert task.to_sample(row, 0).conversation[0].audio.path == str(mmsu_dir / "audio/emo-1.wav")


def test_modes_and_names() -> None:
    assert resolve_tasks("mmsu-bench:mode=independent")[0].judges == ("mmsu-independent",)
    assert resolve_tasks("mmsu-bench:mode=strict")[0].judges == ("mmsu-strict",)
    assert resolve_tasks("mmsu-bench:mode=extract")[0].judges == ("mmsu-extract",)
    with pytest.raises(EvalkitError, match="unknown mode"):
        resolve_tasks("mmsu-bench:mode=lenient")
    # VoiceBench's "mmsu" is a different benchmark: the bare name must not resolve to this one
    with pytest.raises(EvalkitError, match="known tasks: .*mmsu-bench"):
        resolve_tasks("mmsu")


# -- the official letter rule, by hand ----------------------------------------------------------------

HAND_CASES = [
    # reply, letter read, verdict on ROWS[0] (answer "Happy" = B)
    ("A", "A", "wrong"),
    ("B", "B", "correct"),
    ("B. The speaker is happy", "B", "correct"),
    ("The answer is B.", "B", "correct"),  # predict[-2] == "B"
    ("The answer is C.", "C", "wrong"),
    ("I think (B)", "B", "correct"),  # predict[-2] == "B"
    ("  \nB\n", "B", "correct"),  # stripped first
    ("The answer is\nB.", "B", "correct"),  # newlines removed: "The answer isB."
    ("Bananas are great", "B", "correct"),  # first character B: the rule is that literal
    ("answer: d", None, "skipped"),  # lower case is not a letter; [-2] is ":"-> skipped
    ("b", None, "skipped"),  # one character, not A-D
    ("The answer is B", None, "skipped"),  # no trailing punctuation: [-2] is " "
    ("Happy", None, "skipped"),  # option text alone is not read
    ("", None, "wrong"),  # empty: counted in the denominator, no letter
    ("   ", None, "wrong"),
    ("None", None, "wrong"),  # the literal "None" is treated like empty by the script
]


@pytest.mark.parametrize(("reply", "letter", "verdict"), HAND_CASES)
def test_official_rule_by_hand(reply: str, letter: str | None, verdict: str) -> None:
    score = load_judge("mmsu-official").score(sample_of(ROWS[0]), [ModelOutput(text=reply)])
    assert score.extracted == letter
    assert score.parse_failed == (letter is None)
    assert score.metrics["answered"] == float(letter is not None)
    expected_accuracy = {"correct": 1.0, "wrong": 0.0, "skipped": None}[verdict]
    assert score.metrics["accuracy"] == expected_accuracy
    assert score.details["skipped"] == (verdict == "skipped")
    # strict: same letters, but a skipped reply is simply wrong
    strict = load_judge("mmsu-strict").score(sample_of(ROWS[0]), [ModelOutput(text=reply)])
    assert strict.extracted == letter
    assert strict.metrics["accuracy"] == (0.0 if verdict == "skipped" else expected_accuracy)


def test_duplicate_option_text_accepts_either_letter() -> None:
    pitch = ROWS[4]  # A and D both read "Rising"
    assert [judge_verdict("mmsu-official", pitch, r) for r in "ABCD"] == [
        "correct",
        "wrong",
        "wrong",
        "correct",
    ]
    assert judge_verdict("mmsu-extract", pitch, "The answer is (D).") == "correct"


def test_inline_think_block_is_split_off() -> None:
    row = ROWS[0]
    assert judge_verdict("mmsu-official", row, "<think>A is wrong, C too.</think>B") == "correct"
    assert judge_verdict("mmsu-official", row, "Maybe A...</think>\nB") == "correct"
    assert judge_verdict("mmsu-official", row, "<think>never finished") == "wrong"  # empty answer


def test_extract_mode_compares_option_text() -> None:
    row = ROWS[0]
    assert judge_verdict("mmsu-extract", row, "The answer is B.") == "correct"
    assert judge_verdict("mmsu-extract", row, "the speaker sounds happy") == "correct"
    assert judge_verdict("mmsu-extract", row, "Option A") == "wrong"
    score = load_judge("mmsu-extract").score(sample_of(row), [ModelOutput(text="no idea")])
    assert score.parse_failed and score.metrics["accuracy"] == 0.0


def test_skipped_items_leave_the_denominator() -> None:
    replies = ["B", "A", "I have no idea", "Happy", ""]  # correct, wrong, skipped, skipped, wrong
    records = []
    for i, reply in enumerate(replies):
        sample = sample_of(ROWS[0]).model_copy(update={"id": f"s{i}"})
        for judge in ("mmsu-official", "mmsu-strict"):
            records.append(
                ScoreRecord(
                    task="mmsu-bench",
                    sample_id=sample.id,
                    sample_index=i,
                    meta=sample.meta,
                    score=load_judge(judge).score(sample, [ModelOutput(text=reply)]),
                )
            )
    official = summarise_judge(
        [r for r in records if r.score.judge == "mmsu-official"], ["category"], 0, ("t", "o")
    )
    assert official["n_scored"] == 5 and official["n_parse_failures"] == 3
    assert official["metrics"]["accuracy"]["n"] == 3  # the two skipped items are out
    assert official["metrics"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert official["metrics"]["answered"]["value"] == pytest.approx(2 / 5)
    assert official["groups"]["category"]["Perception"]["accuracy"]["n"] == 3
    strict = summarise_judge(
        [r for r in records if r.score.judge == "mmsu-strict"], ["category"], 0, ("t", "s")
    )
    assert strict["metrics"]["accuracy"]["n"] == 5
    assert strict["metrics"]["accuracy"]["value"] == pytest.approx(1 / 5)


# -- equivalence with an independent transcription of mmsu_evaluation.py --------------------------------


def transcribed_official(record: dict[str, Any]) -> str:
    """The loop body of ``calculate_accuracy_per_task_and_category`` in mmsu_evaluation.py, written
    out again for one record. Outcomes: "skipped" where the script ``continue``s, "correct" where it
    increments ``total_correct``, "wrong" where it only increments ``total_count``. The one change:
    ``model_predict`` starts as None for every record: this is the item-independent rule (mode
    ``independent``, and ``official`` before its carry-over pass; the carry-over itself is checked
    against the script in test_official_fidelity.py)."""
    model_predict = None
    response = record.get("response", "")
    try:
        predict = response.strip().replace("\n", "")
    except AttributeError:
        return "skipped"
    if predict != "None" and predict:
        if predict[0] == "A" or predict[0] == "B" or predict[0] == "C" or predict[0] == "D":
            model_predict = predict[0]
        elif len(predict) > 1:
            if predict[-2] == "A" or predict[-2] == "B" or predict[-2] == "C" or predict[-2] == "D":
                model_predict = predict[-2]
            else:
                return "skipped"
        else:
            return "skipped"
    answer_gt = record.get("answer_gt", "")
    choices = {
        "A": record.get("choice_a", ""),
        "B": record.get("choice_b", ""),
        "C": record.get("choice_c", ""),
        "D": record.get("choice_d", ""),
    }
    if model_predict:  # the script's branch chain, kept as written (hence the noqa)
        if model_predict == "A" and choices["A"] == answer_gt:  # noqa: SIM114
            return "correct"
        elif model_predict == "B" and choices["B"] == answer_gt:  # noqa: SIM114
            return "correct"
        elif model_predict == "C" and choices["C"] == answer_gt:  # noqa: SIM114
            return "correct"
        elif model_predict == "D" and choices["D"] == answer_gt:
            return "correct"
    return "wrong"


def varied_predictions(row: dict[str, Any]) -> list[str]:
    """Replies of every shape a model gives: bare letters, letter+text, sentences, reasoning,
    empty, wrong format, trailing punctuation, lower case, option text."""
    options = [row[f"choice_{c}"] for c in "abcd"]
    out: list[str] = ["", " ", "\n", "None", "none", "N/A", "?", "1", "12", "X", "E", "E.", "..."]
    for letter, option in zip("ABCD", options, strict=True):
        out += [
            letter,
            letter.lower(),
            f"{letter}.",
            f"{letter})",
            f"({letter})",
            f"{letter}. {option}",
            f"{letter.lower()}. {option}",
            f"The answer is {letter}.",
            f"The answer is {letter}",
            f"The answer is ({letter})",
            f"answer: {letter.lower()}",
            f"Answer: {letter}!",
            f"I choose {letter}!!",
            f"  {letter}  \n",
            f"\n{letter}\n.",
            option,
            f"{option}.",
            f"The speaker's answer is {option}.",
            f"Let me think step by step. The audio suggests {option.lower()}, so the answer is {letter}.",
            f"Reasoning: option {letter} fits best.\nFinal answer: {letter}.",
            f"Reasoning: option {letter} fits best.\nFinal answer: {letter}",
        ]
    out += ["A or B", "A and C.", "Both B and D.", "Between C and D, D.", "I cannot tell from the audio."]
    return out


def test_official_judge_matches_transcription() -> None:
    verdicts: dict[str, int] = {"correct": 0, "wrong": 0, "skipped": 0}
    n = 0
    for row in ROWS:
        for reply in varied_predictions(row):
            expected = transcribed_official({**row, "response": reply})
            assert judge_verdict("mmsu-independent", row, reply) == expected, (row["id"], reply)
            assert judge_verdict("mmsu-official", row, reply) == expected, (row["id"], reply)
            verdicts[expected] += 1
            n += 1
    assert n >= 200
    assert all(count > 0 for count in verdicts.values()), verdicts


# -- end to end ---------------------------------------------------------------------------------------


def test_cli_run_against_loopback_server(mmsu_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    from evalkit.testing.openai_server import OpenAIServer

    with OpenAIServer(answer=lambda body: "B") as server:
        proc = evalkit_run(
            "--model",
            f"openai:{server.model}@{server.base_url}",
            "--tasks",
            "mmsu-bench",
            "--data",
            str(mmsu_dir),
            "--limit",
            "4",
            "--out",
            str(tmp_path / "runs"),
        )
        assert_ok(proc)
        requests = server.requests
    assert len(requests) == 4
    for request in requests:
        [message] = request.body["messages"]
        kinds = [part["type"] for part in message["content"]]
        assert "input_audio" in kinds
        [text] = [part["text"] for part in message["content"] if part["type"] == "text"]
        assert text.startswith(INSTRUCTION + "\n\nQuestion: ")
    run_dir = only_run_dir(tmp_path / "runs")
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert len(scores) == 4 and {s["score"]["judge"] for s in scores} == {"mmsu-official"}
    summary = read_json(run_dir / "summary.json")
    task = summary["tasks"]["mmsu-bench"]
    judge = task["judges"]["mmsu-official"]
    assert judge["n"] == 4 and judge["n_parse_failures"] == 0
    assert set(judge["groups"]) == {"category", "sub-category", "task_name"}
    assert set(judge["groups"]["category"]) <= {"Perception", "Reasoning"}
    assert task["dataset"]["prompt_template"] == "mmsu.j2"
    assert task["primary"]["judge"] == "mmsu-official"


def test_cli_run_carries_the_previous_letter_over(mmsu_dir: Path, tmp_path: Path) -> None:
    """An empty reply is an answer (never a model error): it takes the letter last read in dataset
    order, in scores.jsonl and summary.json alike; the item-independent number is shown beside it."""
    pytest.importorskip("aiohttp")
    from evalkit.testing.openai_server import OpenAIServer

    def answer(body: dict) -> str:
        text = json.dumps(body)
        return "A" if "How does the speaker feel?" in text or "Which word is stressed?" in text else ""

    [task] = resolve_tasks(f"mmsu-bench:data={mmsu_dir}")
    letter, expected = None, []
    for sample in task.samples():  # the script's loop over the dataset order, by hand
        if sample.reference["choices"][1] in ("Surprised", "never"):  # emo-2, stress-1 answer "A"
            letter = "A"
        expected.append(
            letter is not None
            and sample.reference["choices"]["ABCD".index(letter)] == sample.reference["answer"]
        )
    with OpenAIServer(answer=answer) as server:
        proc = evalkit_run(
            "--model",
            f"openai:{server.model}@{server.base_url}",
            "--tasks",
            "mmsu-bench",
            "--data",
            str(mmsu_dir),
            "--out",
            str(tmp_path / "runs"),
        )
        assert_ok(proc)
    run_dir = only_run_dir(tmp_path / "runs")
    scores = sorted(read_jsonl(run_dir / "scores.jsonl"), key=lambda s: s["sample_index"])
    assert [s["score"].get("error") for s in scores] == [None] * len(ROWS)
    assert [s["score"]["metrics"]["accuracy"] == 1.0 for s in scores] == expected
    assert any(isinstance(s["score"]["details"].get("carry"), dict) and s["score"]["passed"] for s in scores)
    metrics = read_json(run_dir / "summary.json")["tasks"]["mmsu-bench"]["judges"]["mmsu-official"]["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(sum(expected) / len(expected))
    assert metrics["accuracy"]["n"] == len(ROWS)
    assert metrics["accuracy_independent"]["value"] < metrics["accuracy"]["value"]
