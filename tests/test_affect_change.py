"""Affect change per cue, drift and responsiveness (``judges.affect`` through the ``emotion``
judge), on the validation renders of ``evalkit.testing.speech_validation``: speech whose changes
are known by construction (Piper's voice resynthesised with WORLD: +6 st, 2x range, +10 dB, 1.3x
tempo, 3/4 of all four, a linear drift, a user who becomes excited). Every case's verdict is
asserted on its own; the false-jump rate over repeated steady renders is measured, printed and
bounded. The hand-made cue tables pin the rules themselves.
"""

from __future__ import annotations

import pytest

from evalkit.judges.affect import JUMP_THRESHOLDS, cue_drifts, cue_jumps, responsiveness
from evalkit.judges.base import load_judge
from evalkit.records import AudioRef, ModelOutput, Sample, Score, Turn

N_TURNS = 8
#: steady renders for the false-jump rate, and the bound it must stay under (per turn change)
FALSE_JUMP_RENDERS = 20
FALSE_JUMP_TURNS = 4
FALSE_JUMP_BOUND = 0.05


def cues(**values: float) -> dict[str, float | None]:
    """One turn's cues: the given ones, the rest at a neutral level."""
    return {"pitch_level": 0.0, "pitch_range": 10.0, "loudness": -30.0, "tempo": 5.0} | values


# -- the rules by hand ----------------------------------------------------------------------------
def test_one_cue_beyond_its_threshold_is_a_jump_of_that_cue():
    turns = [cues(), cues(), cues(pitch_level=JUMP_THRESHOLDS["pitch_level"] + 0.1), cues()]
    assert [(e["turn"], e["cue"]) for e in cue_jumps(turns)] == [(2, "pitch_level"), (3, "pitch_level")]
    below = [cues(), cues(loudness=-30.0 + JUMP_THRESHOLDS["loudness"] - 0.1)]
    assert cue_jumps(below) == []


def test_a_slow_slide_is_drift_not_jump_and_a_step_is_not_drift():
    step = JUMP_THRESHOLDS["pitch_level"] * 0.6
    slide = [cues(pitch_level=k * step) for k in range(5)]
    assert cue_jumps(slide) == []
    (drift,) = cue_drifts(slide)
    assert drift["cue"] == "pitch_level" and drift["kind"] == "drift"
    assert (drift["from_turn"], drift["to_turn"]) == (0, 4)
    assert drift["turn"] == 2  # the trend is first more than one threshold from turn 0 at turn 2
    jumped = [cues(), cues(), cues(pitch_level=5.0), cues(pitch_level=5.0)]
    assert cue_drifts(jumped) == []


def test_a_persisting_step_below_the_turn_threshold_is_a_sustained_jump():
    from evalkit.judges.affect import TURN_SD, affect_events, cue_shifts, shift_critical_z

    step = JUMP_THRESHOLDS["tempo"] * 0.8  # no turn-to-turn change reaches the threshold
    noise = [0.1, -0.1, 0.05, -0.05, 0.1, -0.1, 0.05, -0.05]
    turns = [cues(tempo=5.0 + n + (step if k >= 4 else 0.0)) for k, n in enumerate(noise)]
    assert cue_jumps(turns) == []
    (shift,) = cue_shifts(turns)
    assert (shift["turn"], shift["cue"], shift["evidence"]) == (4, "tempo", "sustained")
    assert shift["z"] > shift_critical_z(8) and shift["threshold"] == round(shift_critical_z(8), 2)
    jumps, drifts = affect_events(turns)
    assert [(e["turn"], e["cue"]) for e in jumps] == [(4, "tempo")] and drifts == []
    # the same step at half the size is within what noise of TURN_SD allows over 4 + 4 turns
    small = TURN_SD["tempo"] * shift_critical_z(8) * 0.9 * (0.5**0.5)
    quiet = [cues(tempo=5.0 + (small if k >= 4 else 0.0)) for k in range(8)]
    assert cue_shifts(quiet) == []
    # a ramp is a drift, and its shift is not reported as a jump as well
    ramp = [cues(tempo=5.0 + 0.3 * k) for k in range(8)]
    jumps, drifts = affect_events(ramp)
    assert jumps == [] and [d["cue"] for d in drifts] == ["tempo"]


