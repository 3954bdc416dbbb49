"""Several OpenAI-compatible endpoints behind one model spec (``--base-url`` repeated).

Everything runs against real loopback servers (``evalkit.testing.openai_server``): in-process
threads where a test only counts hits, separate processes where a test kills one mid-run (SIGKILL,
as a crashed GPU node). The servers answer deterministically ("The answer is N." for the last
number in the question), so a pooled run must produce exactly the scores of a one-server run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CLI, assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.errors import ModelError, SpecError
from evalkit.models.base import load_model
from evalkit.models.replica_pool import ReplicaPool
from evalkit.records import ChatRequest, Message, TextPart
from evalkit.runner import RunConfig, evaluate
from evalkit.testing.openai_server import OpenAIServer, last_user_text, start_subprocess

pytest.importorskip("aiohttp")


# -- helpers ----------------------------------------------------------------------------------------
def write_task(path: Path, n: int) -> str:
    """``n`` one-turn samples; every fifth reference is deliberately wrong, so the scores file
    holds both verdicts and a pooled run cannot match a plain one by accident."""
    lines = []
    for i in range(n):
        answer = str(i * 3) if i % 5 else "-1"
        sample = {
            "id": f"q{i:03d}",
            "task": "mine",
            "conversation": [{"role": "user", "text": f"Question {i}: please reply {i * 3}."}],
            "reference": {"answer": answer},
        }
        lines.append(json.dumps(sample) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return f"jsonl:path={path},judges=numeric"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def stats_hits(url: str) -> int:
    """Chat requests a server in another process received (its ``/_loopback/stats``)."""
    import urllib.request

    with urllib.request.urlopen(url.removesuffix("/v1") + "/_loopback/stats", timeout=5) as response:
        return json.loads(response.read())["hits"]


def run_config(tmp_path: Path, task: str, urls: list[str], **kw: Any) -> RunConfig:
    options: dict[str, Any] = {"api_key_env": "OPENAI_API_KEY"}
    options["base_url"] = urls if len(urls) > 1 else urls[0]
    return RunConfig(
        model="openai:loopback",
        tasks=task,
        out_dir=str(tmp_path / "runs"),
        use_cache=False,
        model_options=options,
        **kw,
    )


def comparable_scores(run_dir: Path) -> list[dict[str, Any]]:
    """scores.jsonl as a list of lines. A score line holds the task, sample id and index, the
    sample's meta and the judge's verdict (metrics, extracted answer, explanation); it carries no
    timing, so two runs with the same answers have identical lines (compared whole)."""
    return read_jsonl(run_dir / "scores.jsonl")


@pytest.fixture
def three_servers() -> Iterator[list[OpenAIServer]]:
    servers = [OpenAIServer(delay=0.05) for _ in range(3)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def server_processes() -> Iterator[list[tuple[subprocess.Popen, str]]]:
    procs = [start_subprocess(delay=0.1) for _ in range(3)]
    yield procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


# -- construction and identity -----------------------------------------------------------------------
def test_several_base_urls_make_a_pool_with_a_single_endpoints_cache_identity() -> None:
    urls = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1/", "http://127.0.0.1:3/v1"]
    pool = load_model("openai:m", base_url=urls, api_key_env="X")
    single = load_model("openai:m", base_url=urls[0], api_key_env="X")
    assert isinstance(pool, ReplicaPool)
    assert [r.name for r in pool.replicas] == [u.rstrip("/") for u in urls]
    assert pool.spec == single.spec
    assert pool.cache_identity == single.cache_identity
    assert load_model("openai:m", base_url=urls[:1]).spec == single.spec  # a list of one: no pool
    manifest_entry = pool.describe()
    assert [r["base_url"] for r in manifest_entry["replicas"]] == [u.rstrip("/") for u in urls]


def test_model_cards_take_several_base_urls_too() -> None:
    urls = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    pool = load_model("step-audio-r1.5", base_url=urls)
    single = load_model("step-audio-r1.5", base_url=urls[0])
    assert isinstance(pool, ReplicaPool) and len(pool.replicas) == 2
    assert pool.cache_identity == single.cache_identity
    assert pool.describe()["card"]["name"] == "step-audio-r1.5"
    assert pool.capabilities == single.capabilities


@pytest.mark.parametrize(
    ("spec", "urls", "fragment"),
    [
        ("openai:m@http://127.0.0.1:9/v1", ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], "only with"),
        ("openai:m", ["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1/"], "more than once"),
        ("step-audio-r1.5:served=x@http://h:1/v1", ["http://h:2/v1", "http://h:3/v1"], "only with"),
    ],
)
def test_conflicting_base_urls_are_spec_errors(spec: str, urls: list[str], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        load_model(spec, base_url=urls)


# -- balancing -----------------------------------------------------------------------------------------
def test_load_spreads_evenly_over_three_servers(three_servers, tmp_path) -> None:
    task = write_task(tmp_path / "even.jsonl", 60)
    urls = [s.base_url for s in three_servers]
    store = evaluate(run_config(tmp_path, task, urls, concurrency=6), show_progress=False)
    hits = [s.hits for s in three_servers]
    assert sum(hits) == 60
    assert all(15 <= h <= 25 for h in hits), hits
    stats = read_json(store.root / "manifest.json")["last_session"]["replicas"]
    assert [s["requests"] for s in stats] == hits
    assert all(s["max_in_flight"] <= 3 for s in stats), stats  # least-outstanding: 6 spread over 3


def test_a_slow_server_gets_fewer_requests(three_servers, tmp_path) -> None:
    fast_a, fast_b, slow = three_servers
    fast_a.delay = fast_b.delay = 0.02
    slow.delay = 0.4
    task = write_task(tmp_path / "slow.jsonl", 60)
    evaluate(
        run_config(tmp_path, task, [s.base_url for s in three_servers], concurrency=6), show_progress=False
    )
    assert fast_a.hits + fast_b.hits + slow.hits == 60
    assert slow.hits * 3 < min(fast_a.hits, fast_b.hits), (fast_a.hits, fast_b.hits, slow.hits)


# -- failures ------------------------------------------------------------------------------------------
def test_transient_failures_fail_over_without_spending_the_retry_budget(three_servers, tmp_path) -> None:
    """One server answers 503 to everything; with a single attempt per request (``max_attempts=1``,
    no runner retry at all) every item still succeeds on the other two."""
    broken = three_servers[0]
    broken.fail_first(1000, status=503)
    task = write_task(tmp_path / "failover.jsonl", 30)
    urls = [s.base_url for s in three_servers]
    store = evaluate(run_config(tmp_path, task, urls, concurrency=4, max_attempts=1), show_progress=False)
    responses = read_jsonl(store.root / "responses.jsonl")
    assert len(responses) == 30 and all("error" not in r["output"] for r in responses)
    stats = read_json(store.root / "manifest.json")["last_session"]["replicas"]
    assert stats[0]["failures"] == broken.hits >= 3  # it went down after 3 in a row
    assert stats[0]["marked_down"] >= 1 and stats[0]["ok"] == 0
    # marked down after three failures, so it saw far fewer than its share of 30
    assert broken.hits < 10


def test_permanent_errors_are_not_failed_over(three_servers, tmp_path) -> None:
    for server in three_servers:
        server.fail_matching(lambda body: "Question 7:" in last_user_text(body), status=400)
    task = write_task(tmp_path / "poison.jsonl", 12)
    store = evaluate(run_config(tmp_path, task, [s.base_url for s in three_servers]), show_progress=False)
    poisoned = sum(s.count(lambda body: "Question 7:" in last_user_text(body)) for s in three_servers)
    assert poisoned == 1  # sent once, answered 400, recorded: another server would say the same
    responses = {r["sample_id"]: r["output"] for r in read_jsonl(store.root / "responses.jsonl")}
    assert responses["q007"]["error"]["kind"] == "http_400"
    assert sum("error" in o for o in responses.values()) == 1


def test_an_endpoint_killed_mid_run_loses_no_item(server_processes, tmp_path) -> None:
    """Three server processes, CLI run with ``--base-url`` x3 and ``--retries 1``; one server is
    SIGKILLed once a quarter of the answers are in. Every sample must still be answered, and the
    scores must equal those of a plain run against one server."""
    n = 80
    task = write_task(tmp_path / "kill.jsonl", n)
    urls = [url for _, url in server_processes]
    args = [
        "--model",
        "openai:loopback",
        "--tasks",
        task,
        "--no-cache",
        "--concurrency",
        "6",
        "--retries",
        "1",
    ]
    url_args = [a for url in urls for a in ("--base-url", url)]
    out = tmp_path / "pooled"
    run = subprocess.Popen(
        [*CLI, *args, *url_args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim, victim_url = server_processes[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        if dirs and len(read_jsonl(dirs[0] / "responses.jsonl")) >= n // 4:
            break
        time.sleep(0.02)
    hits_before_kill = stats_hits(victim_url)
    victim.kill()
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr[-3000:]
    run_dir = only_run_dir(out)
    assert hits_before_kill > 0
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == n
    assert all("error" not in r["output"] and r["output"]["text"] for r in responses)
    manifest = read_json(run_dir / "manifest.json")
    stats = {s["name"]: s for s in manifest["last_session"]["replicas"]}
    assert stats[victim_url]["failures"] >= 1 and stats[victim_url]["marked_down"] >= 1
    assert manifest["last_session"]["retries"] == 0 and manifest["last_session"]["errors"] == 0
    assert sum(s["ok"] for s in stats.values()) == n

    plain = evaluate(run_config(tmp_path / "plain", task, urls[:1], concurrency=6), show_progress=False)
    assert comparable_scores(run_dir) == comparable_scores(plain.root)


def test_all_endpoints_down_mid_run_gives_recorded_errors(server_processes, tmp_path) -> None:
    n = 40
    task = write_task(tmp_path / "down.jsonl", n)
    url_args = [a for _, url in server_processes for a in ("--base-url", url)]
    out = tmp_path / "runs"
    cmd = [*CLI, "--model", "openai:loopback", "--tasks", task, "--no-cache", "--concurrency", "3",
           "--retries", "2", *url_args, "--out", str(out)]  # fmt: skip
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        if dirs and len(read_jsonl(dirs[0] / "responses.jsonl")) >= 6:
            break
        time.sleep(0.02)
    for proc, _ in server_processes:
        proc.kill()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr[-3000:]  # a finished run with errors in it, not a crash
    run_dir = only_run_dir(out)
    responses = read_jsonl(run_dir / "responses.jsonl")
    assert len(responses) == n
    failed = [r["output"]["error"] for r in responses if "error" in r["output"]]
    assert 0 < len(failed) < n
    assert {e["kind"] for e in failed} == {"connection"}
    assert all(e["attempts"] <= 2 for e in failed)
    summary = read_json(run_dir / "summary.json")
    judge = next(iter(summary["tasks"].values()))["judges"]["numeric"]
    assert judge["n_model_errors"] == len(failed)
    assert read_json(run_dir / "manifest.json")["status"] == "completed"


def test_all_endpoints_down_at_the_start_is_a_one_line_error(tmp_path) -> None:
    task = write_task(tmp_path / "t.jsonl", 3)
    proc = evalkit_run(
        "--model", "openai:loopback", "--tasks", task, "--base-url", closed_port_url(),
        "--base-url", closed_port_url(), "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: none of the 2 replicas is usable")


def test_check_passes_with_one_endpoint_up_and_logs_the_others(caplog) -> None:
    async def scenario(server: OpenAIServer) -> list[str]:
        dead = closed_port_url()
        pool = load_model("openai:loopback", base_url=[dead, server.base_url])
        try:
            with caplog.at_level(logging.WARNING, logger="evalkit.replicas"):
                await pool.check()
            request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="reply 5")])])
            outputs = [await pool.generate(request) for _ in range(4)]
        finally:
            await pool.aclose()
        assert isinstance(pool, ReplicaPool)
        assert pool.replicas[0].requests == 0  # down at the start, still cooling down
        return [o.text or "" for o in outputs]

    with OpenAIServer() as server:
        texts = asyncio.run(scenario(server))
        assert server.hits == 4
    assert texts == ["The answer is 5."] * 4
    assert any("down at the start" in r.getMessage() for r in caplog.records)


def test_a_recovered_endpoint_is_probed_and_rejoins() -> None:
    """A server that is down at first comes back; after the cool-down one probe request reaches
    it and, on success, it takes its share again."""

    async def scenario() -> tuple[int, int]:
        with OpenAIServer() as healthy:
            late = OpenAIServer()
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                late.port = sock.getsockname()[1]
            late_url = f"http://127.0.0.1:{late.port}/v1"
            pool = load_model("openai:loopback", base_url=[late_url, healthy.base_url])
            assert isinstance(pool, ReplicaPool)
            pool.base_cooldown_s = 0.2
            request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="reply 1")])])
            try:
                await pool.generate(request)  # fails over from the dead one
                assert pool.replicas[0].failures == 1 and pool.replicas[0].down_until is not None
                late.start()
                try:
                    await asyncio.sleep(0.3)
                    await asyncio.gather(*(pool.generate(request) for _ in range(10)))
                    return late.hits, healthy.hits
                finally:
                    late.stop()
            finally:
                await pool.aclose()

    late_hits, healthy_hits = asyncio.run(scenario())
    assert late_hits >= 1 and late_hits + healthy_hits == 11  # nothing lost, nothing twice


def test_with_every_replica_down_each_call_is_still_a_real_attempt() -> None:
    """No hidden waiting: when all replicas are cooling down, a call tries the one due back first
    (and fails like a single dead endpoint), so the runner's retry policy alone sets the pace."""

    async def scenario() -> tuple[list[ModelError], list[int]]:
        pool = load_model("openai:m", base_url=[closed_port_url(), closed_port_url()])
        assert isinstance(pool, ReplicaPool)
        request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="hi")])])
        errors = []
        try:
            for _ in range(3):
                with pytest.raises(ModelError) as caught:
                    await pool.generate(request)
                errors.append(caught.value)
        finally:
            await pool.aclose()
        return errors, [r.requests for r in pool.replicas]

    errors, requests = asyncio.run(scenario())
    assert [e.kind for e in errors] == ["connection"] * 3 and all(e.transient for e in errors)
    assert sum(requests) == 2 + 1 + 1  # first call tries both; later ones the one due back first


