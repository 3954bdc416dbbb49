"""Spoken-MQA: loading the official row layout (local copies), the prompt, and both scoring modes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.judges.base import load_judge
from evalkit.records import ModelOutput, Sample, Turn
from evalkit.tasks.base import resolve_tasks
from evalkit.tasks.prompts import template_digest
from evalkit.testing.openai_server import OpenAIServer, Reply, last_user_text

INSTRUCTION = "Please answer the question in the audio. End with: The answer is N."

# (transcript, answer) per hub split; each split's file is written in both shapes of answer.text
# (the ``dataset`` fixture): a list of reference texts, as the hub stores them and AudioBench's
# current scorer reads them, and a plain string, as a hand-made copy may have it
ROWS = {
    "short_digit": [("What is three plus four?", "7"), ("What is ten minus two?", "8")],
    "long_digit": [("What is one thousand two hundred and thirty four times two?", "2468")],
    "single_step_reasoning": [("Tom has five apples and eats two. How many are left?", "3")],
    "multi_step_reasoning": [
        ("A pen costs two dollars. How much do three pens and a one dollar cap cost?", "7")
    ],
}
SHAPES = {"string": lambda answer: answer, "list": lambda answer: [answer]}


def tone(seconds: float = 0.2, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_jsonl_dataset(root: Path, shape: str = "list") -> Path:
    """The hub layout as JSONL, one file per split, audio as WAV paths relative to the folder;
    ``answer.text`` in the given shape (one shape per file: a JSON column has one type)."""
    (root / "audio").mkdir(parents=True)
    for split, rows in ROWS.items():
        lines = []
        for i, (transcript, answer) in enumerate(rows):
            wav = f"audio/{split}_{i}.wav"
            sf.write(root / wav, tone(seconds=0.2 * (i + 1)), 16000)  # row i lasts 0.2*(i+1) s
            lines.append(
                json.dumps(
                    {
                        "context": {"bytes": None, "path": wav},
                        "context_transcript": transcript,
                        "instruction": {"text": INSTRUCTION},
                        "answer": {"text": SHAPES[shape](answer)},
                    }
                )
            )
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def dataset(tmp_path: Path, shape: str) -> Path:
    return write_jsonl_dataset(tmp_path / "spoken-mqa", shape)


def test_split_task_reads_the_official_layout(dataset: Path, shape: str) -> None:
    [task] = resolve_tasks(f"spoken-mqa-short-digit:data={dataset}")
    assert task.name == "spoken-mqa-short-digit" and task.split == "short_digit"
    samples = list(task.samples())
    assert [s.reference for s in samples] == [
        {"answer": SHAPES[shape](a)} for a in ("7", "8")
    ]  # a list stays a list
    first = samples[0]
    assert first.id == "short_digit-00000" and first.meta == {"split": "short_digit"}
    [turn] = first.conversation
    assert turn.role == "user" and turn.text == INSTRUCTION  # rendered verbatim, nothing appended
    assert turn.transcript == "What is three plus four?"  # kept for reports, never sent
    assert turn.audio is not None and Path(turn.audio.path) == dataset / "audio/short_digit_0.wav"
    assert turn.audio.read_bytes()[:4] == b"RIFF"

    request = task.build_request(first, 0, [])
    [message] = request.messages
    assert [p.type for p in message.content] == ["audio", "text"]
    assert "three plus four" not in json.dumps(request.cache_payload())
    assert request.params.temperature == 0.0

    info = task.dataset_info()
    assert info["id"] == "amao0o0/spoken-mqa" and info["split"] == "short_digit"
    assert info["count"] == 2 and info["mode"] == "official" and info["revision"] == "local"
    assert info["prompt_template"] == "spoken_mqa.j2"
    assert info["prompt_sha256"] == template_digest("spoken_mqa.j2") and len(info["fingerprint"]) == 64
    assert task.judges == ("spoken-mqa-official",)


def test_family_covers_the_four_reference_splits(dataset: Path, shape: str) -> None:
    tasks = resolve_tasks("spoken-mqa", data=str(dataset))
    assert [t.name for t in tasks] == [
        "spoken-mqa-short-digit",
        "spoken-mqa-long-digit",
        "spoken-mqa-single-step",
        "spoken-mqa-multi-step",
    ]
    for task in tasks:
        expected = ROWS[task.split]
        assert [s.reference["answer"] for s in task.samples()] == [SHAPES[shape](a) for _, a in expected]
        assert [s.conversation[0].transcript for s in task.samples()] == [t for t, _ in expected]
    assert {t.default_split for t in tasks} == set(ROWS)
    [knowledge] = resolve_tasks("spoken-mqa-knowledge")
    assert knowledge.split == "knowledge" and knowledge.judges == ("spoken-mqa-official",)


@pytest.mark.parametrize("answer", ["42", ["42"], ["42", "42.0"]])
def test_parquet_with_embedded_bytes_and_flattened_fields(tmp_path: Path, answer: str | list[str]) -> None:
    """A flattened export (``instruction.text`` keys) with audio bytes embedded in the file; the
    answer a string or a parquet list column (read back as the same list)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    sf.write(buf, tone(), 16000, format="WAV")
    table = pa.table(
        {
            "context": [{"bytes": buf.getvalue(), "path": "q0.wav"}],
            "context_transcript": ["What is six times seven?"],
            "instruction.text": [INSTRUCTION],
            "answer.text": [answer],
        }
    )
    path = tmp_path / "long_digit.parquet"
    pq.write_table(table, path)
    [task] = resolve_tasks(f"spoken-mqa-long-digit:data={path},mode=math-verify")
    [sample] = task.samples()
    assert sample.reference == {"answer": answer} and sample.conversation[0].text == INSTRUCTION
    assert sample.conversation[0].audio.data == buf.getvalue()
    assert task.judges == ("math-verify",) and task.dataset_info()["mode"] == "math-verify"


