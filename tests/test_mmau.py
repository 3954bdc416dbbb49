"""MMAU: loading the official local layout, the official string-match rule (hand-worked cases and an
equivalence check against an independent transcription of the published rule), strict mode, the
test-split submission file, and the CLI end to end against the loopback OpenAI server."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import soundfile as sf
from cli_helpers import CLI, only_run_dir, read_json, read_jsonl

from evalkit.judges.base import load_judge
from evalkit.records import ModelOutput, Sample, Turn
from evalkit.runner import RunConfig, evaluate
from evalkit.tasks.base import resolve_tasks
from evalkit.tasks.mmau import DATASET_VERSION, SUBMISSION_FILE, write_submission
from evalkit.tasks.prompts import template_digest
from evalkit.testing.openai_server import OpenAIServer, Reply, last_user_text

pytest.importorskip("aiohttp")

ROWS: list[dict[str, Any]] = [
    {
        "id": "s-1",
        "question": "What is the source of the sound?",
        "choices": ["Dog barking", "Cat meowing", "Car horn", "Dog growling"],
        "answer": "Dog barking",
        "task": "sound",
        "difficulty": "easy",
        "sub-category": "Sound Source Identification",
        "category": "Information Extraction",
        "dataset": "AudioSet",
    },
    {
        "id": "s-2",
        "question": "How many times does the bell ring?",
        "choices": ["one", "two", "three", "four"],
        "answer": "three",
        "task": "sound",
        "difficulty": "hard",
        "sub-category": "Event Counting",
        "category": "Reasoning",
        "dataset": "Clotho",
    },
    {
        "id": "m-1",
        "question": "Which instrument plays the melody?",
        "choices": ["Piano", "Electric guitar", "Violin", "Bass guitar"],
        "answer": "Electric guitar",
        "task": "music",
        "difficulty": "medium",
        "sub-category": "Instrument Identification",
        "category": "Information Extraction",
        "dataset": "MusicCaps",
    },
    {
        "id": "m-2",
        "question": "What is the genre?",
        "choices": ["Jazz", "Rock", "Classical"],
        "answer": "Jazz",
        "task": "music",
        "difficulty": "easy",
        "sub-category": "Genre Classification",
        "category": "Information Extraction",
        "dataset": "MusicCaps",
    },
    {
        "id": "p-1",
        "question": "What emotion does the speaker convey?",
        "choices": ["Happy", "Sad", "Angry", "Neutral"],
        "answer": "Sad",
        "task": "speech",
        "difficulty": "medium",
        "sub-category": "Emotion Recognition",
        "category": "Reasoning",
        "dataset": "MELD",
    },
    {
        "id": "p-2",
        "question": "Who speaks first?",
        "choices": ["The first speaker", "The second speaker"],
        "answer": "The second speaker",
        "task": "speech",
        "difficulty": "hard",
        "sub-category": "Speaker Identification",
        "category": "Reasoning",
        "dataset": "VoxCeleb",
    },
]


def write_layout(root: Path, json_name: str, audio_dir: str, answers: bool = True) -> Path:
    """The official local layout: ``<json_name>`` (a JSON list of rows) beside a folder of clips."""
    (root / audio_dir).mkdir(parents=True)
    rows = []
    for i, row in enumerate(ROWS):
        t = np.arange(int(16000 * 0.3)) / 16000
        sf.write(root / audio_dir / f"{row['id']}.wav", 0.2 * np.sin(2 * np.pi * (220 + 40 * i) * t), 16000)
        full = {**row, "audio_id": f"./{audio_dir}/{row['id']}.wav", "split": "test-mini"}
        if not answers:
            full.pop("answer")
        rows.append(full)
    (root / json_name).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return root


@pytest.fixture
def mini_dir(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "mmau", "mmau-test-mini.json", "test-mini-audios")


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def sample_of(row: dict[str, Any]) -> Sample:
    return Sample(
        id=row["id"],
        task="mmau-mini",
        conversation=[Turn(role="user", text=row["question"])],
        reference={"answer": row["answer"], "choices": row["choices"]},
    )


def judge_text(judge_name: str, row: dict[str, Any], text: str, reasoning: str | None = None):
    return load_judge(judge_name).score(sample_of(row), [ModelOutput(text=text, reasoning=reasoning)])


# -- 1. loading ---------------------------------------------------------------------------------
def test_local_layout_loads_into_samples(mini_dir):
    [task] = resolve_tasks(f"mmau-mini:data={mini_dir}")
    samples = list(task.samples())
    assert [s.id for s in samples] == [r["id"] for r in ROWS]
    first = samples[0]
    [turn] = first.conversation
    assert turn.role == "user"
    assert Path(turn.audio.path) == mini_dir / "./test-mini-audios/s-1.wav"
    audio, rate = sf.read(turn.audio.path)
    assert rate == 16000 and len(audio) == 4800
    assert turn.text == (
        "What is the source of the sound? Select one option from the provided choices.\n"
        "['Dog barking', 'Cat meowing', 'Car horn', 'Dog growling']"
    )
    assert first.reference == {"answer": "Dog barking", "choices": ROWS[0]["choices"]}
    assert first.meta == {
        "task": "sound",
        "difficulty": "easy",
        "sub-category": "Sound Source Identification",
        "category": "Information Extraction",
        "dataset": "AudioSet",
    }
    assert task.group_by == ("task", "difficulty", "sub-category")
    assert task.judges == ("mmau-string-match",)
    info = task.dataset_info()
    assert info["count"] == 6 and info["split"] == "test" and info["mode"] == "official"
    assert info["version"] == DATASET_VERSION == "v05.15.25"
    assert info["prompt_sha256"] == template_digest("mmau.j2")
    assert re.fullmatch(r"[0-9a-f]{64}", info["fingerprint"])
    [again] = resolve_tasks(f"mmau-mini:data={mini_dir / 'mmau-test-mini.json'}")
    assert again.dataset_info()["fingerprint"] == info["fingerprint"]
    [strict] = resolve_tasks(f"mmau-mini:data={mini_dir},mode=strict")
    assert strict.judges == ("mmau-choice",)


def test_audio_column_wins_over_audio_id(tmp_path):
    rows = [{**ROWS[0], "audio": {"bytes": b"RIFFfake", "path": "x.wav"}, "audio_id": "./nope.wav"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "mmau-test-mini.parquet"))
    [task] = resolve_tasks(f"mmau-mini:data={tmp_path}")
    [sample] = task.samples()
    assert sample.conversation[0].audio.data == b"RIFFfake"


# -- 2. the official rule on hand-worked cases ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("Dog barking", True),
        ("The answer is dog barking.", True),
        ("A", False),
        ("dog", False),  # 'barking' missing
        ("dog barking or car horn", False),  # 'car', 'horn' belong only to a wrong option
        ("barking dog", True),  # the prediction is a set of tokens: order is ignored
        ("DOG-BARKING!!!", True),  # punctuation splits and vanishes
        ("Dog barking, not growling", False),  # 'growling' is a wrong-only token
    ],
)
def test_official_string_match_hand_cases(text, correct):
    score = judge_text("mmau-string-match", ROWS[0], text)
    assert score.passed is correct
    assert score.metrics == {"accuracy": float(correct)}
    assert score.parse_failed is False


def test_official_empty_reply_is_wrong_and_counted():
    score = judge_text("mmau-string-match", ROWS[0], "")
    assert score.passed is False and score.metrics == {"accuracy": 0.0} and score.parse_failed


def test_official_scores_the_reply_not_the_reasoning():
    # '<think>car horn</think>Dog barking' as split by the adapter: reasoning kept apart
    score = judge_text("mmau-string-match", ROWS[0], "Dog barking", reasoning="car horn")
    assert score.passed is True
    assert score.details["prediction"] == "Dog barking"


# -- 3. equivalence with an independent transcription of the published rule --------------------
def published_rule(answer: str, prediction: str, choices: list[str]) -> bool:
    """evaluation.py's string_match, transcribed separately (lists and loops, no shared code)."""

    def words(s: str) -> list[str]:
        return re.findall(r"\b\w+\b", s.lower())

    pred = words(prediction)
    ans = words(answer)
    wrong_only = [w for c in choices if c != answer for w in words(c) if w not in ans]
    has_all = all(w in pred for w in ans)
    has_wrong = any(w in pred for w in wrong_only)
    return has_all and not has_wrong


