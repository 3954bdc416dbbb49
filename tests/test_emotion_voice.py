"""The emotion and voice judges on real synthesised speech (espeak-ng), a real (tiny, randomly
initialised) transformers audio classifier, and a real HTTP judge model (the loopback server).

What is checked is what the judges promise: a voice switch is flagged and one voice is not; an
erratic conversation scores worse on every continuity metric than a steady one; a jump the user's
own affect explains is not counted; labels are compared ordinally; the SER plumbing yields
distributions; the LLM judge parses strictly, re-asks, errors and caches. Accuracy of a random
classifier is, of course, not checked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from evalkit.errors import EvalkitError
from evalkit.judges.base import load_judge
from evalkit.records import AudioRef, ModelOutput, Sample, Turn

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "I think you should try the pasta, it is really very good.",
    "Sure, let me check the train times for you this evening.",
    "That sounds wonderful, congratulations on the new job!",
]
USER_SENTENCES = [
    "What is the weather like today?",
    "Where should I eat tonight?",
    "When does the last train leave?",
    "I finally got the job I wanted.",
]


def speak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160, amplitude: int = 100) -> bytes:
    """espeak-ng WAV bytes with pitch (0-99), speed (wpm) and amplitude (0-200) set; resampled to
    16 kHz by evalkit like every other clip."""
    from evalkit import audio as audio_io

    proc = subprocess.run(
        [
            "espeak-ng",
            "-v",
            voice,
            "-p",
            str(pitch),
            "-s",
            str(speed),
            "-a",
            str(amplitude),
            "--stdout",
            text,
        ],
        capture_output=True,
        check=True,
    )
    samples, rate = audio_io.load(AudioRef(data=proc.stdout), sample_rate=16000)
    return audio_io.wav_bytes(samples, rate)


#: arousal extremes: low = low, quiet, slow; high = high, loud, fast
LOW = {"pitch": 20, "speed": 125, "amplitude": 60}
HIGH = {"pitch": 85, "speed": 220, "amplitude": 180}
MID = {"pitch": 50, "speed": 160, "amplitude": 100}


def conversation(
    model_audio: list[bytes], user_audio: list[bytes] | None = None, reference: dict[str, Any] | None = None
) -> tuple[Sample, list[ModelOutput]]:
    turns = []
    for k in range(len(model_audio)):
        audio = AudioRef(data=user_audio[k]) if user_audio is not None else None
        turns.append(Turn(role="user", transcript=USER_SENTENCES[k], audio=audio))
    sample = Sample(id="c", task="t", conversation=turns, reference=reference or {})
    outputs = [ModelOutput(text=SENTENCES[k], audio=AudioRef(data=wav)) for k, wav in enumerate(model_audio)]
    return sample, outputs


@pytest.fixture(scope="module")
def steady() -> list[bytes]:
    return [speak(s, **MID) for s in SENTENCES]


@pytest.fixture(scope="module")
def erratic() -> list[bytes]:
    return [speak(s, **(LOW if k % 2 == 0 else HIGH)) for k, s in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def calm_user() -> list[bytes]:
    return [speak(s, voice="en-us+f3", **MID) for s in USER_SENTENCES]


# -- emotion: the acoustic arousal proxy ----------------------------------------------------------
def test_erratic_affect_scores_worse_than_steady_on_every_continuity_metric(steady, erratic, calm_user):
    judge = load_judge("emotion")
    calm = judge.score(*conversation(steady, calm_user))
    wild = judge.score(*conversation(erratic, calm_user))
    assert calm.error is None and wild.error is None, (calm.error, wild.error)
    c, w = calm.metrics, wild.metrics
    assert c["unjustified_jumps"] == 0 and calm.passed is True
    assert w["unjustified_jumps"] == 3 and wild.passed is False  # every one of the 3 changes
    assert w["affect_jump_max"] > 2 * c["affect_jump_max"]
    assert c["affect_jump_max"] < 1.0 < w["affect_jump_max"]
    assert w["affect_variance"] > 4 * c["affect_variance"]
    # the arousal proxy alternates with the renders: low, high, low, high
    arousal = [row["arousal"] for row in wild.details["per_turn"]]
    assert arousal[1] > arousal[0] and arousal[1] > arousal[2] and arousal[3] > arousal[2]
    assert wild.details["user_audio"] is True and len(wild.details["changes"]) == 3


def test_a_jump_that_follows_the_users_own_change_is_justified(erratic):
    # the user swings the same way as the model: continuity, not a break
    user = [speak(s, voice="en-us+f3", **(LOW if k % 2 == 0 else HIGH)) for k, s in enumerate(USER_SENTENCES)]
    score = load_judge("emotion").score(*conversation(erratic, user))
    assert score.error is None, score.error
    assert score.metrics["affect_jumps"] == 3 and score.metrics["unjustified_jumps"] == 0
    assert score.metrics["user_alignment"] > 0.8
    assert all(row["justified"] for row in score.details["changes"])


def test_without_user_audio_jumps_are_counted_but_not_judged(erratic):
    score = load_judge("emotion").score(*conversation(erratic))
    assert score.metrics["affect_jumps"] == 3
    assert score.metrics["unjustified_jumps"] is None and score.metrics["user_alignment"] is None
    assert score.passed is None


def test_expected_emotions_are_compared_ordinally(erratic):
    judge = load_judge("emotion")
    right = judge.score(*conversation(erratic, reference={"emotions": ["sad", "excited", "calm", "angry"]}))
    wrong = judge.score(*conversation(erratic, reference={"emotions": ["happy", "sad", "excited", "tired"]}))
    assert right.metrics["emotion_label_agreement"] == 1.0
    assert wrong.metrics["emotion_label_agreement"] == 0.0
    assert [row["expected_level"] for row in right.details["per_turn"]] == [-1, 1, -1, 1]


def test_label_agreement_by_hand():
    from evalkit.judges.emotion import label_agreement

    # 3 comparable pairs (the two "high" turns are not compared): (0,1) right, (0,2) right, (1,2) tie
    assert label_agreement([-1, 1, 1], [-0.5, 0.7, 0.7]) == pytest.approx(1.0)
    assert label_agreement([-1, 0, 1], [-0.5, 0.7, 0.7]) == pytest.approx((1 + 1 + 0.5) / 3)
    assert label_agreement([0, 0, 0], [-1.0, 0.0, 1.0]) is None
    assert label_agreement([-1, 1], [None, 0.3]) is None


def test_continuity_metrics_by_hand():
    from evalkit.judges.affect import JUMP_THRESHOLDS
    from evalkit.judges.emotion import continuity_metrics

    def turn(pitch: float = 0.0, loud: float = -30.0) -> dict[str, float | None]:
        return {"pitch_level": pitch, "pitch_range": 8.0, "loudness": loud, "tempo": 5.0}

    big = 2 * JUMP_THRESHOLDS["pitch_level"]
    model = [turn(), turn(pitch=big), turn(pitch=big), turn()]
    user = [turn(), turn(pitch=big), turn(pitch=big), turn(pitch=big)]
    metrics, rows, events, verdict = continuity_metrics(model, user)
    assert metrics["affect_jump_max"] == pytest.approx(2.0)  # in units of the cue's threshold
    assert metrics["affect_jumps"] == 2  # up (the user went up too: justified) and down (not)
    assert metrics["unjustified_jumps"] == 1
    assert [r.get("justified") for r in rows] == [True, None, False]
    assert [(e["turn"], e["kind"], e["cue"]) for e in events] == [
        (1, "jump", "pitch_level"),
        (3, "jump", "pitch_level"),
    ]
    assert metrics["responsiveness"] == 1.0 and verdict == "follows"
    # without user audio: jumps counted, not judged
    alone, _, _, none = continuity_metrics(model, None)
    assert alone["affect_jumps"] == 2 and alone["unjustified_jumps"] is None and none is None
    # a user turn without audio: no evidence either way
    partial, _, _, _ = continuity_metrics(model, [turn(), dict.fromkeys(turn()), turn(), turn()])
    assert partial["unjustified_jumps"] is None and partial["responsiveness"] is None


def test_bad_input_is_a_judge_error_with_its_reason(steady):
    judge = load_judge("emotion")
    sample, outputs = conversation(steady[:2], reference={"emotions": ["neutral", "gleeful"]})
    assert "unknown emotion label 'gleeful'" in judge.score(sample, outputs).error.message
    sample, outputs = conversation(steady[:2], reference={"emotions": ["neutral"]})
    assert "one label per answered turn" in judge.score(sample, outputs).error.message
    sample, outputs = conversation(steady[:2])
    outputs[1] = ModelOutput(text="hi")
    score = judge.score(sample, outputs)
    assert score.error.kind == "judge_error" and "has no audio" in score.error.message


# -- voice ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_voice_switch_is_flagged_and_one_voice_is_not(steady):
    switched = [speak(s, voice=v) for s, v in zip(SENTENCES[:3], ["en-us", "en-us", "en-us+f3"], strict=True)]
    judge = load_judge("voice")
    same = judge.score(*conversation(steady[:3]))
    other = judge.score(*conversation(switched))
    assert same.error is None and other.error is None
    assert same.passed is True and same.metrics["timbre_drift_turns"] == 0
    assert same.metrics["voice_similarity_min"] > 0.8
    assert other.passed is False and other.metrics["timbre_drift_turns"] == 1
    assert other.metrics["voice_similarity_min"] < 0.8
    assert [row["switch"] for row in other.details["per_turn"]] == [False, False, True]
    assert other.details["switch_turns"] == [2]
    (event,) = other.details["events"]
    assert (event["turn"], event["kind"]) == (2, "voice_switch") and event["similarity"] < judge.threshold
    single = judge.score(*conversation(steady[:1]))
    assert single.metrics["voice_similarity_min"] is None and single.passed is None


# -- emotion-ser: a pluggable classifier ----------------------------------------------------------
LABELS = ["neu", "hap", "ang", "sad"]


@pytest.fixture(scope="module")
def tiny_ser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised wav2vec2 classifier saved as a checkpoint folder (nothing downloaded)."""
    from evalkit.compat import torchaudio_stand_in

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    path = tmp_path_factory.mktemp("tiny-ser")
    with torchaudio_stand_in():  # the model classes import torchaudio, broken next to CPU torch
        transformers.Wav2Vec2ForSequenceClassification(config).save_pretrained(path)
        transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return path


