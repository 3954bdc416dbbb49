"""Audio MultiChallenge: the hub's row schema, both protocols, the per-item judge prompt and its
strict parser, and a whole evaluation through the real ``openai:`` adapter against two loopback
servers (the model under test and the judge), with every expected APR/ARS worked out by hand below.

The scripted model answers "I recall: <the last assistant text it was shown>". The scripted judge
reads its own prompt (one rubric item per call, the dataset card's prompt) and marks the item met
iff its text occurs (case-insensitively) in the graded reply, the last "Assistant:" block. For the
item "noon" it first answers unreadably (exercising the re-ask) and for the item "tips" it never
answers readably: the official mode counts that item as not met (as the public evaluation guide
does) and counts it apart (``n_judge_unreadable``); the ``exclude-unreadable`` mode leaves it out.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from evalkit.errors import EvalkitError
from evalkit.judges.rubric import RubricParseError, parse_rubric_verdict
from evalkit.records import AudioPart, ModelOutput, TextPart
from evalkit.runner import RunConfig, evaluate
from evalkit.tasks.base import resolve_tasks
from evalkit.testing.openai_server import OpenAIServer

pytest.importorskip("aiohttp")
pytest.importorskip("datasets")

RATE = 48000  # the hub's user audio rate

# (id, axis, assistant reference texts between user turns, rubric items)
CONVERSATIONS: list[tuple[str, str, list[str], list[str]]] = [
    ("c1", "INFERENCE_MEMORY", ["Your dog Rex is brown."], ["rex", "brown"]),
    ("c2", "INFERENCE_MEMORY", ["The meeting is Tuesday.", "Noted, at noon."], ["noon", "tuesday", "friday"]),
    ("c3", "INSTRUCTION_RETENTION", ["Bonjour.", "D'accord.", "Oui, merci beaucoup."], ["merci", "oui"]),
    ("c4", "INSTRUCTION_RETENTION", ["Here are three tips."], ["tips", "three"]),
    ("c5", "SELF_COHERENCE", ["The sky is blue."], ["green", "sky"]),
]
# per conversation (apr, ars); c4's "tips" is unreadable: not met (official) or left out (exclude)
EXPECTED = {"c1": (1.0, 1.0), "c2": (0.0, 1 / 3), "c3": (1.0, 1.0), "c4": (0.0, 0.5), "c5": (0.0, 0.5)}
EXPECTED_EXCLUDING = {**EXPECTED, "c4": (1.0, 1.0)}


def tone(freq: float) -> np.ndarray:
    t = np.arange(int(0.2 * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype("float32")


def hub_row(cid: str, axis: str, replies: list[str], rubrics: list[str], audio: list[Any]) -> dict[str, Any]:
    """A row in the hub's wide layout: every column up to turn 8, null where the conversation ended."""
    row: dict[str, Any] = {"id": cid, "axis": axis, "rubric": json.dumps(rubrics)}
    for k in range(1, 9):
        spoken = k <= len(replies) + 1
        row[f"user_turn_{k}_audio"] = audio[k - 1] if spoken else None
        row[f"user_turn_{k}_transcript"] = f"{cid} user turn {k}" if spoken else None
        if k <= 7:
            row[f"assistant_turn_{k}_transcript"] = replies[k - 1] if k <= len(replies) else None
    return row


@pytest.fixture
def amc_data(tmp_path: Path) -> Path:
    """A JSONL copy of the benchmark in the hub's columns (audio as paths relative to the folder)."""
    root = tmp_path / "amc"
    (root / "clips").mkdir(parents=True)
    rows = []
    for n, (cid, axis, replies, rubrics) in enumerate(CONVERSATIONS):
        clips = []
        for k in range(1, len(replies) + 2):
            clip = f"clips/{cid}_{k}.wav"
            sf.write(root / clip, tone(200.0 + 50 * n + 10 * k), RATE)
            clips.append(clip)
        rows.append(hub_row(cid, axis, replies, rubrics, clips))
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
    assert c3.meta == {"axis": "INSTRUCTION_RETENTION", "n_user_turns": 4}
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
    assert c3.conversation[-1].transcript == "c3 user turn 4"  # kept for the judge, never sent
    assert "reference_reply" not in c3.reference
    info = task.dataset_info()
    assert info["protocol"] == "fixed-context" and info["judge_model"] == "openai:o4-mini"
    assert info["split"] == "test" and task.default_split == "test"


