"""``--executor ray``: model replicas as Ray actors on a real local Ray instance (2 CPUs, started
once for the module), compared with plain runs of the same model.

The fast tests use an ``openai:`` spec against a loopback server in this process: the actors
build their adapters from the spec and reach the server over the loopback interface, so
everything but the model itself is real (actor placement, JSON records over Ray, failover when an
actor dies, audio coming back as bytes). The slow test runs ``hf:smollm2-135m-instruct`` (greedy)
inside the actors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import read_json, read_jsonl

from evalkit.errors import EvalkitError
from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart
from evalkit.registry import register_task
from evalkit.registry import tasks as tasks_registry
from evalkit.runner import RunConfig, evaluate
from evalkit.tasks.samples_file import SamplesFileTask
from evalkit.testing.openai_server import OpenAIServer

ray = pytest.importorskip("ray")
pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def ray_cluster(evalkit_cache: Path) -> Iterator[None]:
    """One local Ray instance for the module (startup costs seconds). Started after the session's
    EVALKIT_CACHE_DIR is set, so the actor processes inherit it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_task(path: Path, n: int) -> str:
    samples = [
        {
            "id": f"s{i:02d}",
            "task": "x",
            "conversation": [{"role": "user", "text": f"Say {i * 4}."}],
            "reference": {"answer": str(i * 4) if i % 4 else "-7"},  # some deliberately wrong
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    return f"jsonl:path={path},judges=numeric"


def config(tmp_path: Path, model: str, task: str, **kw: Any) -> RunConfig:
    return RunConfig(model=model, tasks=task, out_dir=str(tmp_path), use_cache=False, **kw)


def test_ray_run_gives_the_scores_of_a_plain_run(ray_cluster, tmp_path) -> None:
    with OpenAIServer(delay=0.05) as server:
        spec = f"openai:{server.model}@{server.base_url}"
        task = write_task(tmp_path / "same.jsonl", 16)
        plain = evaluate(config(tmp_path / "plain", spec, task, concurrency=4), show_progress=False)
        hits_plain = server.hits
        on_ray = evaluate(
            config(tmp_path / "ray", spec, task, concurrency=4, executor="ray", replicas=2),
            show_progress=False,
        )
        assert hits_plain == 16 and server.hits == 32
    assert read_jsonl(on_ray.root / "scores.jsonl") == read_jsonl(plain.root / "scores.jsonl")
    texts = [r["output"]["text"] for r in read_jsonl(on_ray.root / "responses.jsonl")]
    assert texts == [r["output"]["text"] for r in read_jsonl(plain.root / "responses.jsonl")]
    manifest = read_json(on_ray.root / "manifest.json")
    assert manifest["config"]["executor"] == "ray" and manifest["config"]["replicas"] == 2
    assert manifest["model"]["spec"] == spec  # the actors' adapter, as a local run names it
    assert manifest["model"]["executor"]["replicas"] == 2
    assert all("ray" in r for r in manifest["model"]["replicas"])
    stats = manifest["last_session"]["replicas"]
    assert len(stats) == 2 and all(s["ok"] > 0 for s in stats)  # both actors answered
    assert sum(s["ok"] for s in stats) == 16


def test_ray_run_shares_the_response_cache_with_a_local_run(ray_cluster, tmp_path) -> None:
    """Same cache identity as the local adapter: a second run on Ray sends nothing."""
    with OpenAIServer() as server:
        spec = f"openai:{server.model}@{server.base_url}"
        task = write_task(tmp_path / "cached.jsonl", 6)
        cache = str(tmp_path / "cache.sqlite")
        evaluate(
            RunConfig(
                model=spec, tasks=task, out_dir=str(tmp_path / "a"), cache_path=cache, model_revision="v1"
            ),
            show_progress=False,
        )
        assert server.hits == 6
        store = evaluate(
            RunConfig(
                model=spec,
                tasks=task,
                out_dir=str(tmp_path / "b"),
                cache_path=cache,
                executor="ray",
                model_revision="v1",
            ),
            show_progress=False,
        )
        assert server.hits == 6
    assert read_json(store.root / "manifest.json")["last_session"]["cache_hits"] == 6


def test_audio_crosses_to_and_from_the_actors_as_bytes(ray_cluster, tmp_path) -> None:
    """Input audio given by a driver path arrives at the server; audio the model speaks comes back
    from the actor as bytes (a path in the actor's file system would mean nothing here)."""
    from evalkit.models.ray_replicas import load_on_ray

    clip = tmp_path / "question.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(8000) / 5)).astype("float32"), 16000)

    async def scenario(server: OpenAIServer):
        pool = await load_on_ray(f"openai:{server.model}@{server.base_url}", {}, 2)
        try:
            await pool.check()
            request = ChatRequest(
                messages=[
                    Message(
                        role="user",
                        content=[TextPart(text="Say 9."), AudioPart(audio=AudioRef(path=str(clip)))],
                    )
                ],
                params=GenerationParams(extra={"modalities": ["text", "audio"]}),
            )
            return await pool.generate(request)
        finally:
            await pool.aclose()

    with OpenAIServer() as server:
        output = asyncio.run(scenario(server))
        [received] = server.requests
    sent = [p for p in received.body["messages"][0]["content"] if p["type"] == "input_audio"]
    assert len(sent) == 1 and base64.b64decode(sent[0]["input_audio"]["data"])[:4] == b"RIFF"
    assert output.text == "The answer is 9."
    assert output.audio is not None and output.audio.path is None
    assert output.audio.data is not None and output.audio.data[:4] == b"RIFF"


def test_a_dead_actor_is_failed_over(ray_cluster) -> None:
    from evalkit.models.ray_replicas import load_on_ray

    async def scenario(server: OpenAIServer) -> tuple[list[str], list[dict[str, Any]]]:
        pool = await load_on_ray(f"openai:{server.model}@{server.base_url}", {}, 2)
        try:
            ray.kill(pool.replicas[0].adapter.actor)
            request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="Say 3.")])])
            outputs = await asyncio.gather(*(pool.generate(request) for _ in range(6)))
            return [o.text or "" for o in outputs], pool.session_stats()
        finally:
            await pool.aclose()

    with OpenAIServer() as server:
        texts, stats = asyncio.run(scenario(server))
        assert server.hits == 6
    assert texts == ["The answer is 3."] * 6
    assert stats[0]["failures"] >= 1 and stats[0]["ok"] == 0 and stats[1]["ok"] == 6


