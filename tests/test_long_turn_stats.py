"""Long-turn measurement (``evalkit.turn_stats``, ``evalkit.feel``): turn buckets and the decay
statistic on hand-made per-turn scores with a known slope, a planted decay on real audio (Piper +
WORLD renders whose replies grow flatter turn by turn, scored by the prosody judge) against its
steady twin, compare's decay regressions through run directories, not-applicable speech metrics
for a text-only model, and the report / leaderboard sections that show them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalkit.compare import compare_runs
from evalkit.judges.base import load_judge, recorded_turn_metric_specs
from evalkit.judging import JudgeExecutor
from evalkit.records import AudioRef, ModelOutput, Sample, Score, ScoreRecord, Turn
from evalkit.run_files import Summary
from evalkit.store import RunStore
from evalkit.summary import summarise_run
from evalkit.turn_stats import BUCKETS, Track, bucket_of, bucket_summaries, decay_summary, two_stage_ci

N_TURNS = 20


def track(values: list[float]) -> Track:
    return Track.of(list(enumerate(values)))


def linear(slope: float, rng: np.random.Generator, noise: float = 0.2, n: int = N_TURNS) -> list[float]:
    """One conversation's per-turn values: 3 + slope * turn number + gaussian noise."""
    return [3.0 + slope * (k + 1) + float(rng.normal(0, noise)) for k in range(n)]


