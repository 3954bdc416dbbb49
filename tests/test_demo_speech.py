"""The demo-speech task, the replay model and the naturalness judge: speech whose properties are
known by construction (clean vs noisy, flat vs expressive, one voice vs a switch) must come out of
the judges in the expected order, through the real pipeline."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir

from evalkit.audio import wav_bytes
from evalkit.cache import request_key
from evalkit.errors import ModelError
from evalkit.records import AudioRef, ModelOutput, Sample, Turn
from evalkit.tasks.demo_speech import NOISE_SNR_DB, VARIANTS, DemoSpeech, add_noise, speak


def build(cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Sample], dict]:
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(cache))
    task = DemoSpeech()
    return list(task.samples()), task.dataset_info()


def test_samples_build_offline_and_deterministically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, info_a = build(tmp_path / "a", monkeypatch)
    second, info_b = build(tmp_path / "b", monkeypatch)
    assert info_a["fingerprint"] == info_b["fingerprint"]  # same bytes from two independent renders
    assert info_a["count"] == len(first) == 3 * len(VARIANTS)
    assert {s.meta["variant"] for s in first[:5]} == set(VARIANTS)  # --limit 5 covers every variant
    for sample in first:
        assert 3 <= len(sample.conversation) <= 4
        assert len(sample.reference["replies"]) == len(sample.conversation)
        for turn in sample.conversation:
            assert turn.role == "user" and turn.transcript and Path(turn.audio.path).is_file()
    assert [s.id for s in first] == [s.id for s in second]
    noisy = next(s for s in first if s.meta["variant"] == "noisy")
    assert noisy.reference["replies"][0]["noise_snr_db"] == NOISE_SNR_DB
    switch = next(s for s in first if s.meta["variant"] == "voice-switch")
    assert [r["voice"] for r in switch.reference["replies"]][:3] == ["en-us", "en-us", "en-us+f3"]


def test_replay_answers_each_turn_with_its_rendered_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalkit.models.base import load_model

    samples, _ = build(tmp_path, monkeypatch)
    task, model = DemoSpeech(), load_model("replay")
    assert model.capabilities.audio_in and model.capabilities.audio_out and model.capabilities.multi_turn
    keys = set()
    for sample in samples[:5]:  # one conversation in every variant: same words, different replies
        history: list[ModelOutput] = []
        for k in task.answer_turns(sample):
            request = task.build_request(sample, k, history)
            output = asyncio.run(model.generate(request))
            reply = sample.reference["replies"][k]
            assert output.text == reply["text"]
            assert Path(output.audio.path).name == reply["audio"]
            keys.add(request_key(model.spec, request))
            history.append(output)
    assert len(keys) == sum(len(s.conversation) for s in samples[:5])  # no two requests share a cache key


def test_replay_refuses_a_reply_that_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkit.models.base import load_model

    samples, _ = build(tmp_path, monkeypatch)
    task, model = DemoSpeech(), load_model("replay")
    request = task.build_request(samples[0], 0, [])
    sidecar = Path(samples[0].conversation[0].audio.path).with_suffix(".reply.json")
    sidecar.write_text(sidecar.read_text().replace("museum", "zoo"))
    with pytest.raises(ModelError, match="does not match"):
        asyncio.run(model.generate(request))
    plain = request.model_copy(deep=True)
    plain.messages[-1].content[0].audio = AudioRef(data=wav_bytes(speak("Hello.", "en-us", 150), 16000))
    with pytest.raises(ModelError, match="no pre-rendered reply"):
        asyncio.run(model.generate(plain))


def test_naturalness_imports_distillmos_without_leaving_a_placeholder() -> None:
    from evalkit.judges.naturalness import _distillmos_class

    assert _distillmos_class().__name__ == "ConvTransformerSQAModel"
    stand_in = sys.modules.get("torchaudio")
    assert stand_in is None or "evalkit placeholder" not in (stand_in.__doc__ or "")


SENTENCES = [
    "The museum opens at ten in the morning. Tickets cost twelve dollars.",
    "Let it rise for about one hour in a warm place. It should double in size.",
    "Yes, tomatoes love the sun. Give them at least six hours of light each day.",
]


@pytest.mark.slow
def test_naturalness_rates_clean_speech_above_noisy() -> None:
    """Measured (espeak-ng 1.51, white noise at 5 dB): DNSMOS ovrl ~2.9 clean vs ~1.8 noisy and bak
    ~3.9 vs ~1.6, per clip. DistillMOS rates espeak speech ~2.3-2.9 either way and does NOT order
    clean above noisy reliably (in the 15-sample run noisy averaged 2.38, clean 2.36), so it is
    only checked to be a MOS in range."""
    from evalkit.judges.naturalness import NaturalnessJudge

    judge = NaturalnessJudge()
    sample = Sample(id="s", task="t", conversation=[Turn(role="user", text="hi")])
    clean = [speak(text, "en-us", 150) for text in SENTENCES]
    noisy = [add_noise(x, NOISE_SNR_DB, seed=i) for i, x in enumerate(clean)]

    def rate(clips):
        outputs = [ModelOutput(text="x", audio=AudioRef(data=wav_bytes(c, 16000))) for c in clips]
        return judge.score(sample, outputs)

    good, bad = rate(clean), rate(noisy)
    for a, b in zip(good.details["per_turn"], bad.details["per_turn"], strict=True):
        assert a["dnsmos_ovrl"] > b["dnsmos_ovrl"] + 0.5
        assert a["dnsmos_bak"] > b["dnsmos_bak"] + 1.0
    for score in (good, bad):
        assert 1.0 <= score.metrics["distillmos"] <= 5.0
        assert len(score.details["per_turn"]) == 3


def test_naturalness_without_speech_is_not_applicable() -> None:
    from evalkit.judges.naturalness import NaturalnessJudge

    sample = Sample(id="s", task="t", conversation=[Turn(role="user", text="hi")])
    score = NaturalnessJudge().score(sample, [ModelOutput(text="no audio")])
    assert score.error is None and all(v is None for v in score.metrics.values())
    assert score.details["skipped_turns"] == [0]


def variant_metric(summary: dict, judge: str, metric: str) -> dict[str, float]:
    groups = summary["judges"][judge]["groups"]["variant"]
    return {variant: groups[variant][metric]["value"] for variant in groups}


@pytest.mark.slow
def test_replay_run_orders_variants_as_constructed(tmp_path: Path) -> None:
    """evaluate() with --model replay on one conversation per variant: groups per variant in
    summary.json; noisy is less natural than clean, flat < clean < expressive in pitch variability,
    and only the voice switch is flagged."""
    from evalkit.runner import RunConfig, evaluate

    store = evaluate(
        RunConfig(model="replay", tasks="demo-speech", limit=5, out_dir=str(tmp_path)),
        show_progress=False,
    )
    summary = json.loads((store.root / "summary.json").read_text())["tasks"]["demo-speech"]
    for name in DemoSpeech.judges:
        judge = summary["judges"][name]
        assert judge["n_scored"] == 5 and judge["n_judge_errors"] == 0, (name, judge)
        assert set(judge["groups"]["variant"]) == set(VARIANTS)
    ovrl = variant_metric(summary, "naturalness", "dnsmos_ovrl")
    assert ovrl["noisy"] < ovrl["clean"] - 0.5
    assert variant_metric(summary, "naturalness", "dnsmos_bak")["noisy"] < 2.5
    pitch = variant_metric(summary, "prosody", "pitch_sd_st")
    assert pitch["flat"] < pitch["clean"] < pitch["expressive"]
    drift = variant_metric(summary, "voice", "timbre_drift")
    assert drift["voice-switch"] == 1.0
    assert all(drift[v] == 0.0 for v in VARIANTS if v != "voice-switch")


@pytest.mark.slow
def test_cascade_run_on_demo_speech_through_the_cli(tmp_path: Path) -> None:
    """The task also serves a model that speaks its own replies (the replay data is ignored)."""
    proc = evalkit_run(
        "--model", "cascade", "--tasks", "demo-speech", "--limit", "1", "--out", str(tmp_path), timeout=1800
    )
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path)
    responses = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 4 and all("error" not in r["output"] for r in responses)
    assert all("replay" not in r["output"]["trace"] for r in responses)
    summary = json.loads((run_dir / "summary.json").read_text())["tasks"]["demo-speech"]
    for name in DemoSpeech.judges:
        assert summary["judges"][name]["n_judge_errors"] == 0, (name, summary["judges"][name])
    report = (run_dir / "report.html").read_text()
    for name in DemoSpeech.judges:
        assert name in report