def test_cli_base_url_twice_reaches_both(tmp_path) -> None:
    with OpenAIServer() as a, OpenAIServer() as b:
        task = write_task(tmp_path / "two.jsonl", 20)
        proc = evalkit_run(
            "--model", "openai:loopback", "--tasks", task, "--base-url", a.base_url, "--base-url", b.base_url,
            "--concurrency", "4", "--no-cache", "--out", str(tmp_path / "runs"),
        )  # fmt: skip
        assert_ok(proc)
        assert a.hits > 0 and b.hits > 0 and a.hits + b.hits == 20
    manifest = read_json(only_run_dir(tmp_path / "runs") / "manifest.json")
    assert manifest["config"]["model_options"]["base_url"] == [a.base_url, b.base_url]
    assert [r["base_url"] for r in manifest["model"]["replicas"]] == [a.base_url, b.base_url]
    assert manifest["model"]["spec"] == f"openai:loopback@{a.base_url}"


def test_unknown_executor_and_stray_replicas_are_one_line_errors(tmp_path) -> None:
    task = write_task(tmp_path / "t.jsonl", 1)
    for extra, fragment in (
        (["--executor", "dask"], "unknown executor"),
        (["--replicas", "2"], "--replicas"),
    ):
        proc = evalkit_run("--model", "openai:m@http://127.0.0.1:9/v1", "--tasks", task, *extra)
        assert proc.returncode == 2, proc.stderr
        assert fragment in proc.stderr.strip().splitlines()[-1]
