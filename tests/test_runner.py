"""The runner end to end through the real CLI (``python -m evalkit.cli run ...`` as a subprocess)
against the loopback OpenAI-compatible server.

The server answers deterministically (``default_answer``: "The answer is N." with the last number
of the last user message's text, else 12), so every expected score below is worked out by hand
from the samples. The server's record of what arrived is the ground truth for "how many requests
were sent" (retries, resume, cache).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import CLI, assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.testing.openai_server import OpenAIServer, Reply, default_answer, last_user_text

pytest.importorskip("aiohttp")


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def model_spec(server: OpenAIServer) -> str:
    return f"openai:{server.model}@{server.base_url}"


def write_samples(path: Path, samples: list[dict[str, Any]]) -> Path:
    """A ``jsonl`` task file in evalkit's Sample schema (``task`` is replaced by the loader)."""
    path.write_text("".join(json.dumps({"task": "mine", **s}) + "\n" for s in samples), encoding="utf-8")
    return path


def text_sample(sample_id: str, text: str, answer: str) -> dict[str, Any]:
    return {
        "id": sample_id,
        "conversation": [{"role": "user", "text": text}],
        "reference": {"answer": answer},
    }


def jsonl_task(path: Path) -> str:
    return f"jsonl:path={path},judges=numeric"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric(summary: dict, task: str, name: str = "accuracy") -> float:
    """A metric of the task's primary judge (the demo tasks choose their own judges)."""
    task_summary = summary["tasks"][task]
    return task_summary["judges"][task_summary["primary"]["judge"]]["metrics"][name]["value"]


# -- (a) a full run -------------------------------------------------------------------------------
def demo_answer(body: dict[str, Any]) -> Reply:
    """The default answer, except that multiple-choice prompts are always answered "B"."""
    if "Options:" in last_user_text(body):
        return Reply("The answer is B.")
    return default_answer(body)


