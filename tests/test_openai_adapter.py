"""The ``openai:`` adapter against a real loopback OpenAI-compatible server (evalkit.testing).

Everything here goes over HTTP on 127.0.0.1: the server parses what the adapter sends and records
it, so the assertions are about the exact wire format OpenAI/vLLM expect, not about mocks.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalkit.errors import EndpointUnreachable, ModelError
from evalkit.models.base import load_model
from evalkit.records import (
    AudioPart,
    AudioRef,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    TextPart,
)
from evalkit.testing.openai_server import AUDIO_PART_TOKENS, OpenAIServer, Reply

pytest.importorskip("aiohttp")


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def adapter_for(server: OpenAIServer, model: str | None = None, **options):
    return load_model(f"openai:{model or server.model}@{server.base_url}", **options)


def generate(adapter, request: ChatRequest) -> ModelOutput:
    """One request on a fresh event loop, closing the adapter's HTTP client on the same loop."""

    async def go() -> ModelOutput:
        try:
            return await adapter.generate(request)
        finally:
            await adapter.aclose()

    return asyncio.run(go())


def check(adapter) -> None:
    async def go() -> None:
        try:
            await adapter.check()
        finally:
            await adapter.aclose()

    asyncio.run(go())


def user(text: str) -> Message:
    return Message(role="user", content=[TextPart(text=text)])


def text_request(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=[user(text)], params=GenerationParams(**params))


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stereo_clip(tmp_path: Path) -> Path:
    """0.75 s of stereo 44.1 kHz noise: the adapter must send it as 16 kHz mono WAV."""
    rng = np.random.default_rng(0)
    path = tmp_path / "clip.wav"
    sf.write(path, (rng.standard_normal((33075, 2)) * 0.1).astype("float32"), 44100)
    return path


# -- what reaches the server ----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_multiturn_audio_request_reaches_server_in_openai_format(server, stereo_clip, stream):
    request = ChatRequest(
        messages=[
            Message(role="system", content=[TextPart(text="Be brief.")]),
            Message(
                role="user",
                content=[AudioPart(audio=AudioRef(path=str(stereo_clip))), TextPart(text="Transcribe.")],
            ),
            Message(role="assistant", content=[TextPart(text="It says hello.")]),
            user("And what is 40 plus 2? Say 42."),
        ],
        params=GenerationParams(
            max_tokens=7,
            temperature=0.3,
            top_p=0.9,
            seed=5,
            stop=["###"],
            extra={"top_k": 20, "skip_special_tokens": False},
        ),
    )
    output = generate(adapter_for(server, stream=stream), request)

    assert output.ok and output.text == "The answer is 42."
    [received] = server.requests
    body = received.body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert body["messages"][2]["content"] == "It says hello."  # assistant turns are plain strings
    assert body["messages"][3]["content"] == "And what is 40 plus 2? Say 42."
    audio_part, text_part = body["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "Transcribe."}
    assert audio_part["type"] == "input_audio"
    assert set(audio_part["input_audio"]) == {"data", "format"}
    assert audio_part["input_audio"]["format"] == "wav"
    wav = base64.b64decode(audio_part["input_audio"]["data"])
    info = sf.info(io.BytesIO(wav))
    assert (info.format, info.samplerate, info.channels, info.subtype) == ("WAV", 16000, 1, "PCM_16")
    assert abs(info.frames - 12000) <= 1  # 0.75 s at 16 kHz
    assert body["model"] == "loopback"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (7, 0.3, 0.9, 5)
    assert body["stop"] == ["###"]
    assert (body["top_k"], body["skip_special_tokens"]) == (20, False)  # extra params, top level
    if stream:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    else:
        assert not body.get("stream")


def test_unset_optional_params_are_not_sent(server):
    generate(adapter_for(server), text_request("hi"))
    body = server.requests[0].body
    assert "seed" not in body and "stop" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


# -- timing ---------------------------------------------------------------------------------------
def test_streaming_measures_time_to_first_token(server):
    server.delay, server.chunk_delay = 0.2, 0.03
    output = generate(adapter_for(server), text_request("Say 7"))
    assert output.text == "The answer is 7."
    first, total = output.timing.first_token, output.timing.total
    assert first is not None and total is not None
    assert 0.2 <= first <= total
    # four content pieces, three gaps of 0.03 s between them after the first token
    assert total - first >= 3 * 0.03 * 0.9


def test_non_streaming_has_total_but_no_first_token(server):
    server.delay = 0.2
    output = generate(adapter_for(server, stream=False), text_request("Say 7"))
    assert output.timing.first_token is None
    assert output.timing.total is not None and output.timing.total >= 0.2


# -- reasoning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("think", ["field", "inline"])
@pytest.mark.parametrize("stream", [True, False])
def test_reasoning_is_split_from_the_answer(server, think, stream):
    server.think = think
    server.answer = lambda body: Reply("The answer is 9.", reasoning="Four plus five is nine, so 9.")
    output = generate(adapter_for(server, stream=stream), text_request("What is 4 + 5?"))
    assert output.text == "The answer is 9."
    assert output.reasoning == "Four plus five is nine, so 9."
    assert "think>" not in output.text and "Four plus" not in output.text
    # usage: 4 answer words + 7 reasoning words; the server reports the reasoning tokens separately
    assert output.usage.completion_tokens == 11
    assert output.usage.reasoning_tokens == 7


def test_prefilled_reasoning_with_only_closing_tag(server):
    """Step-Audio-R1.x style: the chat template opens <think>, the completion only closes it."""
    server.answer = lambda body: "I should add them.</think>The answer is 3."
    output = generate(adapter_for(server, reasoning_prefilled=True), text_request("1 + 2?"))
    assert (output.text, output.reasoning) == ("The answer is 3.", "I should add them.")


# -- empty and cut replies -----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("reply", "prefilled", "text", "reasoning"),
    [
        (Reply(""), False, "", None),  # nothing at all
        (Reply("   \n"), False, "", None),  # whitespace only
        (Reply("<think>just thinking</think>"), False, "", "just thinking"),  # think-only
        (Reply("still thinking</think>  "), True, "", "still thinking"),  # prefilled, think-only
    ],
    ids=["empty", "whitespace", "think-only", "prefilled-think-only"],
)
def test_an_empty_answer_is_an_answer_not_an_error(server, stream, reply, prefilled, text, reasoning):
    server.answer = lambda body: reply
    output = generate(adapter_for(server, stream=stream, reasoning_prefilled=prefilled), text_request("?"))
    assert output.ok and (output.text, output.reasoning) == (text, reasoning)
    assert output.empty and output.finish_reason == "stop" and not output.truncated