# -- buckets and decay by hand --------------------------------------------------------------------
def test_buckets_count_turns_from_one():
    assert [bucket_of(t) for t in (1, 5, 6, 10, 11, 20, 21, 40)] == [
        "1-5", "1-5", "6-10", "6-10", "11-20", "11-20", "21+", "21+",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        bucket_of(0)
    # values equal to the turn number: each conversation's bucket mean is the mean turn of the bucket
    summaries = bucket_summaries([track([float(k + 1) for k in range(25)])] * 3, seed=0)
    assert {b: s["value"] for b, s in summaries.items()} == {
        "1-5": 3.0,
        "6-10": 8.0,
        "11-20": 15.5,
        "21+": 23.0,
    }
    assert all(s["n"] == 3 for s in summaries.values())
    short = bucket_summaries([track([1.0, 2.0])], seed=0)
    assert list(short) == [BUCKETS[0][2]] and short["1-5"]["ci_low"] is None  # one conversation


def test_known_slope_is_recovered_and_its_ci_contains_it():
    rng = np.random.default_rng(1)
    tracks = [track(linear(-0.05, rng)) for _ in range(8)]
    decay = decay_summary(tracks, "higher", "MOS", 0, "t", "j", "m")
    slope = decay["slope"]
    assert slope["ci_low"] < -0.05 < slope["ci_high"] < 0
    assert abs(slope["value"] + 0.05) < 0.01 and slope["n"] == 8
    assert decay["verdict"] == "decays" and decay["unit"] == "MOS/turn"
    change = decay["bucket_change"]  # turns 11-20 (mean 15.5) minus 1-5 (mean 3): 12.5 turns of slope
    assert change["last"] == ["11-20"] and change["ci_low"] < -0.05 * 12.5 < change["ci_high"] < 0
    # the same fall of a lower-is-better metric is an improvement; of a descriptive one a trend
    assert decay_summary(tracks, "lower", "", 0, "m")["verdict"] == "improves"
    assert decay_summary(tracks, "descriptive", "", 0, "m")["verdict"] == "trend"
    assert decay_summary(tracks, "higher", "MOS", 0, "t", "j", "m") == decay  # seeded


def test_steady_conversations_have_a_ci_containing_zero():
    rng = np.random.default_rng(2)
    for n_conversations in (1, 2, 8):
        tracks = [track(linear(0.0, rng)) for _ in range(n_conversations)]
        decay = decay_summary(tracks, "higher", "", 0, "steady", str(n_conversations))
        assert decay["slope"]["ci_low"] < 0 < decay["slope"]["ci_high"], n_conversations
        assert decay["verdict"] == "steady"


def test_steady_false_decay_rate_is_small_even_with_two_conversations():
    """The two-stage bootstrap's point: two steady conversations must not look significant half
    the time (a conversation-level bootstrap of two values would)."""
    rng = np.random.default_rng(3)
    trials = 60
    flagged = sum(
        decay_summary([track(linear(0.0, rng)) for _ in range(2)], "higher", "", seed)["verdict"] != "steady"
        for seed in range(trials)
    )
    print(f"steady pairs flagged: {flagged}/{trials}")
    assert flagged / trials <= 0.1


def test_one_conversation_still_gets_an_interval_and_short_ones_none():
    rng = np.random.default_rng(4)
    one = decay_summary([track(linear(-0.1, rng))], "higher", "", 0)
    assert one["slope"]["ci_high"] < 0 and one["verdict"] == "decays"
    assert two_stage_ci(np.empty((0, 5)), seed=0) == (None, None)
    two_turns = decay_summary([track([1.0, 2.0])], "higher", "", 0)
    assert two_turns["slope"]["n"] == 0 and two_turns["slope"]["value"] is None
    assert two_turns["verdict"] == "steady"


def listener_record(index: int, values: list[float], task: str = "chat") -> ScoreRecord:
    rows = [{"turn": k, "listener_immersion": v} for k, v in enumerate(values)]
    metrics = {"listener_immersion": float(np.mean(values))}
    score = Score(judge="listener", metrics=metrics, details={"turn_metrics": rows})
    return ScoreRecord(task=task, sample_id=f"c{index}", sample_index=index, score=score)


def test_summary_json_holds_buckets_decay_and_feel_typed():
    rng = np.random.default_rng(5)
    records = [listener_record(i, linear(-0.05, rng)) for i in range(6)]
    out = summarise_run([{"name": "chat", "judges": ["listener"]}], records, [], seed=0)
    summary = Summary.model_validate(json.loads(json.dumps(out)))
    judge = summary.tasks["chat"].judges["listener"]
    assert set(judge.turn_buckets["listener_immersion"]) == {"1-5", "6-10", "11-20"}
    decay = judge.decay["listener_immersion"]
    assert decay.verdict == "decays" and decay.direction == "higher" and decay.n_conversations == 6
    assert judge.turn_metrics_declared["listener_immersion"]["direction"] == "higher"
    # by turn index, as before (0-based keys)
    assert set(judge.by_turn_metrics["listener_immersion"]) == {str(k) for k in range(N_TURNS)}
    feel = summary.tasks["chat"].feel
    assert feel is not None and feel.n == 6
    parts = {p["part"]: p for p in feel.parts}
    assert parts["immersion"]["metric"] == "listener_immersion"
    raw = judge.metrics["listener_immersion"].value
    assert feel.value == pytest.approx((raw - 1) / 4)  # the only valued part, normalised from 1-5
    assert "absent" in parts["voice consistency"]
    assert "not_applicable" in parts["prosodic naturalness"]  # listener did not write it here


# -- planted decay on real audio ----------------------------------------------------------------------
def _wav(samples: np.ndarray, rate: int) -> AudioRef:
    from evalkit import audio as audio_io

    return AudioRef(data=audio_io.wav_bytes(samples, rate))


def prosody_score(conv: Any) -> Score:
    """The prosody judge on one rendered 20-turn conversation (text-only user turns)."""
    sample = Sample(id="c", task="t", conversation=[Turn(role="user", text="go on") for _ in conv.clips])
    outputs = [
        ModelOutput(text=t, audio=_wav(x, conv.rate)) for x, t in zip(conv.clips, conv.texts, strict=True)
    ]
    score = load_judge("prosody").score(sample, outputs)
    assert score.error is None
    return score


@pytest.fixture(scope="module")
def rendered() -> dict[str, Score]:
    """Two renders of 20 long replies: flatter turn by turn (F0 range x1 -> x0.25), and its
    steady twin (same sentences and jitter)."""
    from evalkit.testing import speech_validation as sv

    return {
        "flattening": prosody_score(sv.flattening(seed=0, n_turns=N_TURNS)),
        "steady": prosody_score(sv.conversation("steady", seed=0, n_turns=N_TURNS)),
    }


def summarise_prosody(score: Score, task: str = "long") -> Summary:
    rec = ScoreRecord(task=task, sample_id="c0", sample_index=0, score=score)
    return Summary.model_validate(summarise_run([{"name": task, "judges": ["prosody"]}], [rec], [], seed=0))


def test_planted_flattening_is_detected_with_the_right_sign_and_steady_is_not(rendered):
    flat = summarise_prosody(rendered["flattening"]).tasks["long"].judges["prosody"].decay
    steady = summarise_prosody(rendered["steady"]).tasks["long"].judges["prosody"].decay
    for metric, sign in (("pitch_sd_st", -1), ("pitch_range_st", -1), ("monotony_index", 1)):
        print(metric, flat[metric].slope, steady[metric].slope)
        assert sign * flat[metric].slope.value > 0 and flat[metric].verdict == "decays", metric
        assert steady[metric].verdict == "steady", metric
        assert flat[metric].unit.endswith("/turn")
    assert flat["pitch_sd_st"].bucket_change.value < 0  # turns 11-20 flatter than turns 1-5
    written = {m for row in rendered["flattening"].details["turn_metrics"] for m in row} - {"turn"}
    assert written <= set(recorded_turn_metric_specs({}, "long", "prosody"))  # every one declared
    assert flat["syllable_rate_sps"].verdict in ("steady", "trend")  # descriptive: never a decay


# -- compare -------------------------------------------------------------------------------------------
def write_run(
    root: Path, task: str, judge: str | list[str], scores: list[Score], judges: dict | None = None
) -> Path:
    """A finished run directory of ``scores`` (one conversation each, any of the task's judges)
    through ``finalize``; ``judges``: other tasks, each one judge and one metric's values."""
    from evalkit.finalize import finalize

    store = RunStore(root)
    root.mkdir(parents=True)
    names = [judge] if isinstance(judge, str) else judge
    tasks = [{"name": task, "class": "evalkit.tasks.base.Task", "judges": names, "primary_metric": "x"}]
    for name, extra in (judges or {}).items():
        tasks.append(
            {**tasks[0], "name": name, "judges": [extra["judge"]], "primary_metric": extra["metric"]}
        )
    dataset = {"id": "synthetic/long", "revision": "v1", "fingerprint": "f" * 64}
    store.write_manifest(
        {
            "run_id": root.name,
            "model": {"spec": f"openai:{root.name}"},
            "tasks": [{**t, "dataset": dataset} for t in tasks],
            "seed": 0,
            "status": "completed",
        }
    )
    store.open_streams()
    for index, score in enumerate(scores):
        at = index // len(names)  # scores of several judges come sample by sample
        store.append_score(ScoreRecord(task=task, sample_id=f"s{at}", sample_index=at, score=score))
    for name, extra in (judges or {}).items():
        for index, value in enumerate(extra["values"]):
            score = Score(judge=extra["judge"], metrics={extra["metric"]: value})
            store.append_score(ScoreRecord(task=name, sample_id=f"q{index}", sample_index=index, score=score))
    store.close_streams()
    finalize(store)
    return root


def by_name(cmp) -> dict[str, Any]:
    return {f"{m.judge}/{m.metric}": m for m in cmp.metrics}


def test_compare_flags_a_planted_decay_increase_on_real_audio(rendered, tmp_path):
    base = write_run(tmp_path / "base", "long", "prosody", [rendered["steady"]])
    cand = write_run(tmp_path / "cand", "long", "prosody", [rendered["flattening"]])
    cmp = compare_runs(base, cand)
    row = by_name(cmp)["prosody/pitch_sd_st:decay"]
    print(row.note)
    assert row.verdict == "worse" and row.diff < 0 and row.ci_high < 0
    assert row in cmp.regressions and cmp.exit_code == 1
    assert "cand" in row.note and "(decays)" in row.note
    assert by_name(cmp)["prosody/syllable_rate_sps:decay"].verdict != "worse"  # descriptive
    back = compare_runs(cand, base)  # the flattening as the baseline: the candidate recovered
    assert by_name(back)["prosody/pitch_sd_st:decay"].verdict == "better"
    assert not [m for m in back.regressions if m.metric.endswith(":decay")]


def test_compare_does_not_flag_a_steady_pair_and_flags_a_planted_one(tmp_path):
    rng = np.random.default_rng(6)

    def scores(slope: float) -> list[Score]:
        return [listener_record(i, linear(slope, rng)).score for i in range(10)]

    base = write_run(tmp_path / "base", "chat", "listener", scores(0.0))
    steady = write_run(tmp_path / "steady", "chat", "listener", scores(0.0))
    decaying = write_run(tmp_path / "decaying", "chat", "listener", scores(-0.04))
    quiet = compare_runs(base, steady)
    assert by_name(quiet)["listener/listener_immersion:decay"].verdict == "no significant change"
    assert quiet.exit_code == 0
    loud = compare_runs(base, decaying)
    row = by_name(loud)["listener/listener_immersion:decay"]
    assert row.verdict == "worse" and row.counts.shared == 10 and loud.exit_code == 1
    assert "listener/listener_immersion:decay" in loud.verdicts()["chat"]


# -- not applicable ------------------------------------------------------------------------------------
def test_a_text_only_model_gets_not_applicable_speech_metrics_never_zero(tmp_path):
    judge, voice = load_judge("prosody"), load_judge("voice")
    sample = Sample(
        id="c", task="t", conversation=[Turn(role="user", text="hi"), Turn(role="user", text="and?")]
    )
    outputs = [ModelOutput(text="hello"), ModelOutput(text="more")]
    executor = JudgeExecutor({"t": {"prosody": judge, "voice": voice}}, workers=1)
    score, voice_score = (asyncio.run(executor.score(j, sample, outputs)) for j in (judge, voice))
    assert score.error is None and score.metrics == {}
    assert "no speech" in score.details["not_applicable"]
    run = write_run(tmp_path / "text", "long", ["prosody", "voice"], [score, voice_score] * 2)
    summary = RunStore(run).summary()
    block = summary.tasks["long"].judges["prosody"]
    assert block.metrics == {} and block.n_not_applicable == 2 and block.n_judge_errors == 0
    assert block.coverage is None  # nothing the judge applies to: not 0% covered
    assert set(block.not_applicable) == {s.name for s in judge.metrics}
    assert all("no speech" in why for why in block.not_applicable.values())
    feel = summary.tasks["long"].feel
    assert feel is not None and feel.value is None and "no speech" in (feel.not_applicable or "")
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "not applicable (not zero)" in page and "Conversational feel not applicable" in page


# -- report and leaderboard ---------------------------------------------------------------------------
def test_report_and_leaderboard_show_decay_and_the_reasoning_vs_feel_picture(tmp_path):
    from evalkit.leaderboard.site import build_site

    rng = np.random.default_rng(7)
    runs = []
    for name, slope, accuracy in (("rlvr", -0.05, 0.9), ("rlhf", 0.0, 0.85)):
        scores = [listener_record(i, linear(slope, rng)).score for i in range(6)]
        values = [float(v) for v in rng.random(40) < accuracy]
        extra = {"mmau-mini": {"judge": "choice", "metric": "accuracy", "values": values}}
        runs.append(write_run(tmp_path / name, "chat", "listener", scores, judges=extra))
    page = (runs[0] / "report.html").read_text(encoding="utf-8")
    assert 'class="decay"' in page and 'data-verdict="decays"' in page
    assert 'id="feel"' in page and 'id="chart-feel"' in page and "Reasoning vs. feel" in page
    site = build_site(runs, tmp_path / "site").parent
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="t-long-turn"' in index and 'id="feel-picture"' in index
    data = json.loads((site / "data" / "leaderboard.json").read_text(encoding="utf-8"))
    table = data["long_turn"]
    assert [r["model"] for r in table["rows"]] and table["decay_columns"] == ["listener/listener_immersion"]
    rows = {r["model"].split(":")[-1]: r for r in table["rows"]}
    assert rows["rlvr"]["decay"]["listener/listener_immersion"]["verdict"] == "decays"
    assert rows["rlhf"]["decay"]["listener/listener_immersion"]["verdict"] == "steady"
    points = {p["model"].split(":")[-1]: p for p in table["points"]}
    assert set(points["rlvr"]["correctness"]) == {"mmau-mini"}
    assert points["rlvr"]["feel"]["value"] is not None
