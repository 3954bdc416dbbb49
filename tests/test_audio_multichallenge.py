"""Audio MultiChallenge: the row schema, both protocols, the strict rubric parser, and a whole
evaluation through the real ``openai:`` adapter against two loopback servers (the model under test
and the judge), with every expected APR/ARS worked out by hand below.

The scripted model answers "I recall: <the last assistant text it was shown>". The scripted judge
reads its own prompt and marks a rubric met iff the rubric's text occurs (case-insensitively) in
the final response; for the "noon" conversation it first answers unreadably (exercising the re-ask)
and for the "tips" conversation it never answers readably (a judge error).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from evalkit.judges.rubric import RubricParseError, parse_rubric_verdicts
from evalkit.records import AudioPart, ModelOutput, TextPart
from evalkit.runner import RunConfig, evaluate
from evalkit.tasks.base import resolve_tasks
from evalkit.testing.openai_server import OpenAIServer

pytest.importorskip("aiohttp")
pytest.importorskip("datasets")

RATE = 48000

# (id, axis, assistant reference texts between user turns, rubrics)
CONVERSATIONS: list[tuple[str, str, list[str], list[str]]] = [
    ("c1", "Inference Memory", ["Your dog Rex is brown."], ["rex", "brown"]),
    ("c2", "Inference Memory", ["The meeting is Tuesday.", "Noted, at noon."], ["noon", "tuesday", "friday"]),
    ("c3", "Instruction Retention", ["Bonjour.", "D'accord.", "Oui, merci beaucoup."], ["merci", "oui"]),
    ("c4", "Instruction Retention", ["Here are three tips."], ["tips"]),
    ("c5", "Self Coherence", ["The sky is blue."], ["green", "sky"]),
]
# per conversation (apr, ars), c4 being a judge error
EXPECTED = {"c1": (1.0, 1.0), "c2": (0.0, 1 / 3), "c3": (1.0, 1.0), "c5": (0.0, 0.5)}


def write_tone(path: Path, freq: float) -> None:
    t = np.arange(int(0.2 * RATE)) / RATE
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype("float32"), RATE)


@pytest.fixture
def amc_data(tmp_path: Path) -> Path:
    """A JSONL copy of the benchmark in the schema the task documents (relative audio paths)."""
    root = tmp_path / "amc"
    (root / "clips").mkdir(parents=True)
    rows = []
    for n, (cid, axis, replies, rubrics) in enumerate(CONVERSATIONS):
        turns: list[dict[str, Any]] = []
        for k in range(len(replies) + 1):
            clip = f"clips/{cid}_{k}.wav"
            write_tone(root / clip, 200.0 + 50 * n + 10 * k)
            turns.append({"role": "user", "audio": clip, "transcript": f"{cid} user turn {k}"})
            if k < len(replies):
                turns.append({"role": "assistant", "text": replies[k]})
        rubric_cells: list[Any] = [{"criterion": r} for r in rubrics] if cid == "c3" else rubrics
        rows.append({"conversation_id": cid, "axis": axis, "turns": turns, "rubrics": rubric_cells})
    path = root / "audiomc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def load(spec: str):
    (task,) = resolve_tasks(spec)
    return task


# -- 1. schema and protocols ----------------------------------------------------------------------
def test_fixed_context_sends_prior_audio_and_reference_replies_without_system_prompt(amc_data):
    task = load(f"audio-multichallenge:data={amc_data}")
    samples = list(task.samples())
    assert [s.id for s in samples] == ["c1", "c2", "c3", "c4", "c5"]
    c3 = samples[2]
    assert c3.meta == {"axis": "Instruction Retention", "n_user_turns": 4}
    assert c3.reference["rubrics"] == ["merci", "oui"]
    last_user = len(c3.conversation) - 1
    assert task.answer_turns(c3) == [last_user] and c3.conversation[last_user].role == "user"
    request = task.build_request(c3, last_user, [])
    assert [m.role for m in request.messages] == ["user", "assistant"] * 3 + ["user"]
    assert all(m.role != "system" for m in request.messages)
    for m in request.messages:
        kinds = {type(p) for p in m.content}
        assert kinds == ({AudioPart} if m.role == "user" else {TextPart})
    assert [m.text() for m in request.messages if m.role == "assistant"] == CONVERSATIONS[2][2]
    audio = request.messages[0].content[0].audio
    assert sf.info(audio.path).samplerate == RATE  # the task does not resample
    info = task.dataset_info()
    assert info["protocol"] == "fixed-context" and info["judge_model"] == "openai:o4-mini"


def test_closed_loop_answers_every_user_turn_with_its_own_replies(amc_data):
    task = load(f"audio-multichallenge:data={amc_data},protocol=closed-loop")
    c2 = list(task.samples())[1]
    assert task.answer_turns(c2) == [0, 2, 4]
    own = [ModelOutput(text="first own"), ModelOutput(text="second own")]
    request = task.build_request(c2, 4, own)
    assert [m.text() for m in request.messages if m.role == "assistant"] == ["first own", "second own"]
    assert all(m.role != "system" for m in request.messages)
    judge = task.make_judges()["amc-rubric"]
    seen = [t["text"] for t in judge.transcript(c2, [*own, ModelOutput(text="final")])]
    assert seen == ["c2 user turn 0", "first own", "c2 user turn 1", "second own", "c2 user turn 2"]


def test_bad_options_are_one_line_errors(amc_data):
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="protocol"):
        load(f"audio-multichallenge:data={amc_data},protocol=open-loop")
    with pytest.raises(EvalkitError, match="unknown option"):
        load(f"audio-multichallenge:data={amc_data},judge=x")


# -- 2. end to end through real adapters ----------------------------------------------------------
def model_answer(body: dict[str, Any]) -> str:
    said = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
    return f"I recall: {said[-1]}"


FINAL = re.compile(r"<final_response>\s*(.*?)\s*</final_response>", re.DOTALL)
RUBRIC_LINE = re.compile(r"^\s*\d+\.\s+(.*)$", re.MULTILINE)
RUBRICS = re.compile(r"<rubrics>(.*?)</rubrics>", re.DOTALL)


def judge_answer(body: dict[str, Any]) -> str:
    prompt = body["messages"][0]["content"]
    response = FINAL.search(prompt).group(1).lower()
    rubrics = RUBRIC_LINE.findall(RUBRICS.search(prompt).group(1))
    if "tips" in response:
        return "I would rather not grade this."
    if "noon" in response and len(body["messages"]) == 1:
        return '```json\n[{"explanation": "cut off"'
    verdicts = [{"explanation": f"looked for {r!r}", "criteria_met": r.lower() in response} for r in rubrics]
    return "```json\n" + json.dumps(verdicts) + "\n```"


def test_amc_end_to_end_scores_judge_errors_and_cache(amc_data, tmp_path):
    with OpenAIServer() as model_server, OpenAIServer(model="judge", answer=judge_answer) as judge_server:
        model_server.answer = model_answer
        judge_spec = f"openai:judge@{judge_server.base_url}"
        config = RunConfig(
            model=f"openai:{model_server.model}@{model_server.base_url}",
            tasks=f"audio-multichallenge:data={amc_data},judge_model={judge_spec},judge_retries=2",
            out_dir=str(tmp_path / "runs"),
            concurrency=4,
        )
        store = evaluate(config, show_progress=False)
        summary = json.loads((store.root / "summary.json").read_text())

        # the model: one request per conversation, fixed context, no system prompt
        assert model_server.hits == 5
        for req in model_server.requests:
            assert req.body["messages"][0]["role"] == "user"
            assert any(p["type"] == "input_audio" for p in req.body["messages"][0]["content"])
        # the judge: c1, c3, c5 once; c2 twice (re-asked); c4 1 + 2 retries; all at temperature 0
        assert judge_server.hits == 1 + 2 + 1 + 3 + 1
        assert all(r.body["temperature"] == 0 for r in judge_server.requests)
        reask = [r.body for r in judge_server.requests if len(r.body["messages"]) > 1]
        assert any("could not be read" in b["messages"][-1]["content"] for b in reask)

        judge = summary["tasks"]["audio-multichallenge"]["judges"]["amc-rubric"]
        assert judge["n"] == 5 and judge["n_scored"] == 4 and judge["n_judge_errors"] == 1
        assert summary["tasks"]["audio-multichallenge"]["primary"]["metric"] == "apr"

        def mean(metric: int, ids: list[str]) -> float:
            return sum(EXPECTED[i][metric] for i in ids) / len(ids)

        assert judge["metrics"]["apr"]["value"] == pytest.approx(0.5)
        assert judge["metrics"]["ars"]["value"] == pytest.approx((1 + 1 / 3 + 1 + 0.5) / 4)
        axes = judge["groups"]["axis"]
        for axis, ids in {
            "Inference Memory": ["c1", "c2"],
            "Instruction Retention": ["c3"],
            "Self Coherence": ["c5"],
        }.items():
            assert axes[axis]["apr"]["value"] == pytest.approx(mean(0, ids))
            assert axes[axis]["ars"]["value"] == pytest.approx(mean(1, ids))

        scores = {r.sample_id: r.score for r in store.scores()}
        assert scores["c4"].error.kind == "judge_error" and scores["c4"].metrics == {}
        assert "after 3 attempts" in scores["c4"].error.message
        c2 = scores["c2"]
        assert c2.details["judge_attempts"] == 2 and len(c2.details["judge_parse_errors"]) == 1
        assert [r["criteria_met"] for r in c2.details["rubrics"]] == [True, False, False]
        assert c2.details["rubrics"][0]["explanation"] == "looked for 'noon'"

        # a rerun asks neither the model nor the judge anything new
        model_hits, judge_hits = model_server.hits, judge_server.hits
        again = evaluate(config, show_progress=False)
        rerun = json.loads((again.root / "summary.json").read_text())
        assert (model_server.hits, judge_server.hits) == (model_hits, judge_hits)
        rejudged = rerun["tasks"]["audio-multichallenge"]["judges"]["amc-rubric"]
        assert rejudged["metrics"]["apr"]["value"] == pytest.approx(0.5)
        assert rejudged["n_judge_errors"] == 1


# -- 3. the parser --------------------------------------------------------------------------------
def verdicts_json(*met: Any) -> str:
    return json.dumps([{"explanation": "because", "criteria_met": m} for m in met])


def test_parser_reads_plain_fenced_and_wrapped_replies():
    assert [v.criteria_met for v in parse_rubric_verdicts(verdicts_json(True, False), 2)] == [True, False]
    fenced = "```json\n" + verdicts_json(True) + "\n```"
    assert parse_rubric_verdicts(fenced, 1)[0].explanation == "because"
    assert parse_rubric_verdicts("```\n" + verdicts_json(False) + "\n```", 1)[0].criteria_met is False
    wrapped = json.dumps({"results": json.loads(verdicts_json(True, True))})
    assert len(parse_rubric_verdicts(wrapped, 2)) == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("The first rubric is met.", "not valid JSON"),
        (verdicts_json(True), "expected 2 verdicts"),
        (verdicts_json(True, True, False), "expected 2 verdicts"),
        (verdicts_json(True, "yes"), "must be true or false"),
        (verdicts_json(True, 1), "must be true or false"),
        (json.dumps([{"criteria_met": True, "explanation": "x"}, "met"]), "not an object"),
        (json.dumps([{"criteria_met": True, "explanation": 3}] * 2), "'explanation' must be a string"),
        (json.dumps([{"criteria_met": True, "explanation": "x", "rubric_index": 2}] * 2), "expected 1"),
        (json.dumps({"answer": "yes"}), "expected a JSON array"),
        ('"met"', "expected a JSON array"),
    ],
)
def test_parser_rejects_malformed_replies(text: str, problem: str):
    with pytest.raises(RubricParseError, match=problem):
        parse_rubric_verdicts(text, 2)