def test_unknown_mode_and_missing_answer_are_user_errors(tmp_path: Path) -> None:
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="unknown mode 'exact'"):
        resolve_tasks("spoken-mqa-short-digit:mode=exact")
    path = tmp_path / "short_digit.jsonl"
    path.write_text(json.dumps({"context": "a.wav", "instruction": {"text": "Q"}, "answer": {"text": ""}}))
    [task] = resolve_tasks(f"spoken-mqa-short-digit:data={path}")
    with pytest.raises(EvalkitError, match="row 0: no 'answer' text"):
        list(task.samples())
    for bad in ([], ["7", ""], ["7", 8]):
        path.write_text(
            json.dumps({"context": "a.wav", "instruction": {"text": "Q"}, "answer": {"text": bad}})
        )
        [task] = resolve_tasks(f"spoken-mqa-short-digit:data={path}")
        with pytest.raises(EvalkitError, match="row 0: 'answer.text' must be a text or a non-empty list"):
            list(task.samples())


# -- scoring ---------------------------------------------------------------------------------------
def judge(name: str, reply: str, answer: str):
    sample = Sample(
        id="s", task="t", conversation=[Turn(role="user", text="q")], reference={"answer": answer}
    )
    return load_judge(name).score(sample, [ModelOutput(text=reply)])


@pytest.mark.parametrize(
    ("reply", "answer", "extracted", "correct"),
    [
        ("The answer is 1,234.", "1234", "1234", True),
        ("12.50", "12.5", "12.5", True),
        ("I got 3 then 5", "5", "5", True),
        ("The answer is 7, not 8", "7", "7", True),
        ("The answer is 7, not 8", "8", "7", False),
        ("I computed 40 first. The answer is 42.", "40", "42", False),  # after the marker wins
        ("the ANSWER is -3.0", "-3", "-3", True),  # marker is case-insensitive, zeros stripped
        ("The answer is forty two, from 6 times 7", "42", "6", False),  # first number after the marker
        # no number after the marker: evalkit falls back to the last number in the whole reply (the
        # AudioBench reference scorer would read nothing here and score it wrong)
        ("I computed 42. The answer is forty two", "42", "42", True),
    ],
)
def test_gsm8k_mode_numeric_rule(reply: str, answer: str, extracted: str, correct: bool) -> None:
    score = judge("numeric", reply, answer)
    assert score.extracted == extracted and not score.parse_failed
    assert score.passed is correct and score.metrics == {"accuracy": float(correct)}