def predictions_for(row: dict[str, Any]) -> list[tuple[str, str | None]]:
    choices = row["choices"]
    out: list[tuple[str, str | None]] = [("", None), ("   ", None), ("I cannot tell.", None)]
    for i, choice in enumerate(choices):
        letter = "ABCDEFGHIJ"[i]
        out += [
            (letter, None),
            (f"({letter})", None),
            (f"{letter}. {choice}", None),
            (choice, None),
            (choice.upper(), None),
            (choice.lower() + ".", None),
            (f"The answer is {choice}.", None),
            (f'"{choice}"!', None),
            (" ".join(reversed(choice.split())), None),
            (choice.split()[0], None),
            (f"Dog barking? No: {choice}", None),
            (f"{choice}", f"maybe {choices[(i + 1) % len(choices)]}"),
        ]
        other = choices[(i + 1) % len(choices)]
        out += [
            (f"{choice} or {other}", None),
            (f"{choice}, {other}", None),
            (f"not {other}, {choice}", None),
        ]
    out.append((" ".join(choices), None))
    return out


def test_judge_agrees_with_published_rule_on_many_predictions():
    verdicts = []
    for row in ROWS:
        for text, reasoning in predictions_for(row):
            score = judge_text("mmau-string-match", row, text, reasoning)
            expected = published_rule(row["answer"], text, row["choices"])
            assert score.passed is expected, (row["id"], text)
            verdicts.append(expected)
    assert len(verdicts) >= 200
    assert any(verdicts) and not all(verdicts)


