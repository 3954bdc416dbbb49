"""Safety guarantees of a run, each shown through the CLI against real loopback servers (issue 12):

- the response cache never serves one model's answers for another behind the same URL and name;
- one writer per run directory: a resume of a live run is refused naming the holder's pid, and
  SIGTERM stops a run like Ctrl-C (``interrupted``, resumable);
- deadlines are wall-clock: a server trickling keep-alive bytes forever times out within
  ``--timeout`` + 1 s, and ``--request-budget`` bounds a request across its retries;
- one line and exit 2 for a full disk (status ``failed``, resumable once space is back),
  credentials in a URL (redacted everywhere), and options a ``--resume`` cannot honour;
- the API key's value never reaches a stored file, even when the server echoes it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CLI, assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.manifest import redact_command, scrub_output
from evalkit.models.base import load_model
from evalkit.records import ChatRequest, ErrorInfo, Message, ModelOutput, TextPart
from evalkit.retry import RetryPolicy, call_with_retries
from evalkit.store import JsonlAppender
from evalkit.testing.openai_server import OpenAIServer, Reply

pytest.importorskip("aiohttp")


def write_task(path: Path, n: int) -> str:
    """``n`` one-turn text samples whose right answer is ``i * 3`` (the loopback echoes it)."""
    rows = [
        {
            "id": f"q{i:03d}",
            "task": "x",
            "conversation": [{"role": "user", "text": f"Say {i * 3}."}],
            "reference": {"answer": str(i * 3)},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f"jsonl:path={path},judges=numeric"


def spec(server: OpenAIServer) -> str:
    return f"openai:{server.model}@{server.base_url}"


def accuracy(run_dir: Path) -> float:
    summary = read_json(run_dir / "summary.json")
    [task] = summary["tasks"].values()
    return task["judges"]["numeric"]["metrics"]["accuracy"]["value"]


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


# -- the cache's identity ----------------------------------------------------------------------------
def wrong(body: dict[str, Any]) -> Reply:
    return Reply("The answer is -1.")


def test_another_model_behind_the_same_url_and_name_is_asked_again(tmp_path):
    """Two servers on one port with one served name, answering differently: the second is asked
    every request (its own accuracy, 0.0), never served the first's cached 1.0; pinning the model
    with --model-revision is what lets a rerun reuse the cache, and the manifest says from where."""
    task, cache = write_task(tmp_path / "s.jsonl", 6), str(tmp_path / "cache.sqlite")
    with OpenAIServer() as first:
        port, model = first.port, spec(first)
        assert_ok(
            evalkit_run(
                "--model", model, "--tasks", task, "--cache-path", cache, "--out", str(tmp_path / "a")
            )
        )
        assert first.hits == 6
    with OpenAIServer(port=port, answer=wrong) as second:
        assert spec(second) == model
        assert_ok(
            evalkit_run(
                "--model", model, "--tasks", task, "--cache-path", cache, "--out", str(tmp_path / "b")
            )
        )
        assert second.hits == 6
        pinned = ["--model", model, "--tasks", task, "--cache-path", cache, "--model-revision", "wrong-v1"]
        assert_ok(evalkit_run(*pinned, "--out", str(tmp_path / "c")))
        assert_ok(evalkit_run(*pinned, "--out", str(tmp_path / "d")))
        assert second.hits == 12  # the pinned rerun (d) was served by c's entries
    a, b, c, d = (only_run_dir(tmp_path / x) for x in "abcd")
    assert accuracy(a) == 1.0 and accuracy(b) == 0.0 and accuracy(d) == 0.0
    assert read_json(b / "manifest.json")["answer_sources"] == {"fresh": 6, "cached_from": {}}
    assert read_json(d / "manifest.json")["answer_sources"] == {"fresh": 0, "cached_from": {c.name: 6}}
    assert {r["cached_from"] for r in read_jsonl(d / "responses.jsonl")} == {c.name}

    info = CliRunner().invoke(app, ["cache", "info", "--cache-path", cache])
    assert info.exit_code == 0 and "one run" in info.stdout and "pinned" in info.stdout, info.output
    cleared = CliRunner().invoke(app, ["cache", "clear", "--cache-path", cache, "--yes"])
    assert cleared.exit_code == 0 and "cleared 18 entries" in cleared.stdout
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


def test_two_runs_named_alike_in_two_folders_never_share_a_cache_scope(tmp_path, monkeypatch):
    """A run's name is its start second, model and tasks: two runs of one config started in the
    same second in two ``--out`` folders get the same name. Their unpinned model's answers must
    still be their own (the manifest's ``run_uid`` makes the scope): the second run asks every
    request of a server answering differently, and the cache keeps both runs' answers."""
    import evalkit.store as store_module
    from evalkit.runner import RunConfig, evaluate

    monkeypatch.setattr(store_module.time, "strftime", lambda fmt: "20261201-120000")  # one second
    task, cache = write_task(tmp_path / "s.jsonl", 6), str(tmp_path / "cache.sqlite")
    stores = []
    with OpenAIServer() as first:
        port, model = first.port, spec(first)
        config = RunConfig(model=model, tasks=task, out_dir=str(tmp_path / "a"), cache_path=cache)
        stores.append(evaluate(config, argv=["test"], show_progress=False))
    with OpenAIServer(port=port, answer=wrong) as second:
        config = RunConfig(model=model, tasks=task, out_dir=str(tmp_path / "b"), cache_path=cache)
        stores.append(evaluate(config, argv=["test"], show_progress=False))
        assert second.hits == 6  # asked, never served the first run's answers
    a, b = (s.read_manifest() for s in stores)
    assert a["run_id"] == b["run_id"] and a["run_uid"] != b["run_uid"]
    assert accuracy(stores[0].root) == 1.0 and accuracy(stores[1].root) == 0.0
    assert b["answer_sources"] == {"fresh": 6, "cached_from": {}}
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 12


# -- one writer per run directory; SIGTERM -----------------------------------------------------------
def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_resume_of_a_live_run_is_refused_and_sigterm_stops_it_resumably(tmp_path):
    task = write_task(tmp_path / "s.jsonl", 40)
    out = tmp_path / "runs"
    with OpenAIServer(delay=0.3) as server:  # 40 x 0.3 s: alive long after the checks
        live = subprocess.Popen(
            [
                *CLI,
                "--model",
                spec(server),
                "--tasks",
                task,
                "--out",
                str(out),
                "--concurrency",
                "1",
                "--no-cache",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: out.is_dir() and any(out.iterdir()) and server.hits >= 2)
        run_dir = only_run_dir(out)
        refused = evalkit_run("--resume", str(run_dir))
        assert refused.returncode == 2
        line = one_error_line(refused.stderr)
        assert f"pid {live.pid}" in line and "in use" in line

        live.send_signal(signal.SIGTERM)
        _, stderr = live.communicate(timeout=30)
        assert live.returncode == 143, stderr
        assert "terminated" in stderr and "Traceback" not in stderr
        assert f"continue with: evalkit run --resume {run_dir}" in stderr  # the real command, its path
        manifest = read_json(run_dir / "manifest.json")
        assert manifest["status"] == "interrupted"
        done = len(read_jsonl(run_dir / "responses.jsonl"))
        assert 0 < done < 40

        server.delay = 0.0
        assert_ok(evalkit_run("--resume", str(run_dir)))
        assert server.hits <= 40 + 1  # at most the one request in flight at SIGTERM was sent twice
    assert read_json(run_dir / "manifest.json")["status"] == "completed"
    assert sorted(r["sample_id"] for r in read_jsonl(run_dir / "responses.jsonl")) == [
        f"q{i:03d}" for i in range(40)
    ]
    assert not (run_dir / ".lock.owner").exists()


# -- deadlines -----------------------------------------------------------------------------------------
def ask(adapter, policy: RetryPolicy) -> tuple[ModelOutput, float]:
    request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="Say 3.")])])

    async def go() -> ModelOutput:
        try:
            return await call_with_retries(lambda: adapter.generate(request), policy)
        finally:
            await adapter.aclose()

    started = time.monotonic()
    output = asyncio.run(go())
    return output, time.monotonic() - started


