"""The long-turn suite: the scenario set and its format, affect-shaped speech, scripted renders,
the simulated user through the loopback server (chat + /v1/audio/speech), and --resume repeating
no finished user or model turn (counted at the servers, with the response cache off)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.judges.long_turn import LongTurnChecks
from evalkit.models.base import load_model
from evalkit.models.tts import espeak_affect, speech_request
from evalkit.records import AudioRef, ModelOutput
from evalkit.rescore import rescore
from evalkit.runner import RunConfig, evaluate
from evalkit.tasks.base import resolve_tasks
from evalkit.tasks.long_turn import SCENARIO_DIR, LongTurn
from evalkit.tasks.long_turn.scenarios import AFFECTS, CATEGORIES, MAX_TURNS, MIN_TURNS, load_scenarios
from evalkit.testing.openai_server import FailureRule, OpenAIServer

N_TURNS = 20


# -- the scenario set ---------------------------------------------------------------------------------
def test_builtin_set_has_forty_valid_scenarios_in_every_category() -> None:
    scenarios = load_scenarios(SCENARIO_DIR)
    assert len(scenarios) >= 40
    assert len({s.id for s in scenarios}) == len(scenarios)
    assert set(Counter(s.category for s in scenarios)) == set(CATEGORIES)
    for s in scenarios:
        assert MIN_TURNS <= len(s.turns) <= MAX_TURNS, s.id
        assert all(t.affect in AFFECTS for t in s.turns), s.id
        assert len({t.affect for t in s.turns}) >= 3, f"{s.id}: an affect arc, not one mood"
        assert s.probes and all(2 <= p.turn <= len(s.turns) for p in s.probes), s.id
    assert any(s.instruction for s in scenarios) and any(s.role for s in scenarios)
    assert max(len(s.turns) for s in scenarios) >= 25


def _scenario_yaml(turns: int = 12, affect: str = "calm", extra: str = "") -> str:
    lines = "\n".join(
        f"    - {affect if i != 3 else 'worried'}: Line number {i}, my dog is Pepper." for i in range(turns)
    )
    return (
        "- id: mine\n  category: custom\n  persona: a tester\n  goal: test\n  facts: [the dog is Pepper]\n"
        f"  turns:\n{lines}\n  probes:\n    - {{turn: {turns}, expect: [pepper]}}\n{extra}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_scenario_yaml(affect="grumpy"), "field turns.0.affect: unknown affect 'grumpy'"),
        (_scenario_yaml(turns=5), "field turns: List should have at least 12 items"),
        (_scenario_yaml(extra="  mood: odd\n"), "field mood: Extra inputs are not permitted; fix: remove it"),
        (_scenario_yaml().replace("  goal: test\n", ""), "field goal: Field required; fix: add the field"),
        ("- id: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_a_bad_scenario_file_is_one_line_naming_file_field_and_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "mine.yaml").write_text(text, encoding="utf-8")
    task = LongTurn.from_spec(f"scenarios={tmp_path}")
    with pytest.raises(EvalkitError) as info:
        task.count()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "mine.yaml") in message and expected in message
    assert "fix" in message


def test_a_probe_past_the_last_turn_and_a_repeated_id_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_scenario_yaml().replace("turn: 12,", "turn: 13,"), encoding="utf-8")
    with pytest.raises(EvalkitError, match=r"scenario 1 \('mine'\) field .*probe turn 13 is past the last"):
        load_scenarios(tmp_path)
    (tmp_path / "a.yaml").write_text(_scenario_yaml(), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(_scenario_yaml(), encoding="utf-8")
    with pytest.raises(EvalkitError, match=r"b.yaml: scenario id 'mine' is already used in .*a.yaml"):
        load_scenarios(tmp_path)


# -- speech with affect ----------------------------------------------------------------------------------
def test_affects_are_spoken_differently() -> None:
    """Same words: sad is slower and quieter than excited (espeak-ng rate and amplitude)."""
    text = "I cannot believe what happened today at the station."
    sad, _ = audio_io.load(AudioRef(data=espeak_affect(text, "sad")), sample_rate=16000)
    excited, _ = audio_io.load(AudioRef(data=espeak_affect(text, "excited")), sample_rate=16000)
    assert len(sad) > 1.3 * len(excited)
    assert float((sad**2).mean()) < float((excited**2).mean())


def test_openai_speech_sends_the_affect_as_instructions_and_speed() -> None:
    import asyncio

    with OpenAIServer() as server:

        async def speak(model: str) -> ModelOutput:
            adapter = load_model(f"openai-tts:{model}@{server.base_url}")
            try:
                return await adapter.generate(speech_request("We did it at last", "excited", "nova"))
            finally:
                await adapter.aclose()

        out = asyncio.run(speak("gpt-4o-mini-tts"))
        asyncio.run(speak("tts-1"))
        first, second = server.speech_requests
    assert out.audio is not None and audio_io.load(out.audio)[0].size > 0 and out.text == "We did it at last"
    assert first["voice"] == "nova" and first["speed"] > 1.0 and "excitement" in first["instructions"]
    assert "instructions" not in second  # OpenAI: tts-1 does not take them


# -- scripted mode -------------------------------------------------------------------------------------
def test_scripted_turns_are_rendered_once_and_fingerprinted() -> None:
    [task] = resolve_tasks("demo-long-turn")
    [sample] = list(task.samples())
    assert len(sample.conversation) == 12
    paths = [Path(t.audio.path) for t in sample.conversation]  # type: ignore[union-attr]
    assert all(p.is_file() for p in paths) and len({p.parent for p in paths}) == 1
    info = task.dataset_info()
    mtimes = [p.stat().st_mtime_ns for p in paths]
    [again] = resolve_tasks("demo-long-turn")
    assert again.dataset_info()["fingerprint"] == info["fingerprint"]
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # not rendered a second time
    request = task.build_request(sample, 2, [ModelOutput(text="one"), ModelOutput(text="two")])
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert all(p.type == "audio" for m in request.messages if m.role == "user" for p in m.content)


def test_a_scripted_run_needs_no_simulator_and_records_each_turn(tmp_path: Path) -> None:
    [sample] = list(resolve_tasks("demo-long-turn")[0].samples())
    with OpenAIServer(answer=_remembers) as target:
        config = RunConfig(
            model=f"openai:loopback@{target.base_url}",
            tasks="long-turn:ids=celebration-new-job,judges=long-turn-checks",
            out_dir=str(tmp_path),
            use_cache=False,
        )
        store = evaluate(config, argv=["test"], show_progress=False)
        assert target.hits == 12
    rows = _responses(store.root)
    assert [r["input"]["transcript"] for r in rows] == [t.transcript for t in sample.conversation]
    assert [r["input"]["audio_path"] for r in rows] == [t.audio.path for t in sample.conversation]  # type: ignore[union-attr]
    assert not (store.root / "calls").exists()


# -- the judge -----------------------------------------------------------------------------------------
def test_checks_score_probes_corrections_and_instructions_per_turn(tmp_path: Path) -> None:
    extra = "  instruction: {turn: 2, text: call me Captain, require: [captain]}\n"
    (tmp_path / "s.yaml").write_text(_scenario_yaml(extra=extra), encoding="utf-8")
    text = (tmp_path / "s.yaml").read_text().replace("expect: [pepper]}", "expect: [pepper], forbid: [rex]}")
    (tmp_path / "s.yaml").write_text(text)
    [sample] = list(LongTurn.from_spec(f"scenarios={tmp_path}").samples())
    replies = ["hello"] + ["Yes, Captain."] * 9 + ["Sure."] + ["Captain, your dog Pepper!"]
    score = LongTurnChecks().score(sample, [ModelOutput(text=r) for r in replies])
    rows = score.details["turn_metrics"]
    assert len(rows) == 12 and rows[0]["instruction_held"] is None and rows[1]["instruction_held"] == 1.0
    assert rows[10]["instruction_held"] == 0.0 and rows[11]["memory_recall"] == 1.0
    assert score.metrics["instruction_held"] == pytest.approx(10 / 11)
    assert score.metrics["in_character"] is None  # no role: not applicable, never zero
    wrong = LongTurnChecks().score(
        sample, [ModelOutput(text="Captain")] * 11 + [ModelOutput(text="Pepper or Rex?")]
    )
    assert wrong.metrics["memory_recall"] == 0.0  # a corrected fact repeated


# -- simulated mode through the loopback servers ---------------------------------------------------------
def _twenty_turns(folder: Path) -> Path:
    folder.mkdir()
    affects = ["calm", "worried", "frustrated", "relieved", "excited"]
    turns = "\n".join(f"    - {affects[i % 5]}: This is my line {i}. My cat is Miso." for i in range(N_TURNS))
    (folder / "twenty.yaml").write_text(
        "- id: twenty\n  category: long-task\n  persona: a patient tester\n  goal: twenty turns\n"
        f"  facts: [the cat is Miso]\n  turns:\n{turns}\n  probes:\n    - {{turn: 20, expect: [miso]}}\n"
        "  instruction: {turn: 1, text: name the cat every time, require: [miso]}\n",
        encoding="utf-8",
    )
    return folder


def _simulator_line(body: dict) -> str:
    """The loopback simulator says its cue's line number in its own words."""
    cue = body["messages"][-1]["content"]
    number = cue.split("my line ")[1].split(".")[0]
    return f"Simulated me, line {number}, about Miso."