def test_responsiveness_verdicts_by_hand():
    calm, excited = cues(), cues(loudness=-20.0)
    user = [calm, calm, excited, excited]
    assert responsiveness([calm] * 4, user)["verdict"] == "ignores"
    assert responsiveness([calm, calm, calm, excited], user)["verdict"] == "follows"  # one turn late
    assert responsiveness([calm, calm, calm, calm], [calm] * 4)["verdict"] == "steady"
    assert responsiveness([calm, calm, excited, excited], [calm] * 4)["verdict"] == "unprompted"
    # moving the other way is not following
    assert responsiveness([calm, calm, cues(loudness=-40.0), calm], user)["verdict"] == "ignores"


# -- on rendered speech ---------------------------------------------------------------------------
def _wav(samples, rate: int) -> AudioRef:
    from evalkit import audio as audio_io

    return AudioRef(data=audio_io.wav_bytes(samples, rate))


def judge_conversation(model_clips, texts, rate, user_clips=None, user_texts=None) -> Score:
    """The emotion judge on one conversation of rendered replies (and user turns, when given)."""
    turns = [
        Turn(
            role="user",
            transcript=None if user_texts is None else user_texts[k],
            audio=None if user_clips is None else _wav(user_clips[k], rate),
        )
        for k in range(len(model_clips))
    ]
    sample = Sample(id="c", task="t", conversation=turns)
    outputs = [ModelOutput(text=t, audio=_wav(x, rate)) for x, t in zip(model_clips, texts, strict=True)]
    score = load_judge("emotion").score(sample, outputs)
    assert score.error is None, score.error
    return score


@pytest.fixture(scope="session")
def sv():
    pytest.importorskip("pyworld")
    from evalkit.testing import speech_validation

    return speech_validation


@pytest.fixture(scope="session")
def scored(sv) -> dict[str, Score]:
    """Each conversation case of the validation set, rendered once and judged."""
    cases = ["steady", "jump_pitch_level", "jump_pitch_range", "jump_loudness", "jump_tempo"]
    cases += ["jump_partial", "drift"]
    out = {}
    for case in cases:
        conv = sv.conversation(case, seed=7, n_turns=N_TURNS)
        out[case] = judge_conversation(conv.clips, conv.texts, conv.rate)
    return out


def kinds(score: Score, kind: str) -> list[tuple[int, str]]:
    return [(e["turn"], e["cue"]) for e in score.details["events"] if e["kind"] == kind]


#: measured limits (seed 7): the 2x range is measured as +4.9 st against a natural turn that was
#: already wide, well inside the sentence-to-sentence variation of the 5-95% range (threshold
#: 9.5 st, its p99.5), and its sustained step is +1.1 st (the tracker loses the widest excursions);
#: 1.3x tempo moves 5.75 -> 6.81 syllables/s (+1.06, threshold 1.8) and its sustained step is
#: +0.81 (z 2.56, critical 3.22). On 10 other seeds the turn + sustained tests catch 7/10 (tempo)
#: and 4/10 (range): ``benchmarks/affect_calibration.py --shift``. Strict: when a better cue
#: measurement catches them, these start passing and the marks must go.
SINGLE_CUE_LIMITS = {
    "pitch_range": "2x range: +4.9 st turn change (threshold 9.5), +1.1 st sustained step",
    "tempo": "1.3x tempo: +1.06 syllables/s turn change (1.8), sustained step z 2.56 < 3.22",
}


@pytest.mark.parametrize(
    "cue",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=SINGLE_CUE_LIMITS[c]))
        if c in SINGLE_CUE_LIMITS
        else c
        for c in ("pitch_level", "pitch_range", "loudness", "tempo")
    ],
)
def test_each_cue_jump_alone_is_flagged_with_that_cue_at_its_turn(scored, cue):
    score = scored[f"jump_{cue}"]
    turn = N_TURNS // 2
    jumps = kinds(score, "jump")
    assert [t for t, _ in jumps] == [turn] * len(jumps) and jumps, jumps  # at the change turn only
    assert (turn, cue) in jumps, jumps
    # the manipulated cue is the one that moved most (a +6 st resynthesis also moves loudness a little)
    assert score.details["changes"][turn - 1]["principal_cue"] == cue
    assert score.metrics["affect_jumps"] == 1