@pytest.mark.parametrize("stream", [True, False])
def test_a_trickling_server_times_out_within_the_deadline(stream):
    """A keep-alive byte every 0.3 s forever: an idle timeout never fires, the deadline does."""
    with OpenAIServer(trickle=0.3) as server:
        adapter = load_model(spec(server), stream=stream)
        output, elapsed = ask(adapter, RetryPolicy(max_attempts=1, attempt_timeout=1.0))
    assert output.error is not None and output.error.kind == "timeout", output
    assert "--timeout" in output.error.message
    assert 1.0 <= elapsed < 2.0


def test_the_request_budget_bounds_all_retries_together():
    with OpenAIServer(trickle=0.3) as server:
        adapter = load_model(spec(server))
        policy = RetryPolicy(max_attempts=50, attempt_timeout=0.5, budget=1.5, base_delay=0.05)
        output, elapsed = ask(adapter, policy)
        attempts = server.hits
    assert output.error is not None and output.error.kind == "timeout"
    assert (
        "--request-budget 1.5 s spent" in output.error.message or "(--request-budget)" in output.error.message
    )
    assert elapsed < 1.5 + 1.0 and 2 <= attempts < 50


def test_timeout_through_the_cli_and_the_card_default(tmp_path):
    task = write_task(tmp_path / "s.jsonl", 1)
    with OpenAIServer(trickle=0.3) as server:
        started = time.monotonic()
        proc = evalkit_run(
            "--model",
            spec(server),
            "--tasks",
            task,
            "--out",
            str(tmp_path),
            "--timeout",
            "1",
            "--retries",
            "1",
            "--no-cache",
        )
        elapsed = time.monotonic() - started
    assert_ok(proc)
    [record] = read_jsonl(only_run_dir(tmp_path) / "responses.jsonl")
    assert record["output"]["error"]["kind"] == "timeout" and "1 s" in record["output"]["error"]["message"]
    assert elapsed < 30  # the process itself (imports included) ended; before, it never did

    from evalkit.models.model_cards import CardAdapter, get_card

    card = get_card("generic").model_copy(update={"timeout": 1800.0})
    assert CardAdapter(card, "m", "http://127.0.0.1:1/v1").request_timeout == 1800.0
    assert CardAdapter(card, "m", "http://127.0.0.1:1/v1", timeout=5).request_timeout == 5.0