def _run(
    target: OpenAIServer,
    sim: OpenAIServer,
    scenarios: Path,
    out: Path,
    resume: Path | None = None,
    judges: str = "long-turn-checks",
):
    spec = (
        f"long-turn:scenarios={scenarios},user=openai:sim@{sim.base_url},"
        f"tts=openai-tts:gpt-4o-mini-tts@{sim.base_url},speak=true,judges={judges}"
    )
    config = RunConfig(
        model=f"openai:loopback@{target.base_url}",
        tasks=spec,
        out_dir=str(out),
        use_cache=False,
        max_attempts=1,
    )
    return evaluate(config, resume_dir=resume, argv=["test"], show_progress=False)


def _responses(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "responses.jsonl").read_text().splitlines()]


def _remembers(body: dict) -> str:
    return "I remember Miso, of course."


def test_twenty_simulated_turns_end_to_end(tmp_path: Path) -> None:
    scenarios = _twenty_turns(tmp_path / "scenarios")
    with (
        OpenAIServer(answer=_remembers, audio_seconds=0.3) as target,
        OpenAIServer(model="sim", answer=_simulator_line) as sim,
    ):
        store = _run(target, sim, scenarios, tmp_path / "runs")
        bodies = [r.body for r in target.requests]
    rows = _responses(store.root)
    assert [r["turn"] for r in rows] == list(range(N_TURNS))
    for k, row in enumerate(rows):
        assert row["input"]["transcript"] == f"Simulated me, line {k}, about Miso."
        assert (store.root / row["input"]["audio_path"]).is_file()
        assert row["output"]["text"] == "I remember Miso, of course."
        assert (store.root / row["output"]["audio"]["path"]).is_file()  # the model spoke
    assert len(sim.speech_requests) == N_TURNS and sim.hits == N_TURNS
    # the model hears every user turn so far as audio, with its own replies between them
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["system"] + ["user", "assistant"] * (N_TURNS - 1) + ["user"]
    heard = [p for m in last if m["role"] == "user" for p in m["content"]]
    assert len(heard) == N_TURNS and all(p["type"] == "input_audio" for p in heard)
    assert bodies[-1]["modalities"] == ["text", "audio"]
    # the simulator saw the conversation with the roles swapped, its own earlier words included
    sim_last = sim.requests[-1].body["messages"]
    assert sim_last[2] == {"role": "assistant", "content": "Simulated me, line 0, about Miso."}
    assert sim_last[3]["content"].startswith("The assistant said: I remember Miso")
    assert "Now you feel worried. Say this in your own words: This is my line 1." in sim_last[3]["content"]
    summary = json.loads((store.root / "summary.json").read_text())
    checks = summary["tasks"]["long-turn"]["judges"]["long-turn-checks"]
    assert checks["metrics"]["memory_recall"]["value"] == 1.0
    by_turn = checks["by_turn_metrics"]
    assert len(by_turn["instruction_held"]) == N_TURNS and list(by_turn["memory_recall"]) == [
        str(N_TURNS - 1)
    ]
    # re-judging the finished run reads the conversation as played (user audio from the run)
    before = [r.score.metrics for r in store.scores()]
    assert [r.score.metrics for r in rescore(store.root, judges=["long-turn-checks"]).scores()] == before


