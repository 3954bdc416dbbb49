"""The model-call service (``evalkit.service``): every call to any model, the model under test
(``target``) or a judge model (``judge``), goes through one path with the response cache and its
scope rules, one concurrency bound per endpoint shared by every role, usage per role, and the call
recorded in the run directory by role. Everything runs against the loopback OpenAI-compatible
server through the real ``openai:`` adapter; the server itself measures what was in flight.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from evalkit.cache import ResponseCache
from evalkit.judges.emotion import EmotionLLMJudge
from evalkit.judges.model_judge import ask_until_parsed
from evalkit.judges.rubric import AMCRubricJudge
from evalkit.models.base import load_model
from evalkit.records import CallRecord, ChatRequest, Message, ModelOutput, Sample, TextPart, Turn
from evalkit.runner import RunConfig, evaluate
from evalkit.service import CallResult, ModelService, ServiceSettings
from evalkit.store import read_jsonl
from evalkit.testing.openai_server import OpenAIServer

pytest.importorskip("aiohttp")


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=[TextPart(text=text)])])


def calls_of(run_dir: Path, role: str = "judge") -> list[CallRecord]:
    return read_jsonl(run_dir / "calls" / f"{role}.jsonl", CallRecord)


# -- 1. the service on its own ---------------------------------------------------------------------
def test_cache_scope_usage_and_call_log_by_role(tmp_path: Path) -> None:
    """An unpinned judge model's answers serve its own run (a resume) and no other; a pinned one's
    serve every run. Each call is one line of calls/judge.jsonl; usage is counted per role."""
    cache_file = tmp_path / "cache.sqlite"

    async def session(run_id: str, revision: str | None, texts: list[str]) -> list[CallResult]:
        cache = ResponseCache(cache_file)
        service = ModelService(cache=cache, run_id=run_id, run_dir=run_dir)
        judge = service.resolve("judge", spec, revision=revision)
        assert service.resolve("judge", spec, revision=revision) is judge  # once per run
        try:
            return [
                await service.call(judge, ask(t), task="t", sample_id=f"s{i}", caller="j")
                for i, t in enumerate(texts)
            ]
        finally:
            usage.append(service.usage())
            await service.aclose()
            cache.close()

    usage: list[dict[str, Any]] = []
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with OpenAIServer(model="judge") as server:
        spec = f"openai:judge@{server.base_url}"
        first = asyncio.run(session("run-1", None, ["1", "2"]))
        assert [r.cached for r in first] == [False, False] and server.hits == 2
        assert first[0].output.text == "The answer is 1."
        resumed = asyncio.run(session("run-1", None, ["1", "2", "3"]))  # a resume: same run id
        assert [r.cached_from for r in resumed] == ["run-1", "run-1", None] and server.hits == 3
        other = asyncio.run(session("run-2", None, ["1"]))  # unpinned: another run asks again
        assert not other[0].cached and server.hits == 4
        pinned = asyncio.run(session("run-3", "v1", ["1"]))
        again = asyncio.run(session("run-4", "v1", ["1"]))  # pinned: any later run reuses it
        assert not pinned[0].cached and again[0].cached_from == "run-3" and server.hits == 5

    assert usage[0]["judge"]["requests"] == 2 and usage[0]["judge"]["cache_hits"] == 0
    resumed_usage = usage[1]["judge"]
    assert (resumed_usage["requests"], resumed_usage["cache_hits"], resumed_usage["errors"]) == (1, 2, 0)
    assert usage[1]["judge"]["prompt_tokens"] == 1  # the fresh call's "3" (loopback: words)
    lines = calls_of(run_dir)
    assert len(lines) == 2 + 3 + 1 + 1 + 1
    assert [(c.sample_id, c.cached) for c in lines[:5]] == [
        ("s0", False),
        ("s1", False),
        ("s0", True),
        ("s1", True),
        ("s2", False),
    ]
    assert all(c.role == "judge" and c.caller == "j" and c.task == "t" and c.model == spec for c in lines)
    assert lines[0].request_hash == lines[2].request_hash and lines[0].output.text == "The answer is 1."
    assert not (run_dir / "calls" / "target.jsonl").exists()


def test_failed_judge_calls_are_recorded_and_counted(tmp_path: Path) -> None:
    """A judge call that fails (after its retries) comes back as an error output, is logged with
    its error and counted; it is never cached (the next run asks again)."""

    async def run() -> tuple[CallResult, dict[str, Any]]:
        cache = ResponseCache(tmp_path / "c.sqlite")
        service = ModelService(settings=ServiceSettings(max_attempts=2), cache=cache, run_dir=tmp_path)
        judge = service.resolve("judge", f"openai:judge@{server.base_url}")
        try:
            result = await service.call(judge, ask("1"), sample_id="s")
            assert len(cache) == 0  # a failure is never cached
            return result, service.usage()
        finally:
            await service.aclose()
            cache.close()

    with OpenAIServer(model="judge") as server:
        server.fail_first(5, status=503)
        result, usage = asyncio.run(run())
    assert result.output.error is not None and result.output.error.attempts == 2
    judge = usage["judge"]
    assert (judge["requests"], judge["retries"], judge["errors"]) == (1, 1, 1)
    (line,) = calls_of(tmp_path)
    assert line.output.error is not None and line.output.error.kind == result.output.error.kind
    assert not line.cached


def test_target_and_judge_on_one_endpoint_share_one_bound() -> None:
    """One semaphore per endpoint (its base URL), whoever calls it: 12 target and 12 judge calls
    to one server with concurrency 3 never hold more than 3 requests open there; a second server
    has its own bound."""

    async def run() -> ModelService:
        service = ModelService(settings=ServiceSettings(concurrency=3))
        target = service.register("target", load_model(f"openai:loopback@{shared.base_url}"), owned=True)
        judge = service.resolve("judge", f"openai:loopback@{shared.base_url}")
        other = service.resolve("judge", f"openai:loopback@{elsewhere.base_url}")
        assert target.endpoint is judge.endpoint and other.endpoint is not judge.endpoint
        # the endpoint is the server, not the served name: another model at that URL shares it
        assert service.resolve("judge", f"openai:other-name@{shared.base_url}").endpoint is target.endpoint
        calls = [service.call(m, ask(f"{m.role} {i}")) for i in range(12) for m in (target, judge, other)]
        try:
            results = await asyncio.gather(*calls)
        finally:
            await service.aclose()
        assert all(r.output.ok for r in results)
        return service

    with OpenAIServer(delay=0.05) as shared, OpenAIServer(delay=0.05) as elsewhere:
        service = asyncio.run(run())
        assert shared.hits == 24 and elsewhere.hits == 12
        assert shared.max_in_flight == 3 and elsewhere.max_in_flight == 3
    assert service.endpoints()[shared.base_url] == {"limit": 3, "max_in_flight": 3}
    assert {r["spec"] for r in service.describe()["judge"]} == {
        f"openai:loopback@{shared.base_url}",
        f"openai:other-name@{shared.base_url}",
        f"openai:loopback@{elsewhere.base_url}",
    }
    assert service.usage()["target"]["requests"] == 12 and service.usage()["judge"]["requests"] == 24


def test_the_reask_helper_asks_again_until_the_reply_parses() -> None:
    """One re-ask loop for every judge: the unreadable reply and a fixed follow-up are appended;
    after ``retries`` re-asks the result is unreadable (neither a value nor a call error)."""
    replies = iter(["nope", "still no", "42"])
    seen: list[list[Message]] = []

    async def fake_ask(messages: list[Message]) -> CallResult:
        seen.append(messages)
        return CallResult(ModelOutput(text=next(replies)), "h", "run-0" if len(seen) == 1 else None)

    def parse(text: str | None) -> int:
        if not (text or "").isdigit():
            raise ValueError(f"{text!r} is not a number")
        return int(text or "")

    got = asyncio.run(ask_until_parsed(fake_ask, "a number?", parse, ValueError, "Bad: {error}.", 2))
    assert got.value == 42 and got.attempts == 3 and got.cached == [True, False, False]
    assert got.problems == ["'nope' is not a number", "'still no' is not a number"]
    assert [m.role for m in seen[2]] == ["user", "assistant", "user", "assistant", "user"]
    assert seen[1][-1].text() == "Bad: 'nope' is not a number."
    replies = iter(["x", "y"])
    seen.clear()
    unreadable = asyncio.run(ask_until_parsed(fake_ask, "a number?", parse, ValueError, "{error}", 1))
    assert unreadable.unreadable and unreadable.value is None and unreadable.attempts == 2


# -- 2. the judges through the service -------------------------------------------------------------
def emotion_judge_answer(body: dict[str, Any]) -> str:
    if len(body["messages"]) == 1 and "pasta" in body["messages"][0]["content"]:
        return "four"
    return '```json\n{"score": 4, "justification": "fits"}\n```'


def chat(i: int, topic: str) -> tuple[Sample, list[ModelOutput]]:
    conversation = [Turn(role="user", text=f"Tell me about {topic} {i}."), Turn(role="assistant", text="ok")]
    conversation.append(Turn(role="user", text="And more?"))
    sample = Sample(id=f"e{i}", task="chat", conversation=conversation)
    return sample, [ModelOutput(text=f"{topic} {i} is nice."), ModelOutput(text="Yes, more.")]


def test_emotion_llm_judge_cached_pinned_bounded_and_logged(tmp_path: Path) -> None:
    """emotion-llm resolved once in the service: its calls stay under the endpoint's bound, are
    logged under the judge role (re-asks included), and a pinned judge's verdicts serve a later
    run while an unpinned one's do not."""
    samples = [chat(i, "pasta" if i % 2 else "rain") for i in range(6)]

    async def session(run_id: str, revision: str | None) -> list[Any]:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        service = ModelService(
            settings=ServiceSettings(concurrency=2), cache=cache, run_id=run_id, run_dir=tmp_path / run_id
        )
        (tmp_path / run_id).mkdir()
        judge = EmotionLLMJudge(spec, retries=1, revision=revision)
        judge.bind(service)
        try:
            return await asyncio.gather(*(judge.ascore(s, o) for s, o in samples))
        finally:
            await service.aclose()
            cache.close()

    with OpenAIServer(model="judge", answer=emotion_judge_answer, delay=0.03) as server:
        spec = f"openai:judge@{server.base_url}"
        scores = asyncio.run(session("run-1", "judge-v1"))
        assert all(s.error is None and s.metrics == {"emotion_llm_score": 4.0} for s in scores)
        assert server.hits == 6 + 3  # one re-ask per "pasta" conversation
        assert server.max_in_flight == 2
        rerun = asyncio.run(session("run-2", "judge-v1"))
        assert server.hits == 9 and all(s.details["judge_cached"] for s in rerun)
        unpinned = asyncio.run(session("run-3", None))
        assert server.hits == 18 and not any(s.details["judge_cached"] for s in unpinned)

    first = calls_of(tmp_path / "run-1")
    assert len(first) == 9 and {c.caller for c in first} == {"emotion-llm"}
    assert sorted(c.sample_id for c in first) == sorted(["e0", "e2", "e4"] + ["e1", "e3", "e5"] * 2)
    assert all(c.cached_from == "run-1" for c in calls_of(tmp_path / "run-2"))


