"""The report's turn strip and trajectory thumbnail (``evalkit.reports.turns``) from judge details
shaped as the prosody, emotion, voice and answer-match judges write them: values land at their
turn, events mark their turn, turns are numbered from 1, and the SVG is small and escaped."""

from __future__ import annotations

from evalkit.records import ErrorInfo, ModelOutput, ResponseRecord, Score
from evalkit.reports.turns import export_record, sample_score, strip_columns, trajectory_svg, turn_strip


def responses(n: int) -> list[ResponseRecord]:
    return [
        ResponseRecord(
            task="t",
            sample_id="c",
            sample_index=0,
            turn=k,
            request_hash=str(k),
            output=ModelOutput(text=f"a{k}"),
        )
        for k in range(n)
    ]


def judged() -> list[Score]:
    return [
        Score(
            judge="numeric",
            metrics={"accuracy": 0.0},
            passed=False,
            details={
                "turns": [
                    {"turn": 0, "correct": True},
                    {"turn": 1, "correct": True},
                    {"turn": 2, "correct": False},
                ]
            },
        ),
        Score(
            judge="prosody",
            details={
                "turn_features": [
                    {"turn": k, "f0_median_hz": 180.0 + 10 * k, "pitch_sd_st": 2.0, "pause_count": k}
                    for k in range(3)
                ]
            },
        ),
        Score(
            judge="emotion",
            details={
                "per_turn": [{"turn": k, "arousal": 0.1 * k} for k in range(3)],
                "events": [{"turn": 2, "kind": "jump", "cue": "pitch_level</b>"}],
            },
        ),
        Score(
            judge="voice",
            details={
                "turn_metrics": [
                    {"turn": 0, "voice_similarity": None},
                    {"turn": 1, "voice_similarity": 0.42},
                ],
                "events": [{"turn": 1, "kind": "voice_switch"}],
            },
        ),
        Score(
            judge="broken",
            error=ErrorInfo(kind="judge_error", message="x"),
            details={"events": [{"turn": 0}]},
        ),
    ]


def test_each_judges_per_turn_numbers_land_at_their_turn() -> None:
    strip = turn_strip(responses(3), judged())
    assert [c["number"] for c in strip] == [1, 2, 3] and [c["turn"] for c in strip] == [0, 1, 2]
    assert [c["correct"] for c in strip] == [True, True, False]
    assert [c["values"]["F0 Hz"] for c in strip] == [180.0, 190.0, 200.0]
    assert [c["values"]["pauses"] for c in strip] == [0, 1, 2]
    assert [c["values"].get("voice sim.") for c in strip] == [None, 0.42, None]  # None is no value
    assert [c["events"] for c in strip] == [
        [],
        ["voice_switch"],
        ["jump (pitch_level</b>)"],
    ]  # errored judge: none
    assert strip_columns(strip) == ["F0 Hz", "pitch SD st", "pauses", "arousal", "voice sim."]


def test_trajectory_is_a_small_escaped_svg_with_marks_for_correctness_and_events() -> None:
    svg = trajectory_svg(turn_strip(responses(3), judged()))
    assert svg is not None and svg.startswith("<svg") and len(svg) < 4000
    assert svg.count("<circle") == 3 and svg.count('class="event"') == 2
    assert svg.count("<polyline") == 5
    assert "pitch_level</b>" not in svg and "pitch_level&lt;/b&gt;" in svg
    assert trajectory_svg(turn_strip(responses(1), [])) is None  # one turn: no trajectory


def test_score_and_export_record() -> None:
    scores = judged()
    assert sample_score(scores, ("numeric", "accuracy")) == 0.0
    assert sample_score(scores, ("broken", "accuracy")) is None and sample_score(scores, None) is None
    row = {"task": "t", "id": "c", "status": "incorrect", "score": 0.0, "meta": {}, "records": responses(2)}
    record = export_record({**row, "scores": scores})
    assert [t["turn"] for t in record["turns"]] == [1, 2] and record["turns"][1]["answer"] == "a1"
    assert [s["judge"] for s in record["scores"]] == ["numeric", "prosody", "emotion", "voice", "broken"]