# -- 4. strict mode ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "correct", "parse_failed"),
    [
        ("A", True, False),
        ("The answer is (C).", False, False),
        ("It is dog barking.", True, False),
        ("Car horn", False, False),
        ("Dog barking or car horn", False, True),  # two option texts: ambiguous
        ("A or B", False, True),
        ("", False, True),
    ],
)
def test_strict_mode(text, correct, parse_failed):
    score = judge_text("mmau-choice", ROWS[0], text)
    assert score.passed is correct and score.parse_failed is parse_failed


# -- 5 and 6. runs through the CLI against the loopback server ----------------------------------
def first_option(body: dict[str, Any]) -> Reply:
    """Always pick the first option of the prompt's list, with some reasoning that names another."""
    options = ast.literal_eval(last_user_text(body).splitlines()[1])  # test data, not model text
    return Reply(options[0], reasoning=f"not {options[1]}")


def model_spec(server: OpenAIServer) -> str:
    return f"openai:{server.model}@{server.base_url}"


def test_test_split_run_writes_the_submission(server, tmp_path):
    server.answer = first_option
    data = write_layout(tmp_path / "mmau-full", "mmau-test.json", "test-audios", answers=False)
    # in process (the CLI path is covered below): evaluate() is what `evalkit run` calls
    config = RunConfig(model=model_spec(server), tasks=f"mmau-test:data={data}", out_dir=str(tmp_path))
    run_dir = evaluate(config, show_progress=False).root
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert {s["score"]["judge"] for s in scores} == {"mmau-submission"}
    assert all(s["score"].get("passed") is None and not s["score"]["metrics"] for s in scores)
    path = run_dir / SUBMISSION_FILE
    written_by_the_run = path.read_bytes()  # finalize wrote it: no extra step for the user
    assert write_submission(run_dir) == path and path.read_bytes() == written_by_the_run
    submitted = json.loads(path.read_text(encoding="utf-8"))
    original = json.loads((data / "mmau-test.json").read_text(encoding="utf-8"))
    assert [{k: v for k, v in s.items() if k != "model_prediction"} for s in submitted] == original
    assert [s["model_prediction"] for s in submitted] == [r["choices"][0] for r in ROWS]


def test_cli_run_and_offline_failure(server, mini_dir, tmp_path):
    """Two real ``evalkit run`` processes, started together to keep the suite fast: a run on the
    local copy (exit 0, groups by task/difficulty/sub-category) and one without --data while the
    hub is offline (exit 2 with the --data hint)."""
    server.answer = first_option
    server.think = "inline"  # "<think>not Cat meowing</think>Dog barking": scored on the answer only
    spec = model_spec(server)
    run = [*CLI, "--model", spec, "--tasks", "mmau-mini", "--data", str(mini_dir), "--limit", "4"]
    offline_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [*run, "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            [*CLI, "--model", spec, "--tasks", "mmau-mini", "--out", str(tmp_path / "offline")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=offline_env,
        ),
    ]
    (ok_out, ok_err), (off_out, off_err) = (p.communicate(timeout=120) for p in procs)
    assert procs[0].returncode == 0, f"stdout:\n{ok_out}\nstderr:\n{ok_err[-3000:]}"
    assert procs[1].returncode == 2, off_err
    assert "offline, give --data" in off_err + off_out

    run_dir = only_run_dir(tmp_path / "out")
    judge = read_json(run_dir / "summary.json")["tasks"]["mmau-mini"]["judges"]["mmau-string-match"]
    assert judge["n"] == 4
    # first option picked: right for s-1 and m-2, wrong for s-2 and m-1
    assert judge["metrics"]["accuracy"]["value"] == pytest.approx(0.5)
    assert set(judge["groups"]) == {"task", "difficulty", "sub-category"}
    assert set(judge["groups"]["task"]) == {"sound", "music"}
    assert set(judge["groups"]["difficulty"]) == {"easy", "medium", "hard"}
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert responses[0]["output"]["text"] == "Dog barking"
    assert responses[0]["output"]["reasoning"] == "not Cat meowing"
    first_score = read_jsonl(run_dir / "scores.jsonl")[0]["score"]
    assert first_score["passed"] is True