def test_a_judge_outside_a_run_binds_itself_once() -> None:
    """A judge scored by a script (no run) gets a standalone service on first use and keeps it."""
    with OpenAIServer(model="judge", answer=emotion_judge_answer) as server:
        judge = EmotionLLMJudge(f"openai:judge@{server.base_url}")
        first = judge.score(*chat(0, "rain"))
        service = judge._service
        second = judge.score(*chat(0, "rain"))  # same standalone service, no cache: asked again
        assert judge._service is service and first.metrics == second.metrics and server.hits == 2


# -- 3. a whole run: target and rubric judge on one server -----------------------------------------
RUBRICS = {"r1": ["hello", "world", "bye"], "r2": ["hello", "moon"], "r3": ["sun", "hello"]}
ITEM = re.compile(r"# Rubric item\n(.*?)\n\n# Instructions", re.DOTALL)


def one_server_answer(body: dict[str, Any]) -> str:
    """The model under test (its requests carry audio) says "hello world"; the judge (its prompt
    is the rubric template) marks an item met when the reply contains it."""
    first = body["messages"][0]["content"]
    if not isinstance(first, str):
        return "hello world"
    item = ITEM.search(first).group(1)  # type: ignore[union-attr]
    met = item in first.split("# Rubric item")[0].rsplit("Assistant:", 1)[-1]
    return "```json\n" + json.dumps({"explanation": "checked", "criteria_met": met}) + "\n```"