def test_a_bad_spec_inside_the_actors_is_a_one_line_error(ray_cluster, tmp_path) -> None:
    task = write_task(tmp_path / "bad.jsonl", 1)
    with pytest.raises(EvalkitError, match="bad base URL"):
        evaluate(config(tmp_path, "openai:m@ftp://nowhere", task, executor="ray"), show_progress=False)
    with pytest.raises(EvalkitError, match="needs 3 CPUs"):
        evaluate(
            config(tmp_path, "openai:m@http://127.0.0.1:9/v1", task, executor="ray", replicas=3),
            show_progress=False,
        )
    assert ray.is_initialized()  # the module's instance is left alone: evalkit did not start it


def test_help_does_not_import_ray() -> None:
    code = textwrap.dedent(
        """
        import sys
        import evalkit.cli
        try:
            evalkit.cli.app(["run", "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print("ray" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert "--executor" in proc.stdout and "--replicas" in proc.stdout


class TextSamplesTask(SamplesFileTask):
    """The ``jsonl`` task for a text-only model (SmolLM2 takes no audio); tasks live on the driver
    only, so registering one here is enough for a Ray run."""

    requires = ()


@pytest.mark.slow
def test_hf_model_on_ray_actors_matches_a_plain_run(ray_cluster, tmp_path) -> None:
    """SmolLM2-135M (greedy, batch 1 so batching cannot change a token) inside two CPU actors gives
    the answers and scores of the same model in this process."""
    if "jsonl-text" not in tasks_registry.names():
        register_task("jsonl-text")(TextSamplesTask)
    spec = "hf:smollm2-135m-instruct,batch=1"
    task = write_task(tmp_path / "hf.jsonl", 4).replace("jsonl:", "jsonl-text:", 1)
    params = {"max_tokens": 24, "concurrency": 2}
    plain = evaluate(config(tmp_path / "plain", spec, task, **params), show_progress=False)
    on_ray = evaluate(
        config(tmp_path / "ray", spec, task, executor="ray", replicas=2, **params), show_progress=False
    )
    texts = [r["output"].get("text") for r in read_jsonl(on_ray.root / "responses.jsonl")]
    assert all(texts) and texts == [
        r["output"].get("text") for r in read_jsonl(plain.root / "responses.jsonl")
    ]
    assert read_jsonl(on_ray.root / "scores.jsonl") == read_jsonl(plain.root / "scores.jsonl")
    stats = read_json(on_ray.root / "manifest.json")["last_session"]["replicas"]
    assert all(s["ok"] > 0 for s in stats)