def test_ser_judge_needs_its_model():
    from evalkit.judges.emotion import EmotionSERJudge

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EVALKIT_SER_MODEL", raising=False)
        with pytest.raises(EvalkitError, match="EVALKIT_SER_MODEL"):
            load_judge("emotion-ser")
    with pytest.raises(EvalkitError, match="cannot load SER model"):
        EmotionSERJudge("/nonexistent/ser-checkpoint").score(*conversation([speak("hello")]))


def test_ser_distributions_and_consistency(tiny_ser, steady, monkeypatch):
    monkeypatch.setenv("EVALKIT_SER_MODEL", str(tiny_ser))
    sample, outputs = conversation(steady[:3], reference={"emotions": ["neutral", "happy", "angry"]})
    score = load_judge("emotion-ser").score(sample, outputs)
    assert score.error is None, score.error
    rows = score.details["ser_turns"]
    assert len(rows) == 3
    for row in rows:
        assert set(row["probs"]) == set(LABELS)
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert row["top"] == max(row["probs"], key=row["probs"].get)
    m = score.metrics
    assert 0.0 <= m["ser_jsd_mean"] <= m["ser_jsd_max"] <= 1.0
    assert m["ser_label_flips"] == sum(a["top"] != b["top"] for a, b in zip(rows, rows[1:], strict=False))
    expected_hits = [r["top"] == x for r, x in zip(rows, ["neu", "hap", "ang"], strict=True)]
    assert m["ser_label_accuracy"] == pytest.approx(sum(expected_hits) / 3)
    # the acoustic judge adds the same classifier metrics when the variable is set
    both = load_judge("emotion").score(sample, outputs)
    assert both.metrics["ser_jsd_mean"] == pytest.approx(m["ser_jsd_mean"])
    assert "affect_jump_max" in both.metrics