@pytest.fixture
def amc_rows(tmp_path: Path) -> Path:
    root = tmp_path / "amc"
    root.mkdir()
    rows = []
    for n, (cid, rubrics) in enumerate(RUBRICS.items()):
        sf.write(
            root / f"{cid}.wav", (0.1 * np.sin(np.arange(4800) * (0.05 + n / 100))).astype("float32"), 48000
        )
        row: dict[str, Any] = {"id": cid, "axis": "INFERENCE_MEMORY", "rubric": json.dumps(rubrics)}
        row |= {"user_turn_1_audio": f"{cid}.wav", "user_turn_1_transcript": f"{cid} says hi"}
        rows.append(row)
    (root / "audiomc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_amc_run_judge_shares_the_targets_bound_is_logged_and_cached_when_pinned(amc_rows, tmp_path):
    """A run whose model under test and rubric judge are served by ONE server: in flight there
    never exceeds the run's concurrency; every judge call is a line of calls/judge.jsonl; the
    manifest names the judge model and counts its usage; a rerun with the judge pinned
    (judge_revision) asks the judge nothing and reproduces the scores."""
    with OpenAIServer(answer=one_server_answer, delay=0.03) as server:
        spec = f"openai:loopback@{server.base_url}"
        config = RunConfig(
            model=spec,
            tasks=f"audio-multichallenge:data={amc_rows},judge_model={spec},judge_revision=j1",
            out_dir=str(tmp_path / "runs"),
            concurrency=2,
        )
        store = evaluate(config, show_progress=False)
        n_items = sum(len(r) for r in RUBRICS.values())
        assert server.hits == len(RUBRICS) + n_items
        assert server.max_in_flight <= 2

        lines = calls_of(store.root)
        assert len(lines) == n_items and all(c.caller == "amc-rubric" and not c.cached for c in lines)
        assert sorted(c.sample_id for c in lines) == sorted(c for c, r in RUBRICS.items() for _ in r)
        manifest = json.loads((store.root / "manifest.json").read_text())
        assert manifest["model_roles"] == {
            "target": [{"spec": spec, "pinned": None}],
            "judge": [{"spec": spec, "pinned": "j1"}],
        }
        assert manifest["last_session"]["endpoints"] == {server.base_url: {"limit": 2, "max_in_flight": 2}}
        assert manifest["last_session"]["calls"]["judge"]["requests"] == n_items
        assert manifest["last_session"]["requests"] == len(RUBRICS)
        scores = {r.sample_id: r.score.metrics for r in store.scores()}
        assert scores == {
            "r1": {"apr": 0.0, "ars": pytest.approx(2 / 3)},
            "r2": {"apr": 0.0, "ars": 0.5},
            "r3": {"apr": 0.0, "ars": 0.5},
        }

        again = evaluate(config, show_progress=False)  # a new run: the unpinned target asks again
        assert server.hits == 2 * len(RUBRICS) + n_items
        rerun = calls_of(again.root)
        assert len(rerun) == n_items and all(c.cached_from == store.run_id for c in rerun)
        assert {r.sample_id: r.score.metrics for r in again.scores()} == scores
        session = json.loads((again.root / "manifest.json").read_text())["last_session"]
        judged = session["calls"]["judge"]
        assert (judged["requests"], judged["cache_hits"]) == (0, n_items)


def test_rubric_judge_binds_once_per_run_not_per_sample(amc_rows) -> None:
    """The judge model is resolved once: every sample's calls use the one adapter."""
    with OpenAIServer(answer=one_server_answer) as server:
        spec = f"openai:loopback@{server.base_url}"
        service = ModelService.standalone()
        judge = AMCRubricJudge(spec)
        judge.bind(service)
        model = judge._model
        from evalkit.tasks.base import resolve_tasks

        (task,) = resolve_tasks(f"audio-multichallenge:data={amc_rows}")

        async def score_all() -> list[Any]:
            try:
                outputs = [ModelOutput(text="hello world")]
                return await asyncio.gather(*(judge.ascore(s, outputs) for s in task.samples()))
            finally:
                await service.aclose()

        scores = asyncio.run(score_all())
        assert judge._model is model and len(service.describe()["judge"]) == 1
        assert [s.metrics["apr"] for s in scores] == [0.0, 0.0, 0.0]
        assert server.hits == sum(len(r) for r in RUBRICS.values())