@pytest.mark.parametrize("stream", [True, False])
def test_finish_reason_length_marks_the_reply_truncated(server, stream):
    server.answer = lambda body: Reply("<think>I will count every", finish_reason="length")
    output = generate(adapter_for(server, stream=stream), text_request("Count."))
    assert (output.finish_reason, output.truncated) == ("length", True)
    assert (output.text, output.reasoning) == ("", "I will count every")  # unclosed think: all reasoning
    assert ModelOutput.model_validate_json(output.model_dump_json()).truncated  # survives the file


# -- usage ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_usage_is_accounted(server, stereo_clip, stream):
    request = ChatRequest(
        messages=[
            Message(role="system", content=[TextPart(text="You are terse.")]),  # 3 words
            Message(
                role="user",
                content=[AudioPart(audio=AudioRef(path=str(stereo_clip))), TextPart(text="What is 6?")],
            ),  # audio part + 3 words
        ]
    )
    output = generate(adapter_for(server, stream=stream), request)
    assert output.usage.prompt_tokens == 3 + 3 + AUDIO_PART_TOKENS
    assert output.usage.completion_tokens == 4  # "The answer is 6."
    assert output.usage.reasoning_tokens == 0
    assert output.model == "loopback"


# -- spoken output --------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_audio_output_becomes_model_output_audio(server, stream):
    server.audio_seconds = 0.55
    request = text_request(
        "Say 5 out loud.", extra={"modalities": ["text", "audio"], "audio": {"voice": "alloy"}}
    )
    output = generate(adapter_for(server, stream=stream), request)

    body = server.requests[0].body
    assert body["modalities"] == ["text", "audio"] and body["audio"] == {"voice": "alloy"}
    assert output.ok and output.audio is not None and output.audio.data is not None
    samples, rate = sf.read(io.BytesIO(output.audio.data), dtype="int16")
    assert rate == 24000 and samples.ndim == 1
    assert len(samples) == round(0.55 * 24000)
    # OpenAI sends the words of a spoken reply as the audio transcript, with content null
    assert output.text == "The answer is 5."


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "retry_after", "transient"),
    [(500, None, True), (503, None, True), (429, 3.0, True), (400, None, False), (422, None, False)],
)
def test_http_errors_are_mapped(server, stream, status, retry_after, transient):
    server.fail_first(1, status=status, retry_after=retry_after)
    with pytest.raises(ModelError) as caught:
        generate(adapter_for(server, stream=stream), text_request("hi"))
    error = caught.value
    assert error.kind == f"http_{status}"
    assert error.transient is transient
    assert error.retry_after == retry_after
    assert str(status) in error.message
    # the rule is used up: the next request succeeds
    assert generate(adapter_for(server, stream=stream), text_request("hi")).ok
    assert [r.status for r in server.requests] == [status, 200]