def test_hub_row_with_audio_bytes_list_rubric_and_final_reference(amc_data):
    """The hub's undecoded Audio cells ({"bytes", "path"}), a list-valued rubric and a copy that
    carries the final assistant reply (kept as the reference, never shown to the model)."""
    task = load(f"audio-multichallenge:data={amc_data}")
    wav = io.BytesIO()
    sf.write(wav, tone(300.0), RATE, format="WAV")
    cells = [{"bytes": wav.getvalue(), "path": f"u{k}.wav"} for k in (1, 2)]
    row = hub_row("h1", "VOICE_EDITING", ["Booked for five."], [], cells)
    row["rubric"] = ["Books the table for four", "  Confirms the time  "]
    row["assistant_turn_2_transcript"] = "Changed to four."
    sample = task.to_sample(row, 0)
    assert [t.role for t in sample.conversation] == ["user", "assistant", "user"]
    assert sample.conversation[0].audio.data == cells[0]["bytes"]
    assert sample.reference == {
        "rubrics": ["Books the table for four", "Confirms the time"],
        "reference_reply": "Changed to four.",
    }
    assert sample.meta == {"axis": "VOICE_EDITING", "n_user_turns": 2}
    request = task.build_request(sample, 2, [])
    assert [m.text() for m in request.messages if m.role == "assistant"] == ["Booked for five."]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"rubric": "not json"}, "not a JSON list"),
        ({"rubric": "[]"}, "non-empty list"),
        ({"rubric": json.dumps(["ok", 3])}, "rubric item 1"),
        ({"user_turn_1_transcript": ""}, "user_turn_1_transcript is empty"),
        ({"user_turn_2_audio": None}, "no audio"),
        ({"axis": None}, "no 'axis'"),
    ],
)
def test_malformed_hub_rows_are_one_line_errors(amc_data, change, problem):
    task = load(f"audio-multichallenge:data={amc_data}")
    row = hub_row("bad", "SELF_COHERENCE", ["A reply."], ["an item"], ["clips/c1_1.wav", "clips/c1_2.wav"])
    row.update(change)
    with pytest.raises(EvalkitError, match=problem):
        task.to_sample(row, 7)


def test_closed_loop_answers_every_user_turn_with_its_own_replies(amc_data):
    task = load(f"audio-multichallenge:data={amc_data},protocol=closed-loop")
    c2 = list(task.samples())[1]
    assert task.answer_turns(c2) == [0, 2, 4]
    own = [ModelOutput(text="first own"), ModelOutput(text="second own")]
    request = task.build_request(c2, 4, own)
    assert [m.text() for m in request.messages if m.role == "assistant"] == ["first own", "second own"]
    assert all(m.role != "system" for m in request.messages)
    judge = task.make_judges()["amc-rubric"]
    history = judge.conversation_history(c2, [*own, ModelOutput(text="final")])
    assert history == (
        "User: c2 user turn 1\n\nAssistant: first own\n\nUser: c2 user turn 2\n\n"
        "Assistant: second own\n\nUser: c2 user turn 3\n\nAssistant: final"
    )


def test_bad_options_are_one_line_errors(amc_data):
    with pytest.raises(EvalkitError, match="protocol"):
        load(f"audio-multichallenge:data={amc_data},protocol=open-loop")
    with pytest.raises(EvalkitError, match="unknown option"):
        load(f"audio-multichallenge:data={amc_data},judge=x")


# -- 2. end to end through real adapters ----------------------------------------------------------
def model_answer(body: dict[str, Any]) -> str:
    said = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
    return f"I recall: {said[-1]}"


HISTORY = re.compile(r"# Conversation History\n(.*?)\n\n# Rubric item\n(.*?)\n\n# Instructions\n", re.DOTALL)


def judge_answer(body: dict[str, Any]) -> str:
    """The scripted judge: one rubric item per request, as the official prompt asks."""
    history, item = HISTORY.search(body["messages"][0]["content"]).groups()
    response = history.split("\n\n")[-1].removeprefix("Assistant: ").lower()
    if item == "tips":
        return "I would rather not grade this."
    if item == "noon" and len(body["messages"]) == 1:
        return '```json\n{"explanation": "cut off"'
    verdict = {"explanation": f"looked for {item!r}", "criteria_met": item.lower() in response}
    return "```json\n" + json.dumps(verdict, indent=2) + "\n```"