# -- one line, exit 2 ---------------------------------------------------------------------------------
def test_a_full_disk_fails_the_run_in_one_line_and_resume_finishes_it(tmp_path, monkeypatch):
    task = write_task(tmp_path / "s.jsonl", 10)
    real_append = JsonlAppender.append
    calls = {"n": 0}

    def append_until_full(self, record, fields=None):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, record, fields)

    with OpenAIServer() as server:
        args = [
            "run",
            "--no-progress",
            "--model",
            spec(server),
            "--tasks",
            task,
            "--out",
            str(tmp_path / "r"),
            "--concurrency",
            "1",
            "--no-cache",
        ]
        monkeypatch.setattr(JsonlAppender, "append", append_until_full)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.stderr)
        assert "no space left" in line and "--resume" in line
        run_dir = only_run_dir(tmp_path / "r")
        assert read_json(run_dir / "manifest.json")["status"] == "failed"
        streams = ("samples.jsonl", "responses.jsonl", "scores.jsonl")  # every append counts
        kept = [line for name in streams for line in read_jsonl(run_dir / name)]
        assert len(kept) == 4

        monkeypatch.setattr(JsonlAppender, "append", real_append)  # space is back
        resumed = CliRunner().invoke(app, ["run", "--no-progress", "--resume", str(run_dir)])
        assert resumed.exit_code == 0, resumed.output
    assert read_json(run_dir / "manifest.json")["status"] == "completed"
    assert len(read_jsonl(run_dir / "scores.jsonl")) == 10 and accuracy(run_dir) == 1.0
    samples = [line["sample"]["id"] for line in read_jsonl(run_dir / "samples.jsonl")]
    assert samples == sorted(set(samples)) and len(samples) == 10  # one line per sample, in order


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "openai:m@http://alice:s3cretpass@127.0.0.1:9/v1"],
        ["--model", "generic", "--base-url", "http://alice:s3cretpass@127.0.0.1:9/v1"],
        ["--model", "openai:m", "--base-url", "https://alice:s3cretpass@127.0.0.1:9/v1"],
    ],
)
def test_credentials_in_a_url_are_one_redacted_line(tmp_path, args):
    proc = evalkit_run(*args, "--tasks", write_task(tmp_path / "s.jsonl", 1), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "credentials" in line and "***@127.0.0.1" in line
    assert "s3cretpass" not in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists()
    assert "s3cretpass" not in redact_command(
        ["evalkit", "run", "--base-url", "http://alice:s3cretpass@h/v1"]
    )


def test_options_a_resume_cannot_honour_are_refused(tmp_path):
    for extra in (["--model", "openai:other@http://127.0.0.1:9/v1"], ["--limit", "3"], ["--timeout", "5"]):
        proc = evalkit_run("--resume", str(tmp_path), *extra)
        assert proc.returncode == 2
        line = one_error_line(proc.stderr)
        assert extra[0] in line and "--resume" in line
    unknown = evalkit_run("--resume", str(tmp_path), "--no-such-option")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


# -- secrets ------------------------------------------------------------------------------------------
KEY = "sk-loopback-0123456789abcdef"


def test_an_echoed_api_key_is_scrubbed_from_every_stored_file(tmp_path):
    def echo_key(body: dict[str, Any]) -> Reply:
        return Reply(f"The answer is 0. (your key is {KEY})", reasoning=f"key={KEY}")

    cache = tmp_path / "cache.sqlite"
    with OpenAIServer(answer=echo_key, think="field") as server:
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        proc = subprocess.run(
            [
                *CLI,
                "--model",
                spec(server),
                "--tasks",
                write_task(tmp_path / "s.jsonl", 1),
                "--out",
                str(tmp_path / "r"),
                "--cache-path",
                str(cache),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert_ok(proc)
        assert server.requests[0].authorization == f"Bearer {KEY}"  # it did travel, in the header only
    run_dir = only_run_dir(tmp_path / "r")
    [record] = read_jsonl(run_dir / "responses.jsonl")
    assert record["output"]["text"] == "The answer is 0. (your key is ***)"
    stored = [p for p in [*run_dir.rglob("*"), *tmp_path.glob("cache.sqlite*")] if p.is_file()]
    assert stored and all(KEY.encode() not in p.read_bytes() for p in stored)
    assert KEY not in proc.stdout + proc.stderr


def test_scrub_output_touches_only_outputs_that_hold_a_secret():
    clean = ModelOutput(text="fine")
    assert scrub_output(clean, [KEY]) is clean
    dirty = ModelOutput(error=ErrorInfo(kind="http_401", message=f"bad key {KEY}"))
    assert scrub_output(dirty, [KEY]).error.message == "bad key ***"
