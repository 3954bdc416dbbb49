"""Model cards (models/cards/*.yaml): strict loading, spec resolution, the Step-Audio chat template
against the published one, and a whole ``evalkit run --model step-audio-r1.5 --base-url URL``
against the loopback OpenAI server (what the server received, what the run directory holds)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit import registry
from evalkit.errors import ModelError, SpecError
from evalkit.models.base import load_model
from evalkit.models.model_cards import (
    CardError,
    builtin_cards,
    get_card,
    load_card,
    render_chat,
    render_template,
)
from evalkit.models.openai_chat import parse_tts_content
from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart
from evalkit.testing.openai_server import OpenAIServer, Reply, pcm16_to_wav, tone_pcm16

pytest.importorskip("aiohttp")
pytest.importorskip("yaml")

URL = "http://127.0.0.1:8000/v1"

# The chat template published in stepfun-ai/Step-Audio-R1 README.md (commit 00371cba8f53,
# "Deployment and Execution", the `--chat-template '...'` argument of `vllm serve`), with the
# shell's '"'"' quoting undone and nothing else changed. The card keeps a re-indented copy.
PUBLISHED_STEP_AUDIO_TEMPLATE = (
    r"""{%- macro render_content(content) -%}{%- if content is string -%}{{- content.replace("<audio_patch>\n", "<audio_patch>") -}}{%- elif content is mapping -%}{{- content['value'] if 'value' in content else content['text'] -}}{%- elif content is iterable -%}{%- for item in content -%}{%- if item.type == 'text' -%}{{- item['value'] if 'value' in item else item['text'] -}}{%- elif item.type == 'audio' -%}<audio_patch>{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"""  # noqa: E501
    r"""{%- if tools -%}{{- '<|BOT|>system\n' -}}{%- if messages[0]['role'] == 'system' -%}{{- render_content(messages[0]['content']) + '<|EOT|>' -}}{%- endif -%}{{- '<|BOT|>tool_json_schemas\n' + tools|tojson + '<|EOT|>' -}}{%- else -%}{%- if messages[0]['role'] == 'system' -%}{{- '<|BOT|>system\n' + render_content(messages[0]['content']) + '<|EOT|>' -}}{%- endif -%}{%- endif -%}"""  # noqa: E501
    r"""{%- for message in messages -%}{%- if message["role"] == "user" -%}{{- '<|BOT|>human\n' + render_content(message["content"]) + '<|EOT|>' -}}{%- elif message["role"] == "assistant" -%}{{- '<|BOT|>assistant\n' + (render_content(message["content"]) if message["content"] else '') -}}{%- set is_last_assistant = true -%}{%- for m in messages[loop.index:] -%}{%- if m["role"] == "assistant" -%}{%- set is_last_assistant = false -%}{%- endif -%}{%- endfor -%}{%- if not is_last_assistant -%}{{- '<|EOT|>' -}}{%- endif -%}{%- elif message["role"] == "function_output" -%}{%- else -%}{%- if not (loop.first and message["role"] == "system") -%}{{- '<|BOT|>' + message["role"] + '\n' + render_content(message["content"]) + '<|EOT|>' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|BOT|>assistant\n<think>\n' -}}{%- endif -%}"""  # noqa: E501
)


def write_clip(path: Path, seconds: float, rate: int = 16000) -> Path:
    rng = np.random.default_rng(1)
    sf.write(path, (rng.standard_normal(int(seconds * rate)) * 0.05).astype("float32"), rate)
    return path


def wav_seconds(b64: str) -> float:
    info = sf.info(io.BytesIO(base64.b64decode(b64)))
    return info.frames / info.samplerate


def vllm_view(wire_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What vLLM (chat_utils, content format "openai") passes to the template for the messages we
    actually send: string content -> one text part, input_audio -> {"type": "audio"}."""
    view = []
    for message in wire_messages:
        content = message["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [
                {"type": "audio"} if p["type"] == "input_audio" else {"type": "text", "text": p["text"]}
                for p in content
            ]
        view.append({"role": message["role"], "content": parts})
    return view


# -- loading --------------------------------------------------------------------------------------
def test_every_builtin_card_loads_and_is_a_model_kind() -> None:
    expected = {
        "step-audio-r1.5",
        "step-audio-r1.1",
        "step-audio-r1",
        "qwen2-audio-7b-instruct",
        "qwen2.5-omni",
        "generic",
    }
    assert set(builtin_cards()) == expected
    assert expected <= set(registry.models.names())


def test_step_audio_card_recipe() -> None:
    card = get_card("step-audio-r1.5")
    assert card.served_name == "Step-Audio-R1.5"
    assert card.stop == ["<|EOT|>"]
    assert card.extra["skip_special_tokens"] is False
    assert card.audio.chunk_seconds == 25
    assert card.reasoning.prefill == "<think>\n"
    assert card.speech_field == "tts_content"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("name: bad\ndescription: x\nstopp: ['<|EOT|>']\n", "unknown field 'stopp'"),
        ("name: bad\ndescription: x\naudio: {chunk_secs: 25}\n", "unknown field 'audio.chunk_secs'"),
        ("name: bad\ndescription: x\naudio: {chunk_seconds: -1}\n", "field 'audio.chunk_seconds'"),
        ("name: bad\ndescription: x\nadapter: hf\n", "field 'adapter'"),
        ("name: other\ndescription: x\n", "field 'name' is 'other'"),
        ("name: bad\ndescription: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_cards_fail_with_one_line_naming_file_and_field(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(CardError) as caught:
        load_card(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and fragment in message


# -- spec resolution ------------------------------------------------------------------------------
def test_card_spec_defaults_and_overrides() -> None:
    adapter = load_model("step-audio-r1.5", base_url=URL)
    digest = get_card("step-audio-r1.5").digest
    assert adapter.model == "Step-Audio-R1.5" and adapter.base_url == URL
    assert adapter.spec == f"step-audio-r1.5:served=Step-Audio-R1.5,card={digest}@{URL}"
    assert adapter.reasoning_prefilled and adapter.audio_chunk_seconds == 25
    renamed = load_model("step-audio-r1.5:served=my-r15", base_url=URL)
    assert renamed.model == "my-r15"
    # the canonical spec resolves to the same adapter
    assert load_model(adapter.spec).spec == adapter.spec
    described = adapter.describe()
    assert described["card"]["name"] == "step-audio-r1.5" and described["card"]["digest"] == digest
    assert described["card"]["chat_template"].startswith("{%- macro render_content")


@pytest.mark.parametrize(
    ("spec", "options", "fragment"),
    [
        ("step-audio-r1.5", {}, "--base-url"),
        ("step-audio-r1.5:@http://a:1/v1", {"base_url": "http://b:2/v1"}, "--base-url is"),
        ("step-audio-r1.5:card=000000000000", {"base_url": URL}, "card digest"),
        ("step-audio-r1.5:voice=x", {"base_url": URL}, "unknown option"),
        ("generic", {"base_url": URL}, "generic:served=NAME"),
    ],
)
def test_card_spec_errors(monkeypatch, spec: str, options: dict[str, str], fragment: str) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SpecError, match=fragment):
        load_model(spec, **options)


def test_openai_spec_takes_base_url_option() -> None:
    assert load_model("openai:m", base_url=URL).base_url == URL
    with pytest.raises(SpecError, match="give it once"):
        load_model("openai:m@http://other:1/v1", base_url=URL)


# -- request shaping ------------------------------------------------------------------------------
def test_card_defaults_fill_only_what_a_hand_built_request_left_unset() -> None:
    """Outside a run nothing decides precedence but the adapter's fill-in: an explicit value is
    kept (in a run the runner sets every field, command line > card > task; test_reasoning_runs)."""
    adapter = load_model("step-audio-r1.5", base_url=URL)
    request = ChatRequest(
        messages=[Message(role="user", content=[TextPart(text="hi")])],
        params=GenerationParams(temperature=0.0, stop=["###"], extra={"stop_token_ids": [7]}),
    )
    body = adapter.build_payload(request)
    assert body["temperature"] == 0.0  # set explicitly on the request: kept
    assert body["max_tokens"] == 32000  # unset by the task: the card's default
    assert body["top_p"] == 1.0  # set by neither: GenerationParams' default
    assert body["stop"] == ["<|EOT|>", "###"]
    assert body["skip_special_tokens"] is False and body["stop_token_ids"] == [7]


def test_long_audio_is_sent_as_consecutive_chunks_of_at_most_25_s(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.wav", 60.0)
    adapter = load_model("step-audio-r1.5", base_url=URL)
    request = ChatRequest(
        messages=[
            Message(role="user", content=[AudioPart(audio=AudioRef(path=str(clip))), TextPart(text="?")])
        ]
    )
    parts = adapter.build_payload(request)["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text"] + ["input_audio"] * 3  # text first, as the client
    assert [round(wav_seconds(p["input_audio"]["data"]), 3) for p in parts[1:]] == [25.0, 25.0, 10.0]
    # consecutive and complete: the pieces joined are the clip
    joined = np.concatenate(
        [sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"])))[0] for p in parts[1:]]
    )
    original, _ = sf.read(clip)
    assert len(joined) == len(original) and np.allclose(joined, original, atol=1 / 32768)


# -- the chat template ----------------------------------------------------------------------------
def test_step_audio_rendering_matches_the_published_template(tmp_path: Path) -> None:
    """Our messages -> the wire payload -> vLLM's template view -> the *published* template must
    equal the card's rendering, and both the hand-written expected prompt."""
    clip = write_clip(tmp_path / "long.wav", 60.0)
    short = write_clip(tmp_path / "short.wav", 2.0)
    messages = [
        Message(role="system", content=[TextPart(text="Be brief.")]),
        Message(
            role="user", content=[AudioPart(audio=AudioRef(path=str(clip))), TextPart(text="Transcribe.")]
        ),
        Message(role="assistant", content=[TextPart(text="It says hello.")]),
        Message(
            role="user", content=[TextPart(text="And this?"), AudioPart(audio=AudioRef(path=str(short)))]
        ),
    ]
    card = get_card("step-audio-r1.5")
    adapter = load_model("step-audio-r1.5", base_url=URL)
    wire = adapter.build_payload(ChatRequest(messages=messages))["messages"]

    published = render_template(PUBLISHED_STEP_AUDIO_TEMPLATE, vllm_view(wire))
    ours = render_chat(card, messages)
    expected = (
        "<|BOT|>system\nBe brief.<|EOT|>"
        "<|BOT|>human\nTranscribe.<audio_patch><audio_patch><audio_patch><|EOT|>"  # text first
        # the published template never closes an assistant turn: its `set` inside the inner for
        # loop does not escape the loop (Jinja scoping), so is_last_assistant stays true
        "<|BOT|>assistant\nIt says hello."
        "<|BOT|>human\nAnd this?<audio_patch><|EOT|>"
        "<|BOT|>assistant\n<think>\n"
    )
    assert published == expected
    assert ours == expected
    assert ours.endswith(card.reasoning.prefill)  # the card's prefill is what the template opens


def test_all_step_audio_cards_share_the_published_template() -> None:
    view = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    published = render_template(PUBLISHED_STEP_AUDIO_TEMPLATE, view)
    for name in ("step-audio-r1", "step-audio-r1.1", "step-audio-r1.5"):
        assert render_template(get_card(name).chat_template, view) == published


def test_qwen2_audio_template_numbers_audio_parts(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.wav", 1.0)
    messages = [
        Message(role="user", content=[AudioPart(audio=AudioRef(path=str(clip))), TextPart(text="What?")])
    ]
    assert render_chat(get_card("qwen2-audio-7b-instruct"), messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# -- speech in tts_content ------------------------------------------------------------------------
def test_tts_content_shapes() -> None:
    wav = pcm16_to_wav(tone_pcm16(0.1))
    b64 = base64.b64encode(wav).decode()
    assert parse_tts_content([b64]) == (wav, "audio/wav", None, [])
    assert parse_tts_content([{"data": b64, "format": "wav"}])[0] == wav
    # the published client's shape, streamed in two deltas of codec tokens: no sound here
    audio, _, text, tokens = parse_tts_content(
        [
            {"tts_text": "Hel", "tts_audio": "<audio_1><audio_22>"},
            {"tts_text": "lo", "tts_audio": "<audio_3>"},
        ]
    )
    assert (audio, text, tokens) == (None, "Hello", [1, 22, 3])
    with pytest.raises(ModelError, match="unrecognised tts_content"):
        parse_tts_content([{"speech": "?"}])
    with pytest.raises(ModelError, match="not base64"):
        parse_tts_content(["not base64!"])


# -- the whole run --------------------------------------------------------------------------------
def test_evalkit_run_with_a_card_against_the_loopback_server(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.wav", 60.0)
    samples = tmp_path / "long.jsonl"
    sample = {
        "id": "long-1",
        "task": "long",
        "conversation": [{"role": "user", "audio": {"path": "long.wav"}, "text": "A) one\nB) two\nLetter?"}],
        "reference": {"answer": "B", "choices": ["one", "two"]},
    }
    samples.write_text(json.dumps(sample) + "\n", encoding="utf-8")
    spoken = pcm16_to_wav(tone_pcm16(0.3))
    reply = Reply(
        "I compare the options.</think>The answer is B.<|EOT|>",
        extra_message_fields={"tts_content": {"data": base64.b64encode(spoken).decode(), "format": "wav"}},
    )
    out = tmp_path / "runs"
    with OpenAIServer(model="Step-Audio-R1.5", answer=lambda body: reply) as server:
        proc = evalkit_run(
            "--model", "step-audio-r1.5", "--base-url", server.base_url,
            "--tasks", f"demo-choice,jsonl:path={samples},judges=choice",
            "--limit", "2", "--out", str(out), "--cache-path", str(tmp_path / "cache.db"),
        )  # fmt: skip
        assert_ok(proc)
        bodies = [r.body for r in server.requests]
    assert len(bodies) == 3  # two demo-choice samples, one long sample
    for body in bodies:
        assert body["model"] == "Step-Audio-R1.5"
        assert body["stop"] == ["<|EOT|>"]
        assert body["skip_special_tokens"] is False and body["stop_token_ids"] == [151665]
    # the budget belongs to the model: the card's settings beat demo-choice's (0.0, 96)
    assert all((b["temperature"], b["max_tokens"]) == (0.7, 32000) for b in bodies)
    [long_body] = [b for b in bodies if "Letter?" in json.dumps(b)]
    audio_parts = [p for p in long_body["messages"][-1]["content"] if p["type"] == "input_audio"]
    assert [round(wav_seconds(p["input_audio"]["data"]), 3) for p in audio_parts] == [25.0, 25.0, 10.0]
    assert sf.info(clip).duration == 60.0

    run_dir = only_run_dir(out)
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == 3
    for record in responses:
        output = record["output"]
        assert output["text"] == "The answer is B."
        assert output["reasoning"] == "I compare the options."
        saved = run_dir / output["audio"]["path"]
        assert output["audio"]["path"].startswith("audio/") and saved.read_bytes() == spoken
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["model"]["card"]["name"] == "step-audio-r1.5"
    assert manifest["model"]["card"]["digest"] == get_card("step-audio-r1.5").digest
    assert manifest["config"]["model_options"]["base_url"] == server.base_url
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert scores and all(s["score"].get("error") is None for s in scores)


def tokens_to_tone(tokens: list[int]) -> bytes:
    """A stand-in vocoder for the hook test: 10 ms of tone per codec token."""
    return pcm16_to_wav(tone_pcm16(0.01 * len(tokens)))


def test_card_speech_decoder_turns_codec_tokens_into_audio() -> None:
    """A reply that speaks in ``<audio_N>`` codec tokens becomes audio through the decoder the card
    names; without a decoder the tokens stay in the trace and no audio is invented."""
    import asyncio

    from evalkit.models.openai_chat import OpenAIChatAdapter

    reply = Reply(
        "Hello there.",
        extra_message_fields={"tts_content": {"tts_text": "Hello there.", "tts_audio": "<audio_1>" * 50}},
    )
    request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="hi")])])
    with OpenAIServer(answer=lambda body: reply) as server:

        async def ask(decoder: str | None):
            adapter = OpenAIChatAdapter(
                server.model, server.base_url, speech_field="tts_content", speech_decoder=decoder
            )
            try:
                return await adapter.generate(request)
            finally:
                await adapter.aclose()

        decoded = asyncio.run(ask("test_model_cards:tokens_to_tone"))
        kept = asyncio.run(ask(None))
    assert decoded.audio is not None
    assert sf.info(io.BytesIO(decoded.audio.read_bytes())).duration == pytest.approx(0.5, abs=0.01)
    assert decoded.trace["speech_decoder"] == "test_model_cards:tokens_to_tone"
    assert kept.audio is None and kept.trace["tts_audio_tokens"] == [1] * 50
    with pytest.raises(SpecError, match="cannot be imported"):
        OpenAIChatAdapter("m", "http://127.0.0.1:9/v1", speech_decoder="no_such_module:decode")