def test_amc_end_to_end_scores_unreadable_items_and_cache(amc_data, tmp_path):
    with OpenAIServer() as model_server, OpenAIServer(model="judge", answer=judge_answer) as judge_server:
        model_server.answer = model_answer
        judge_spec = f"openai:judge@{judge_server.base_url}"
        config = RunConfig(
            model=f"openai:{model_server.model}@{model_server.base_url}",
            # the judge pinned (judge_revision): its cached verdicts serve the reruns below
            tasks=f"audio-multichallenge:data={amc_data},judge_model={judge_spec},judge_retries=2,"
            "judge_revision=judge-v1",
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
        # the judge: one call per rubric item (2 + 3 + 2 + 2 + 2), plus one re-ask for c2's "noon"
        # and two for c4's "tips" (judge_retries=2); all at temperature 0
        assert judge_server.hits == 11 + 1 + 2
        assert all(r.body["temperature"] == 0 for r in judge_server.requests)
        first = [r.body["messages"] for r in judge_server.requests if len(r.body["messages"]) == 1]
        assert len(first) == 11 and all(m[0]["role"] == "user" for m in first)
        items = sorted(HISTORY.search(m[0]["content"]).group(2) for m in first)
        assert items == sorted(r for c in CONVERSATIONS for r in c[3])
        reask = [r.body["messages"] for r in judge_server.requests if len(r.body["messages"]) > 1]
        assert len(reask) == 3 and all("could not be read" in m[-1]["content"] for m in reask)

        judge = summary["tasks"]["audio-multichallenge"]["judges"]["amc-rubric"]
        assert judge["n"] == 5 and judge["n_scored"] == 5 and judge["n_judge_errors"] == 0
        assert judge["n_judge_unreadable"] == 1
        assert summary["tasks"]["audio-multichallenge"]["primary"]["metric"] == "apr"

        def mean(expected: dict[str, tuple[float, float]], metric: int, ids: list[str]) -> float:
            return sum(expected[i][metric] for i in ids) / len(ids)

        def assert_numbers(block: dict[str, Any], expected: dict[str, tuple[float, float]]) -> None:
            assert block["metrics"]["apr"]["value"] == pytest.approx(mean(expected, 0, list(expected)))
            assert block["metrics"]["ars"]["value"] == pytest.approx(mean(expected, 1, list(expected)))
            axes = block["groups"]["axis"]
            for axis, ids in {
                "INFERENCE_MEMORY": ["c1", "c2"],
                "INSTRUCTION_RETENTION": ["c3", "c4"],
                "SELF_COHERENCE": ["c5"],
            }.items():
                assert axes[axis]["apr"]["value"] == pytest.approx(mean(expected, 0, ids))
                assert axes[axis]["ars"]["value"] == pytest.approx(mean(expected, 1, ids))

        assert_numbers(judge, EXPECTED)
        assert judge["metrics"]["apr"]["value"] == pytest.approx(0.4)

        scores = {r.sample_id: r.score for r in store.scores()}
        c4 = scores["c4"]
        assert c4.error is None and c4.details["n_judge_unreadable"] == 1
        assert [(r["criteria_met"], r["unreadable"], r["attempts"]) for r in c4.details["rubrics"]] == [
            (False, True, 3),
            (True, False, 1),
        ]
        assert "1 judge replies unreadable after the re-asks: counted as not met" in c4.explanation
        assert scores["c1"].details["n_judge_unreadable"] == 0
        c2 = scores["c2"]
        assert c2.details["judge_attempts"] == 2 and c2.details["judge_calls"] == 4
        assert len(c2.details["judge_parse_errors"]) == 1
        assert c2.details["judge_parse_errors"][0].startswith("rubric 1: not valid JSON")
        assert [r["criteria_met"] for r in c2.details["rubrics"]] == [True, False, False]
        assert [r["attempts"] for r in c2.details["rubrics"]] == [2, 1, 1]
        assert c2.details["rubrics"][0]["explanation"] == "looked for 'noon'"
        assert c2.details["judge_cached"] is False

        # a rerun asks the pinned judge nothing new (the unpinned model's answers are reused only
        # within a run: evalkit.cache.cache_scope; it gives the same replies again anyway)
        judge_hits = judge_server.hits
        again = evaluate(config, show_progress=False)
        rerun = json.loads((again.root / "summary.json").read_text())
        assert judge_server.hits == judge_hits
        rejudged = rerun["tasks"]["audio-multichallenge"]["judges"]["amc-rubric"]
        assert rejudged["metrics"]["apr"]["value"] == pytest.approx(0.4)
        assert rejudged["metrics"]["ars"]["value"] == pytest.approx(judge["metrics"]["ars"]["value"])
        assert rejudged["n_judge_unreadable"] == 1

        # mode exclude-unreadable: the same (cached) judge replies, the unreadable item left out
        excluding = evaluate(
            dataclasses.replace(config, tasks=config.tasks + ",mode=exclude-unreadable"),
            show_progress=False,
        )
        assert judge_server.hits == judge_hits
        other = json.loads((excluding.root / "summary.json").read_text())["tasks"]["audio-multichallenge"]
        block = other["judges"]["amc-rubric-exclude"]
        assert block["n_scored"] == 5 and block["n_judge_unreadable"] == 1
        assert_numbers(block, EXPECTED_EXCLUDING)
        c4 = {r.sample_id: r.score for r in excluding.scores()}["c4"]
        assert [r["criteria_met"] for r in c4.details["rubrics"]] == [None, True]
        assert "left out" in c4.explanation


# -- 3. the prompt --------------------------------------------------------------------------------
#: sentences of the dataset card's judge prompt (huggingface.co/datasets/ScaleAI/audiomc, MIT)
CARD_SENTENCES = [
    "Your job is to look at a conversation and a rubric item, and score the last turn (i.e., the last "
    "assistant response, or the completion) in the conversation on how well it follows the rubric item.",
    "# Conversation History",
    "# Rubric item",
    'Return a json object with the following fields: "explanation" and "criteria_met".',
    '• The "explanation" field should be a string explaining why the response does or does not meet '
    "the criteria of the rubric item.",
    '• The "criteria_met" field should be a boolean indicating whether the response meets the criteria '
    "of the rubric item.",
    'For example, if the response is "For tonight’s dinner, think of making a cheese and mushroom pizza" '
    'and the rubric item is "Avoids dairy product in the recipes", you should return a json like this:',
    '"explanation": "The response includes a dairy product in the recipe, so the criteria was not met.",',
    '"criteria_met": false',
    "# Final instruction\nReturn just the json object in markdown format. "
    "Do not include any other text in the response.",
]


def test_rendered_judge_prompt_is_the_card_prompt_with_the_conversation_and_one_item(amc_data):
    task = load(f"audio-multichallenge:data={amc_data}")
    c1 = list(task.samples())[0]
    judge = task.make_judges()["amc-rubric"]
    prompt = judge.render(c1, [ModelOutput(text="Rex is a brown dog.")], "Says the dog is brown")
    assert prompt.startswith(CARD_SENTENCES[0])
    for sentence in CARD_SENTENCES:
        assert sentence in prompt
    assert (
        "# Conversation History\nUser: c1 user turn 1\n\nAssistant: Your dog Rex is brown.\n\n"
        "User: c1 user turn 2\n\nAssistant: Rex is a brown dog.\n\n# Rubric item\nSays the dog is brown\n\n"
        "# Instructions\n"
    ) in prompt
    assert "rex" not in prompt.split("# Instructions")[1].lower()  # only one item, no other rubric
    assert "{{" not in prompt and "{#" not in prompt and "«" not in prompt


# -- 4. the parser --------------------------------------------------------------------------------
def verdict_json(met: Any, explanation: Any = "because") -> str:
    return json.dumps({"explanation": explanation, "criteria_met": met})


def test_parser_reads_plain_and_fenced_replies():
    assert parse_rubric_verdict(verdict_json(True)).criteria_met is True
    fenced = "```json\n" + json.dumps({"explanation": "no dairy", "criteria_met": False}, indent=2) + "\n```"
    verdict = parse_rubric_verdict(fenced)
    assert verdict.criteria_met is False and verdict.explanation == "no dairy"
    assert parse_rubric_verdict("```\n" + verdict_json(False) + "\n```\n").criteria_met is False
    assert parse_rubric_verdict("  " + verdict_json(True, "") + "  ").explanation == ""
    extra = json.dumps({"explanation": "x", "criteria_met": True, "confidence": 0.9})
    assert parse_rubric_verdict(extra).criteria_met is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        (None, "empty"),
        ("The rubric item is met.", "not valid JSON"),
        ('Sure! ```json\n{"explanation": "x", "criteria_met": true}\n```', "not valid JSON"),
        ('```json\n{"explanation": "x", "criteria_met": true}', "not valid JSON"),
        (verdict_json(True) + "\n" + verdict_json(False), "not valid JSON"),
        (verdict_json("yes"), "must be true or false"),
        (verdict_json(1), "must be true or false"),
        (json.dumps({"explanation": "x"}), "must be true or false"),
        (verdict_json(True, 3), "'explanation' must be a string"),
        (json.dumps({"criteria_met": False}), "'explanation' must be a string"),
        (json.dumps([{"explanation": "x", "criteria_met": True}]), "expected a JSON object"),
        ('"met"', "expected a JSON object"),
    ],
)
def test_parser_rejects_malformed_replies(text: str | None, problem: str):
    with pytest.raises(RubricParseError, match=problem):
        parse_rubric_verdict(text)