@pytest.mark.parametrize("reply", ["I do not know.", "The answer is forty two", ""])
def test_gsm8k_mode_reply_without_a_number_is_a_parse_failure(reply: str) -> None:
    score = judge("numeric", reply, "42")
    assert score.parse_failed and score.extracted is None
    assert score.passed is False and score.metrics == {"accuracy": 0.0}


@pytest.mark.parametrize(
    ("reply", "answer", "correct"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("$\\frac{1}{2}$", "0.5", True),
        ("1/2", "0.5", True),
        ("x = 2", "2", True),
        ("50%", "0.5", True),  # math-verify reads a bare percent sign as /100
        ("The answer is 1,234.", "1234", True),
        ("12.50", "12.5", True),
        ("The answer is $\\boxed{3}$.", "3", True),
        ("4", "3", False),
        ("\\frac{1}{3}", "0.5", False),
    ],
)
def test_math_verify_equivalence(reply: str, answer: str, correct: bool) -> None:
    score = judge("math-verify", reply, answer)
    assert not score.parse_failed and score.extracted
    assert score.passed is correct and score.metrics == {"accuracy": float(correct)}


@pytest.mark.parametrize("reply", ["hello world", "The answer is forty two", "\\frac{", ""])
def test_math_verify_unparsable_reply_is_a_parse_failure(reply: str) -> None:
    score = judge("math-verify", reply, "42")
    assert score.parse_failed and score.extracted is None and score.metrics == {"accuracy": 0.0}


def test_math_verify_unparsable_reference_is_a_judge_problem_not_a_zero() -> None:
    with pytest.raises(ValueError, match="reference answer"):
        judge("math-verify", "42", "no number here")


def test_math_verify_off_the_main_thread_disables_the_signal_timeout() -> None:
    """signal.alarm raises off the main thread; the judge must still score there."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        score = pool.submit(judge, "math-verify", "\\frac{1}{2}", "0.5").result()
    assert score.passed is True


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "judge_name"),
    [("official", "spoken-mqa-official"), ("gsm8k", "numeric"), ("math-verify", "math-verify")],
)
def test_evalkit_run_on_a_local_copy(dataset: Path, tmp_path: Path, mode: str, judge_name: str) -> None:
    """The real command; math-verify runs in the judge process pool (execution "process"), where the signal
    timeout works."""

    def answer(body: dict) -> Reply:
        # the question is only audio: tell the rows apart by their clip's length (row i: 0.2*(i+1) s)
        assert last_user_text(body) == INSTRUCTION
        [clip] = [p for p in body["messages"][-1]["content"] if p["type"] == "input_audio"]
        audio, rate = sf.read(io.BytesIO(base64.b64decode(clip["input_audio"]["data"])))
        row = round(len(audio) / rate / 0.2) - 1
        return Reply(["Three plus four. The answer is 7.", "The answer is 9."][row])

    with OpenAIServer(answer=answer) as server:
        out = tmp_path / "runs"
        proc = evalkit_run(
            "--model",
            f"openai:{server.model}@{server.base_url}",
            "--tasks",
            f"spoken-mqa-short-digit:mode={mode}",
            "--data",
            str(dataset),
            "--out",
            str(out),
        )
    assert_ok(proc)
    run_dir = only_run_dir(out)
    summary = read_json(run_dir / "summary.json")["tasks"]["spoken-mqa-short-digit"]
    accuracy = summary["judges"][judge_name]["metrics"]["accuracy"]["value"]
    assert accuracy == 0.5
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert sorted(s["score"]["extracted"] for s in scores) == ["7", "9"]
    manifest = read_json(run_dir / "manifest.json")
    assert "spoken_mqa.j2" in json.dumps(manifest)