def test_per_turn_lines_are_split_by_group_with_cis_and_count_turns_from_one() -> None:
    from evalkit.records import ScoreRecord
    from evalkit.reports.charts import ChartData
    from evalkit.run_files import Summary

    summary = Summary.model_validate(
        {"tasks": {"t": {"judges": {"emotion": {"groups": {"variant": {"calm": {}, "angry": {}}}}}}}}
    )
    records = [
        ScoreRecord(
            task="t",
            sample_id=f"c{i}",
            sample_index=i,
            meta={"variant": variant},
            score=Score(
                judge="emotion",
                details={"per_turn": [{"turn": k, "arousal": base + 0.1 * k + 0.01 * i} for k in range(3)]},
            ),
        )
        for i, (variant, base) in enumerate([("calm", 0.0), ("calm", 0.0), ("angry", 1.0), ("angry", 1.0)])
    ]
    [lines] = ChartData.of(summary, [], records).arousal_series().values()
    by_name = {s.name: s for s in lines}
    assert set(by_name) == {"model arousal · angry", "model arousal · calm"}  # never one pooled line
    calm = by_name["model arousal · calm"]
    assert calm.x == [1, 2, 3] and calm.n == [2, 2, 2]
    assert calm.y[0] < 0.1 < by_name["model arousal · angry"].y[0]
    assert all(
        lo is not None and lo <= y <= hi for lo, y, hi in zip(calm.ci_low, calm.y, calm.ci_high, strict=True)
    )


def test_each_spoken_turn_gets_its_pitch_contour_thumbnail_from_the_prosody_judge() -> None:
    from evalkit.reports.turns import contour_svg

    rising = [None, None, *[float(v) for v in range(10)], None, 5.0, 6.0]
    scores = [
        Score(
            judge="prosody",
            details={
                "turn_features": [{"turn": 0, "contour_st": rising}, {"turn": 1, "contour_st": [None] * 8}]
            },
        )
    ]
    strip = turn_strip(responses(2), scores)
    svg = strip[0]["contour"]
    assert svg.startswith('<svg class="contour"') and "9.0 st range" in svg and len(svg) < 1200
    assert svg.count("<polyline") == 2  # broken at the unvoiced bin
    first = svg.split('points="')[1].split('"')[0].split()
    ys = [float(p.split(",")[1]) for p in first]
    assert ys == sorted(ys, reverse=True)  # a rising pitch goes up the thumbnail (smaller y)
    assert strip[1]["contour"] is None  # unvoiced: no thumbnail, never a flat line
    assert contour_svg(["<b>", 1.0]) is None  # only numbers are drawn


def test_prosody_judge_writes_a_contour_that_follows_the_pitch() -> None:
    """On speech resynthesised +6 st (``evalkit.testing.speech_validation``), the contour moves
    up by 6 st in every voiced bin both renders share, within tracking noise."""
    import numpy as np
    import pytest

    pytest.importorskip("pyworld")
    from evalkit import audio as audio_io
    from evalkit.judges.base import load_judge
    from evalkit.records import AudioRef, Sample, Turn
    from evalkit.testing import speech_validation as sv

    text = sv.SENTENCES[1]
    clips = [sv.render(text, sv.Change(shift_st=shift)) for shift in (0.0, 6.0)]
    sample = Sample(id="c", task="t", conversation=[Turn(role="user", text="hi")] * 2)
    outputs = [ModelOutput(text=text, audio=AudioRef(data=audio_io.wav_bytes(c, sv.RATE))) for c in clips]
    score = load_judge("prosody").score(sample, outputs)
    assert score.error is None, score.error
    base, up = (np.array(r["contour_st"], dtype=float) for r in score.details["turn_features"])
    both = ~np.isnan(base) & ~np.isnan(up)
    assert both.sum() >= 12, (base, up)
    assert np.median(up[both] - base[both]) == pytest.approx(6.0, abs=0.5)