def test_resume_repeats_no_finished_user_or_model_turn(tmp_path: Path) -> None:
    """The model server refuses turn 8 (a permanent error ends the conversation there); the
    simulator refuses turn 14 of the resumed session. Each resume asks only what is missing."""
    scenarios = _twenty_turns(tmp_path / "scenarios")
    with (
        OpenAIServer(answer=_remembers) as target,
        OpenAIServer(model="sim", answer=_simulator_line) as sim,
    ):
        target.add_rule(FailureRule(status=400, nth=frozenset({8})))
        first = _run(target, sim, scenarios, tmp_path / "runs")
        rows = _responses(first.root)
        assert rows[-1]["turn"] == 7 and rows[-1]["output"]["error"]["kind"] == "http_400"
        assert rows[-1]["input"]["audio_path"]  # what the user said at the failed turn is kept
        assert (target.hits, sim.hits, len(sim.speech_requests)) == (8, 8, 8)

        sim.add_rule(FailureRule(status=400, nth=frozenset({14})))  # the 14th simulator request: turn 13
        second = _run(target, sim, scenarios, tmp_path / "runs", resume=first.root)
        assert second.root == first.root
        assert (target.hits, sim.hits, len(sim.speech_requests)) == (8 + 6, 8 + 6, 8 + 5)
        failed = [r for r in _responses(first.root) if r["turn"] == 13][-1]
        assert failed["output"]["error"]["kind"] == "user_turn" and not failed["input"].get("audio_path")
        assert "user simulator openai:sim@" in failed["output"]["error"]["message"]

        _run(target, sim, scenarios, tmp_path / "runs", resume=first.root)
        assert (target.hits, sim.hits, len(sim.speech_requests)) == (14 + 7, 14 + 7, 13 + 7)
        # no model request was asked twice but the one refused
        repeated = [h for h, n in target.hash_counts().items() if n > 1]
        assert len(repeated) == 1
    rows = {r["turn"]: r for r in _responses(first.root)}  # finalize keeps the latest per turn
    assert sorted(rows) == list(range(N_TURNS)) and all(
        r["output"].get("error") is None for r in rows.values()
    )
    assert [rows[k]["input"]["transcript"] for k in range(N_TURNS)] == [
        f"Simulated me, line {k}, about Miso." for k in range(N_TURNS)
    ]


def test_the_simulators_stage_directions_and_labels_are_not_spoken() -> None:
    from evalkit.tasks.long_turn.simulator import spoken_words

    said = ModelOutput(text='User: "(smiles) I got the job! *laughs* [excited] It starts Monday."')
    assert spoken_words(said) == "I got the job! It starts Monday."
