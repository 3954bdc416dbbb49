"""The records are the on-disk API: each must survive a JSON round trip unchanged, reject unknown
fields, and (for requests) hash audio by content rather than by location."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from evalkit.records import (
    AudioPart,
    AudioRef,
    ChatRequest,
    ErrorInfo,
    GenerationParams,
    Message,
    ModelOutput,
    Record,
    ResponseRecord,
    Sample,
    Score,
    ScoreRecord,
    TextPart,
    Timing,
    Turn,
    TurnInput,
    Usage,
)

AUDIO_BYTES = b"RIFF\x00\x01\x02fake-wav-bytes\xff\xfe"


def _examples() -> list[Record]:
    path_ref = AudioRef(path="/data/clip.wav", sample_rate=16000)
    data_ref = AudioRef(data=AUDIO_BYTES, sample_rate=24000, mime="audio/ogg")
    output = ModelOutput(
        text="The answer is 12.",
        reasoning="7 + 5 = 12",
        audio=data_ref,
        usage=Usage(prompt_tokens=10, completion_tokens=5, reasoning_tokens=3),
        timing=Timing(first_token=0.25, total=1.5),
        model="m",
        trace={"asr": "what is seven plus five", "none_value": None},
    )
    score = Score(
        judge="numeric",
        metrics={"accuracy": 1.0, "turn_accuracy": None},
        passed=True,
        extracted="12",
        explanation="turn 0: expected '12', read '12'",
        details={"turns": [{"turn": 0, "extracted": None, "correct": False}]},
    )
    return [
        path_ref,
        data_ref,
        Turn(role="user", text="hi", audio=path_ref, transcript="hello"),
        Sample(
            id="s1",
            task="t",
            conversation=[Turn(role="system", text="be brief"), Turn(role="user", audio=data_ref)],
            reference={"turns": [None, {"answer": "3"}]},
            meta={"category": "x", "difficulty": 2},
        ),
        TextPart(text="hello"),
        AudioPart(audio=path_ref),
        Message(role="user", content=[AudioPart(audio=data_ref), TextPart(text="question")]),
        GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=["\n"], extra={"k": [1, 2]}),
        ChatRequest(
            messages=[Message(role="system", content=[TextPart(text="sys")])],
            params=GenerationParams(seed=1),
        ),
        Usage(prompt_tokens=1, completion_tokens=2, reasoning_tokens=None),
        Timing(first_token=None, total=2.0),
        ErrorInfo(kind="timeout", message="request timed out", attempts=3),
        output,
        ModelOutput(error=ErrorInfo(kind="http_500", message="boom")),
        score,
        ResponseRecord(
            task="t",
            sample_id="s1",
            sample_index=4,
            turn=1,
            request_hash="ab" * 32,
            cached=True,
            input=TurnInput(text="q", transcript="spoken q", audio_path="/data/clip.wav"),
            output=output,
        ),
        ScoreRecord(task="t", sample_id="s1", sample_index=4, meta={"voice": "en-us"}, score=score),
        TurnInput(text="q", transcript=None, audio_path="a.wav"),
    ]


@pytest.mark.parametrize("record", _examples(), ids=lambda r: type(r).__name__)
def test_json_round_trip(record: Record) -> None:
    text = record.to_json()
    again = type(record).model_validate_json(text)
    assert again == record
    assert type(record).from_json(text) == record
    json.loads(text)  # valid JSON, one document


def test_audio_data_is_base64_in_json() -> None:
    ref = AudioRef(data=AUDIO_BYTES)
    payload = json.loads(ref.to_json())
    assert payload["data"] == base64.b64encode(AUDIO_BYTES).decode("ascii")
    assert "path" not in payload  # None fields are left out
    assert AudioRef.model_validate_json(ref.to_json()).data == AUDIO_BYTES


@pytest.mark.parametrize(
    "fields",
    [{}, {"sample_rate": 16000}, {"path": "a.wav", "data": b"x"}],
    ids=["nothing", "rate-only", "both"],
)
def test_audio_ref_needs_exactly_one_source(fields: dict) -> None:
    with pytest.raises(ValidationError, match="exactly one of 'path' or 'data'"):
        AudioRef(**fields)


def test_audio_ref_needs_exactly_one_source_from_json() -> None:
    with pytest.raises(ValidationError):
        AudioRef.model_validate_json('{"path": "a.wav", "data": "eA=="}')
    with pytest.raises(ValidationError):
        AudioRef.model_validate_json("{}")


@pytest.mark.parametrize(
    ("record_type", "payload"),
    [
        (Turn, {"role": "user", "txt": "typo"}),
        (AudioRef, {"path": "a.wav", "rate": 16000}),
        (Sample, {"id": "1", "task": "t", "conversation": [], "refrence": {}}),
        (GenerationParams, {"max_token": 5}),
        (Score, {"judge": "j", "metric": {}}),
        (ModelOutput, {"text": "x", "reasoning_content": "y"}),
        (ScoreRecord, {"task": "t", "sample_id": "s", "sample_index": 0, "score": {"judge": "j"}, "x": 1}),
    ],
)
def test_unknown_fields_are_rejected(record_type: type[Record], payload: dict) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        record_type.model_validate_json(json.dumps(payload))


def test_unknown_fields_rejected_in_nested_records() -> None:
    bad = {"role": "user", "content": [{"type": "text", "text": "x", "lang": "en"}]}
    with pytest.raises(ValidationError):
        Message.model_validate_json(json.dumps(bad))


def test_role_is_checked() -> None:
    with pytest.raises(ValidationError):
        Turn(role="narrator", text="x")


def test_model_output_ok_flag() -> None:
    assert ModelOutput(text="x").ok
    assert not ModelOutput(error=ErrorInfo(kind="timeout", message="slow")).ok


def _request(audio: AudioRef, temperature: float = 0.0) -> ChatRequest:
    return ChatRequest(
        messages=[
            Message(role="system", content=[TextPart(text="be brief")]),
            Message(role="user", content=[AudioPart(audio=audio), TextPart(text="answer")]),
        ],
        params=GenerationParams(temperature=temperature),
    )


def test_cache_payload_replaces_audio_by_sha256(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "clip.wav"
    second = tmp_path / "b" / "other-name.wav"
    first.write_bytes(AUDIO_BYTES)
    second.write_bytes(AUDIO_BYTES)

    payload = _request(AudioRef(path=str(first))).cache_payload()
    expected_digest = hashlib.sha256(AUDIO_BYTES).hexdigest()
    assert payload["messages"][1]["content"] == [
        {"type": "audio", "sha256": expected_digest},
        {"type": "text", "text": "answer"},
    ]
    assert payload["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "be brief"}]}
    assert str(first) not in json.dumps(payload)
    assert payload["params"]["temperature"] == 0.0

    # same sound at another path, or in memory: same payload
    assert _request(AudioRef(path=str(second))).cache_payload() == payload
    assert _request(AudioRef(data=AUDIO_BYTES)).cache_payload() == payload


def test_cache_payload_differs_for_different_audio_or_params(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(AUDIO_BYTES)
    base = _request(AudioRef(path=str(clip))).cache_payload()
    other_audio = _request(AudioRef(data=AUDIO_BYTES + b"\x00")).cache_payload()
    assert other_audio != base
    assert (
        other_audio["messages"][1]["content"][0]["sha256"]
        == hashlib.sha256(AUDIO_BYTES + b"\x00").hexdigest()
    )
    assert _request(AudioRef(path=str(clip)), temperature=0.7).cache_payload() != base


def test_cache_payload_of_missing_audio_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _request(AudioRef(path=str(tmp_path / "missing.wav"))).cache_payload()


def test_message_text_joins_text_parts() -> None:
    msg = Message(
        role="user",
        content=[TextPart(text="one"), AudioPart(audio=AudioRef(data=b"x")), TextPart(text="two")],
    )
    assert msg.text() == "one\ntwo"