def test_full_demo_run_writes_every_file_and_the_expected_scores(server, tmp_path):
    server.answer = demo_answer
    proc = evalkit_run("--model", model_spec(server), "--tasks", "demo", "--out", str(tmp_path / "runs"))
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path / "runs")
    for name in ("manifest.json", "responses.jsonl", "scores.jsonl", "summary.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert f"report: {run_dir / 'report.html'}" in proc.stdout

    # 8 arithmetic + 8 choice + 4 conversations x 3 turns = 28 requests, all answered once
    assert server.hits == 28 and all(r.status == 200 for r in server.requests)
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == 28 and all(
        r["output"].get("text") and "error" not in r["output"] for r in responses
    )
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert len(scores) == 20 and all("error" not in s["score"] for s in scores)

    # the demo's questions are spoken only: every user turn reaches the server as input_audio
    arithmetic = [
        r.body for r in server.requests if len(r.body["messages"]) == 2 and "Options" not in str(r.body)
    ]
    assert arithmetic
    for body in arithmetic:
        system, question = body["messages"]
        assert system["role"] == "system" and "The answer is N" in system["content"]
        [part] = question["content"]
        assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    # third turns of the conversations carry the model's own earlier replies as assistant turns
    third = [r.body for r in server.requests if len(r.body["messages"]) == 6]
    assert len(third) == 4
    for body in third:
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system"] + ["user", "assistant"] * 2 + ["user"]
        assert body["messages"][2]["content"] == body["messages"][4]["content"] == "The answer is 12."

    summary = read_json(run_dir / "summary.json")
    # arithmetic: always 12 -> only "seven plus five" is right
    assert metric(summary, "demo-arithmetic") == pytest.approx(1 / 8)
    # choice: always B -> right for moo/cow, spider/eight, frozen water/ice
    assert metric(summary, "demo-choice") == pytest.approx(3 / 8)
    assert summary["tasks"]["demo-choice"]["judges"]["choice"]["n_parse_failures"] == 0
    # conversations: always 12 -> only the eggs' third turn ("one box held 12") is right
    assert metric(summary, "demo-multiturn") == 0.0
    assert metric(summary, "demo-multiturn", "turn_accuracy") == pytest.approx(1 / 12)
    multiturn = summary["tasks"]["demo-multiturn"]
    by_turn = multiturn["judges"][multiturn["primary"]["judge"]]["by_turn"]
    assert [by_turn[t]["value"] for t in ("0", "1", "2")] == [0.0, 0.0, 0.25]
    for task in ("demo-arithmetic", "demo-choice", "demo-multiturn"):
        requests = summary["tasks"][task]["requests"]
        assert requests["n_errors"] == 0 and requests["n_cached"] == 0
    assert summary["tasks"]["demo-multiturn"]["requests"]["tokens"]["completion_tokens"] == 12 * 4

    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "completed"
    assert manifest["last_session"]["requests"] == 28 and manifest["last_session"]["samples"] == 20
    assert [t["name"] for t in manifest["tasks"]] == ["demo-arithmetic", "demo-choice", "demo-multiturn"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "demo-multiturn" in html and "The answer is 12." in html


# -- (b) retries and permanent failures -----------------------------------------------------------
def test_transient_failures_are_retried_and_permanent_ones_recorded(server, tmp_path):
    samples = [text_sample(f"q{i}", f"Please reply {i * 7}.", str(i * 7)) for i in range(5)]
    samples.append(text_sample("q5", "Please reply 35.", "999"))  # the model is "wrong" here
    samples.append(text_sample("poison", "Please reply 1 (poison).", "1"))
    samples.append(text_sample("overload", "Please reply 2 (overload).", "2"))
    path = write_samples(tmp_path / "retry.jsonl", samples)
    server.fail_matching(lambda body: "poison" in last_user_text(body), status=400)
    server.fail_matching(lambda body: "overload" in last_user_text(body), status=503, retry_after=0.05)
    server.fail_first(2, status=500)
    server.fail_first(1, status=429, retry_after=0)

    proc = evalkit_run(
        "--model", model_spec(server), "--tasks", jsonl_task(path), "--out", str(tmp_path / "runs"),
        "--retries", "3", "--concurrency", "2", "--no-cache",
    )  # fmt: skip
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path / "runs")

    # 6 good samples + 3 injected transient failures + poison once + overload 3 attempts
    statuses = [r.status for r in server.requests]
    assert len(statuses) == 13
    assert sorted(statuses) == [200] * 6 + [400] + [429] + [500] * 2 + [503] * 3
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "completed"
    assert manifest["last_session"]["retries"] == 3 + 2  # three injected + two for "overload"
    assert manifest["last_session"]["errors"] == 2

    responses = {r["sample_id"]: r["output"] for r in read_jsonl(run_dir / "responses.jsonl")}
    assert len(responses) == 8
    assert (
        responses["poison"]["error"]["kind"] == "http_400" and responses["poison"]["error"]["attempts"] == 1
    )
    assert (
        responses["overload"]["error"]["kind"] == "http_503"
        and responses["overload"]["error"]["attempts"] == 3
    )
    for failed in ("poison", "overload"):
        assert "text" not in responses[failed]  # never an empty string standing in for a failure
    assert all(responses[f"q{i}"]["text"] == f"The answer is {i * 7}." for i in range(6))

    scores = {s["sample_id"]: s["score"] for s in read_jsonl(run_dir / "scores.jsonl")}
    assert (
        scores["poison"]["error"]["kind"] == "model_error"
        and "http_400" in scores["poison"]["error"]["message"]
    )
    assert not scores["poison"].get("metrics")  # not scored as zero
    assert scores["q5"]["metrics"] == {"accuracy": 0.0}

    summary = read_json(run_dir / "summary.json")
    task = summary["tasks"]["jsonl-retry"]
    judge = task["judges"]["numeric"]
    assert (judge["n"], judge["n_scored"], judge["n_model_errors"]) == (8, 6, 2)
    assert judge["metrics"]["accuracy"]["value"] == pytest.approx(5 / 6)
    assert task["requests"]["errors_by_kind"] == {"http_400": 1, "http_503": 1}


# -- (c) kill and resume --------------------------------------------------------------------------
def test_killed_run_resumes_without_repeating_finished_requests(server, tmp_path):
    n = 40
    path = write_samples(
        tmp_path / "resume.jsonl", [text_sample(f"s{i:02d}", f"Please reply {i}.", str(i)) for i in range(n)]
    )
    server.delay = 0.15
    out = tmp_path / "runs"
    args = ["--model", model_spec(server), "--tasks", jsonl_task(path), "--out", str(out)]
    proc = subprocess.Popen(
        [*CLI, *args, "--concurrency", "2", "--no-cache"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            runs = [p for p in out.iterdir()] if out.exists() else []
            if runs and len(read_jsonl(runs[0] / "responses.jsonl")) >= 6:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    run_dir = only_run_dir(out)
    assert read_json(run_dir / "manifest.json")["status"] == "running"  # died without a word
    assert not (run_dir / "summary.json").exists()

    def asked(body: dict[str, Any]) -> str:
        return f"s{int(last_user_text(body).split()[-1].rstrip('.')):02d}"

    finished = {r["sample_id"] for r in read_jsonl(run_dir / "responses.jsonl") if "error" not in r["output"]}
    hits_before = server.hits
    assert 6 <= len(finished) < n

    resumed = evalkit_run("--resume", str(run_dir), "--concurrency", "4")
    assert_ok(resumed)
    sent_again = [asked(r.body) for r in server.requests[hits_before:]]
    assert not set(sent_again) & finished, "a finished request was sent again"
    assert sorted(sent_again) == sorted({f"s{i:02d}" for i in range(n)} - finished)  # each exactly once

    responses = read_jsonl(run_dir / "responses.jsonl")
    assert [r["sample_id"] for r in responses] == [f"s{i:02d}" for i in range(n)]
    assert all(r["output"]["text"] == f"The answer is {i}." for i, r in enumerate(responses))
    scores = read_jsonl(run_dir / "scores.jsonl")
    assert [s["sample_id"] for s in scores] == [f"s{i:02d}" for i in range(n)]
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "completed" and len(manifest["resumed"]) == 1
    summary = read_json(run_dir / "summary.json")
    assert metric(summary, "jsonl-resume") == 1.0
    assert summary["tasks"]["jsonl-resume"]["judges"]["numeric"]["n"] == n
    assert (run_dir / "report.html").is_file()


# -- (d) the response cache -----------------------------------------------------------------------
def test_second_run_with_the_cache_sends_no_requests(server, tmp_path):
    """With the model pinned (--model-revision), a second run is answered from the first's cache
    entries and its manifest says so (an unpinned model is asked again: tests/test_hardening.py)."""
    cache = tmp_path / "cache" / "responses.sqlite"
    args = ["--model", model_spec(server), "--tasks", "demo", "--limit", "2", "--cache-path", str(cache)]
    args += ["--model-revision", "loopback-v1"]
    assert_ok(evalkit_run(*args, "--out", str(tmp_path / "first")))
    first_hits = server.hits
    assert first_hits == 2 + 2 + 2 * 3

    assert_ok(evalkit_run(*args, "--out", str(tmp_path / "second")))
    assert server.hits == first_hits  # nothing new reached the server

    first, second = only_run_dir(tmp_path / "first"), only_run_dir(tmp_path / "second")
    responses = read_jsonl(second / "responses.jsonl")
    assert len(responses) == first_hits and all(r["cached"] for r in responses)
    assert [r["output"]["text"] for r in responses] == [
        r["output"]["text"] for r in read_jsonl(first / "responses.jsonl")
    ]
    manifest = read_json(second / "manifest.json")
    assert manifest["last_session"]["requests"] == 0 and manifest["last_session"]["cache_hits"] == first_hits
    assert manifest["answer_sources"] == {"fresh": 0, "cached_from": {first.name: first_hits}}
    assert read_json(first / "manifest.json")["answer_sources"] == {"fresh": first_hits, "cached_from": {}}
    one, two = read_json(first / "summary.json"), read_json(second / "summary.json")
    for task in one["tasks"]:
        assert one["tasks"][task]["judges"] == two["tasks"][task]["judges"]
        assert two["tasks"][task]["requests"]["n_cached"] == two["tasks"][task]["requests"]["n_requests"]


# -- (e) broken input audio -----------------------------------------------------------------------
def test_bad_input_audio_is_an_error_record_and_the_rest_is_scored(server, tmp_path):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "good.wav", (rng.standard_normal(8000) * 0.1).astype("float32"), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio at all")
    (tmp_path / "empty.wav").write_bytes(b"")

    def spoken(sample_id: str, clip: str, text: str, answer: str) -> dict[str, Any]:
        turn = {"role": "user", "audio": {"path": clip}, "text": text}
        return {"id": sample_id, "conversation": [turn], "reference": {"answer": answer}}

    path = write_samples(
        tmp_path / "clips.jsonl",
        [
            spoken("good", "good.wav", "What is said? Reply 3.", "3"),
            spoken("corrupt", "corrupt.wav", "Reply 4.", "4"),
            spoken("empty", "empty.wav", "Reply 5.", "5"),
            spoken("missing", "missing.wav", "Reply 6.", "6"),
            text_sample("text", "Reply 7.", "7"),
        ],
    )
    proc = evalkit_run(
        "--model", model_spec(server), "--tasks", jsonl_task(path), "--out", str(tmp_path / "runs")
    )
    assert_ok(proc)
    run_dir = only_run_dir(tmp_path / "runs")

    assert sorted(last_user_text(r.body) for r in server.requests) == ["Reply 7.", "What is said? Reply 3."]
    responses = {r["sample_id"]: r["output"] for r in read_jsonl(run_dir / "responses.jsonl")}
    for name in ("corrupt", "empty", "missing"):
        error = responses[name]["error"]
        assert error["kind"] == "input_audio", error
        assert str(tmp_path / f"{name}.wav") in error["message"]
        assert "text" not in responses[name]
    assert "cannot decode" in responses["corrupt"]["error"]["message"]
    assert "empty" in responses["empty"]["error"]["message"]
    assert "not found" in responses["missing"]["error"]["message"]
    assert not (run_dir / "errors.log").exists()  # recorded as data, not as an internal error

    scores = {s["sample_id"]: s["score"] for s in read_jsonl(run_dir / "scores.jsonl")}
    assert scores["good"]["metrics"] == scores["text"]["metrics"] == {"accuracy": 1.0}
    assert all(scores[n]["error"]["kind"] == "model_error" for n in ("corrupt", "empty", "missing"))
    summary = read_json(run_dir / "summary.json")["tasks"]["jsonl-clips"]
    assert summary["judges"]["numeric"]["n_model_errors"] == 3
    assert summary["judges"]["numeric"]["metrics"]["accuracy"]["value"] == 1.0
    assert summary["requests"]["errors_by_kind"] == {"input_audio": 3}


# -- (f) user errors: one line, exit 2 ------------------------------------------------------------
def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unreachable_server_is_a_one_line_error(tmp_path):
    path = write_samples(tmp_path / "one.jsonl", [text_sample("a", "Reply 1.", "1")])
    port = closed_port()
    proc = evalkit_run(
        "--model",
        f"openai:m@http://127.0.0.1:{port}/v1",
        "--tasks",
        jsonl_task(path),
        "--out",
        str(tmp_path / "runs"),
    )
    assert_one_line_error(proc, "cannot reach model server", f"127.0.0.1:{port}")
    assert not (tmp_path / "runs").exists()  # no half-made run directory


def test_unserved_model_name_is_a_one_line_error(server, tmp_path):
    path = write_samples(tmp_path / "one.jsonl", [text_sample("a", "Reply 1.", "1")])
    proc = evalkit_run(
        "--model",
        f"openai:gpt-x@{server.base_url}",
        "--tasks",
        jsonl_task(path),
        "--out",
        str(tmp_path / "r"),
    )
    assert_one_line_error(proc, "'gpt-x' is not served", "loopback")
    assert server.hits == 0


def test_unknown_task_is_a_one_line_error(server, tmp_path):
    proc = evalkit_run(
        "--model", model_spec(server), "--tasks", "no-such-task", "--out", str(tmp_path / "runs")
    )
    assert_one_line_error(proc, "unknown task 'no-such-task'", "demo")
    assert server.hits == 0


def test_resume_of_a_folder_that_is_no_run_is_a_one_line_error(tmp_path):
    proc = evalkit_run("--resume", str(tmp_path))
    assert_one_line_error(proc, "not a run directory")


# -- secrets --------------------------------------------------------------------------------------
def test_api_key_never_reaches_the_run_directory_or_the_cache(server, tmp_path):
    """The key is read from the environment variable named by --api-key-env and sent to the
    server; no file the run writes (run directory, response cache) may contain it."""
    secret = "sk-evalkit-test-5f1c0a9d7e"
    cache = tmp_path / "cache"
    env = {**os.environ, "EVALKIT_TEST_KEY": secret}
    proc = subprocess.run(
        [
            *CLI,
            "--model",
            model_spec(server),
            "--tasks",
            "demo-arithmetic",
            "--limit",
            "2",
            "--api-key-env",
            "EVALKIT_TEST_KEY",
            "--cache-path",
            str(cache / "responses.sqlite"),
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert_ok(proc)
    assert server.hits == 2
    assert {r.authorization for r in server.requests} == {f"Bearer {secret}"}  # the key did travel
    assert secret not in proc.stdout + proc.stderr
    written = [p for root in (tmp_path / "runs", cache) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any(p.suffix == ".sqlite" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    manifest = read_json(only_run_dir(tmp_path / "runs") / "manifest.json")
    assert manifest["config"]["model_options"]["api_key_env"] == "EVALKIT_TEST_KEY"  # the name, not the key