def test_only_the_matching_request_fails(server):
    server.fail_matching(lambda body: "poison" in body["messages"][-1]["content"], status=400)
    adapter = adapter_for(server)
    assert generate(adapter, text_request("fine 1")).text == "The answer is 1."
    with pytest.raises(ModelError, match="HTTP 400"):
        generate(adapter, text_request("poison 2"))
    assert generate(adapter, text_request("fine 3")).text == "The answer is 3."
    assert server.count(where=lambda body: "poison" in body["messages"][-1]["content"]) == 1


def test_stream_cut_off_midway_is_a_transient_connection_error(server):
    """Half an answer must never be scored: a dropped stream is retried like a dropped connection."""
    server.cut_streams(1)
    adapter = adapter_for(server)
    with pytest.raises(ModelError) as caught:
        generate(adapter, text_request("Say 8"))
    assert caught.value.kind == "connection" and caught.value.transient
    assert generate(adapter, text_request("Say 8")).text == "The answer is 8."
    assert server.hits == 2


def test_check_and_generate_may_run_on_separate_event_loops(server):
    """``asyncio.run(adapter.check())`` then ``asyncio.run(adapter.generate(...))`` (as scripts and
    the vLLM test do) must work: the HTTP session follows the running loop."""
    adapter = adapter_for(server)
    asyncio.run(adapter.check())
    assert generate(adapter, text_request("Say 4")).text == "The answer is 4."
    assert generate(adapter, text_request("Say 5")).text == "The answer is 5."


def test_closed_port_is_a_transient_connection_error():
    adapter = load_model(f"openai:m@http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ModelError) as caught:
        generate(adapter, text_request("hi"))
    assert caught.value.kind == "connection" and caught.value.transient


def test_wrong_model_name_in_a_request_is_not_transient(server):
    with pytest.raises(ModelError) as caught:
        generate(adapter_for(server, model="other-model"), text_request("hi"))
    assert caught.value.kind == "http_404" and not caught.value.transient


# -- check() --------------------------------------------------------------------------------------
def test_check_passes_for_the_served_model(server):
    check(adapter_for(server))
    assert server.hits == 0  # listing models is not a chat request


def test_check_fails_for_a_closed_port():
    port = closed_port()
    with pytest.raises(EndpointUnreachable, match=f"cannot reach model server at http://127.0.0.1:{port}/v1"):
        check(load_model(f"openai:m@http://127.0.0.1:{port}/v1"))


def test_check_fails_for_a_model_the_server_does_not_serve(server):
    with pytest.raises(EndpointUnreachable, match="'other-model' is not served .* it serves: loopback"):
        check(adapter_for(server, model="other-model"))


# -- the server's own bookkeeping (tests rely on it) ----------------------------------------------
def test_server_counts_identical_requests_by_content_hash(server):
    adapter = adapter_for(server)
    for text in ("a 1", "b 2", "a 1"):
        generate(adapter, text_request(text))
    counts = server.hash_counts()
    assert sorted(counts.values()) == [1, 2]
    first = server.requests[0]
    assert server.count(hash=first.hash) == 2
    assert [r.number for r in server.requests] == [1, 2, 3]


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("o4-mini", True),
        ("o3", True),
        ("gpt-5-mini", True),
        ("gpt-4o", False),
        ("stepfun/Step-Audio-R1.5", False),
    ],
)
def test_openai_reasoning_models_get_max_completion_tokens_and_no_sampling(
    model: str, reasoning: bool
) -> None:
    """o-series / gpt-5 reject temperature and max_tokens (the AMC judge's default is o4-mini)."""
    with OpenAIServer(model=model) as srv:
        request = ChatRequest(
            messages=[Message(role="user", content=[TextPart(text="hi")])],
            params=GenerationParams(max_tokens=33, temperature=0.0),
        )
        assert generate(adapter_for(srv), request).ok
        body = srv.requests[0].body
    if reasoning:
        assert body["max_completion_tokens"] == 33
        assert not {"max_tokens", "temperature", "top_p"} & set(body)
    else:
        assert body["max_tokens"] == 33 and body["temperature"] == 0.0
        assert "max_completion_tokens" not in body