def test_jensen_shannon_bounds():
    from evalkit.judges.emotion import jensen_shannon

    assert jensen_shannon({"a": 1.0}, {"a": 1.0}) == pytest.approx(0.0)
    assert jensen_shannon({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert 0 < jensen_shannon({"a": 0.6, "b": 0.4}, {"a": 0.4, "b": 0.6}) < 0.1


# -- emotion-llm: a judge model through the real openai adapter -----------------------------------
PROMPT_TURN = re.compile(r"^Assistant: (.*)$", re.MULTILINE)


def judge_answer(body: dict[str, Any]) -> str:
    prompt = body["messages"][0]["content"]
    replies = PROMPT_TURN.findall(prompt)
    if "job" not in prompt:
        return "I cannot rate this."
    if len(body["messages"]) == 1 and "pasta" in prompt:
        return '```json\n{"score": "4", "justification": "a string score"}\n```'
    return "```json\n" + json.dumps({"score": 4, "justification": f"{len(replies)} replies read"}) + "\n```"


def test_emotion_llm_judge_parses_reasks_errors_and_caches(steady, tmp_path, monkeypatch):
    from evalkit.cache import ResponseCache
    from evalkit.judges.emotion import EmotionLLMJudge
    from evalkit.service import ModelService
    from evalkit.testing.openai_server import OpenAIServer

    def pinned_judge(spec: str) -> EmotionLLMJudge:
        """The judge pinned (``revision``) and bound to a service on the shared cache file: its
        verdicts serve any later binding (evalkit.service)."""
        judge = EmotionLLMJudge(spec, revision="judge-v1")
        judge.bind(ModelService.standalone(cache=ResponseCache(tmp_path / "cache.sqlite")))
        return judge

    with OpenAIServer(model="judge", answer=judge_answer) as server:
        spec = f"openai:judge@{server.base_url}"
        judge = pinned_judge(spec)
        sample, outputs = conversation(steady)
        score = judge.score(sample, outputs)
        assert score.error is None, score.error
        assert score.metrics == {"emotion_llm_score": 4.0}
        assert score.details["justification"] == "4 replies read"
        # "pasta" is in the conversation: the first reply had a string score and was re-asked
        assert score.details["judge_attempts"] == 2 and server.hits == 2
        assert "'score' must be an integer" in score.details["judge_parse_errors"][0]
        first = server.requests[0].body
        assert first["temperature"] == 0
        prompt = first["messages"][0]["content"]
        assert "User: I finally got the job I wanted." in prompt
        assert prompt.count("[prosody: ") == 4 and "median pitch" in prompt
        assert "could not be read" in server.requests[1].body["messages"][-1]["content"]

        # a rerun of the pinned judge is answered from the cache
        again = pinned_judge(spec).score(sample, outputs)
        assert again.metrics == score.metrics and again.details["judge_cached"] and server.hits == 2

        # a judge that never answers in form is a judge error after 1 + retries calls
        short, short_outputs = conversation(steady[:2])
        failed = EmotionLLMJudge(spec, retries=1).score(short, short_outputs)
        assert failed.error.kind == "judge_error" and "after 2 attempts" in failed.error.message
        assert server.hits == 4

        # built by name from the environment
        monkeypatch.setenv("EVALKIT_EMOTION_JUDGE", spec)
        assert load_judge("emotion-llm").model_spec == judge.model_spec
        monkeypatch.delenv("EVALKIT_EMOTION_JUDGE")
        with pytest.raises(EvalkitError, match="EVALKIT_EMOTION_JUDGE"):
            load_judge("emotion-llm")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ('{"score": 6, "justification": "x"}', "integer from 1 to 5"),
        ('{"score": 4.5, "justification": "x"}', "integer from 1 to 5"),
        ('{"score": true, "justification": "x"}', "integer from 1 to 5"),
        ('{"score": 3}', "'justification' must be a string"),
        ("[3]", "expected a JSON object"),
        ('Sure! {"score": 3, "justification": "x"}', "not valid JSON"),
    ],
)
def test_emotion_verdict_parser_is_strict(text: str, problem: str):
    from evalkit.judges.emotion import EmotionParseError, parse_emotion_verdict

    with pytest.raises(EmotionParseError, match=re.escape(problem)):
        parse_emotion_verdict(text)


def test_emotion_verdict_parser_reads_bare_and_fenced_objects():
    from evalkit.judges.emotion import parse_emotion_verdict

    assert parse_emotion_verdict('{"score": 5, "justification": "warm"}').score == 5
    assert (
        parse_emotion_verdict('```json\n{"score": 2, "justification": "cold"}\n```').justification == "cold"
    )