def test_a_three_quarter_jump_is_flagged(scored):
    jumps = kinds(scored["jump_partial"], "jump")
    assert {t for t, _ in jumps} == {N_TURNS // 2}, jumps
    assert scored["jump_partial"].metrics["affect_jump_max"] > 1.0


def test_steady_speech_has_no_jump_and_no_drift(scored):
    steady = scored["steady"]
    assert steady.details["events"] == [], steady.details["events"]
    assert steady.metrics["affect_jumps"] == 0 and steady.metrics["affect_jump_max"] < 1.0


def test_drift_is_reported_as_drift_not_as_jump(scored):
    drift = scored["drift"]
    drifting = {c for _, c in kinds(drift, "drift")}
    assert {"pitch_level", "loudness"} <= drifting, drift.details["events"]
    # no step of a drifting cue is a jump (pitch range, too noisy per sentence to fit a line, may
    # show a jump of its own: seed 7 has one at turn 6, +8.3 st as the range widens)
    jumped = {c for _, c in kinds(drift, "jump")}
    assert not jumped & {"pitch_level", "loudness", "tempo"}, drift.details["events"]
    assert jumped <= {"pitch_range"}
    assert all(0 < t < N_TURNS for t, _ in kinds(drift, "drift"))


@pytest.mark.parametrize(
    ("case", "verdict"), [("steady", "steady"), ("ignores_user", "ignores"), ("follows_user", "follows")]
)
def test_responsiveness_verdicts_on_dialogues(sv, case, verdict):
    d = sv.dialogue(case, seed=3, n_turns=N_TURNS)
    # Dialogue carries no texts, so tempo is unmeasured here; pitch and loudness carry the verdict
    score = judge_conversation(d.model, [None] * N_TURNS, d.rate, d.user, [None] * N_TURNS)
    assert score.details["responsiveness_verdict"] == verdict, score.details["events"]
    if verdict == "ignores":
        assert score.metrics["ignored_user_changes"] >= 1 and score.passed is False
        assert ("ignored_user", d.change_turn) in {(e["kind"], e["turn"]) for e in score.details["events"]}
    if verdict == "follows":
        assert score.metrics["responsiveness"] >= 0.5 and score.metrics["unjustified_jumps"] == 0


def test_false_jump_rate_over_repeated_steady_renders(sv):
    changes = jumps = 0
    for seed in range(500, 500 + FALSE_JUMP_RENDERS):
        conv = sv.conversation("steady", seed=seed, n_turns=FALSE_JUMP_TURNS)
        score = judge_conversation(conv.clips, conv.texts, conv.rate)
        changes += FALSE_JUMP_TURNS - 1
        jumps += int(score.metrics["affect_jumps"])
    rate = jumps / changes
    print(f"false-jump rate: {jumps}/{changes} turn changes = {rate:.3f} (bound {FALSE_JUMP_BOUND})")
    assert rate <= FALSE_JUMP_BOUND


# -- summary.json ---------------------------------------------------------------------------------
def test_summary_has_per_turn_speech_metrics_and_each_conversations_events():
    from evalkit.records import ScoreRecord
    from evalkit.run_files import JudgeSummary
    from evalkit.summary import summarise_judge

    def record(i: int, jump_at: int | None) -> ScoreRecord:
        rows = [{"turn": k, "jump_ratio": 2.0 if k == jump_at else 0.2 + 0.01 * i} for k in range(3)]
        events = (
            [] if jump_at is None else [{"turn": jump_at, "kind": "jump", "cue": "loudness", "change": 9.0}]
        )
        score = Score(judge="emotion", metrics={}, details={"turn_metrics": rows, "events": events})
        return ScoreRecord(task="t", sample_id=f"s{i}", sample_index=i, score=score)

    block = summarise_judge(
        [record(0, 2), record(1, None), record(2, 2), record(3, 1)], [], 0, ("t", "emotion")
    )
    summary = JudgeSummary.model_validate(block)  # the typed summary.json reads it back
    by_turn = summary.by_turn_metrics["jump_ratio"]
    assert sorted(by_turn) == ["0", "1", "2"] and by_turn["0"].n == 4
    assert by_turn["2"].value == pytest.approx((2.0 + 0.21 + 2.0 + 0.23) / 4)
    assert by_turn["2"].ci_low <= by_turn["2"].value <= by_turn["2"].ci_high
    assert summary.events == {
        "s0": [{"turn": 2, "kind": "jump", "cue": "loudness"}],
        "s2": [{"turn": 2, "kind": "jump", "cue": "loudness"}],
        "s3": [{"turn": 1, "kind": "jump", "cue": "loudness"}],
    }
    assert summary.event_counts == {"jump": {"1": 1, "2": 2}}
