"""The ``prosody`` judge: how the model's speech sounds across a conversation (pitch movement,
loudness dynamics, rate, pauses), and how that drifts from turn to turn.

It measures and does not grade: there is no "correct" prosody, so its rows carry no ``correct``
field. Per-turn rows go to ``details["turn_features"]`` rather than ``details["turns"]``, because
``evalkit.summary`` reads ``details["turns"]`` as per-turn correctness (``row["correct"]``) for its
by-turn breakdown and would fail on feature rows; a few of them (``PER_TURN``) also go to
``details["turn_metrics"]``, which summary.json averages by turn index over conversations.
The user's speech is measured too
(``details["user_turns"]``) so that judges and reports can relate the model's delivery to the
user's (e.g. an agitated user answered in a flat voice).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.judges.base import Judge, MetricSpec
from evalkit.judges.speech_features import ANALYSIS_RATE_HZ, ProsodyFeatures, analyse, extract_features
from evalkit.records import AudioRef, ModelOutput, Sample, Score
from evalkit.registry import register_judge

#: per-clip features averaged over the model's turns into sample-level metrics
AVERAGED = (
    "f0_median_hz",
    "pitch_sd_st",
    "pitch_range_st",
    "energy_sd_db",
    "syllable_rate_sps",
    "pause_count",
    "mean_pause_s",
    "longest_pause_s",
    "speech_ratio",
    "monotony_index",
)


#: per-clip features summary.json shows by answered-turn index (how delivery changes over a conversation)
PER_TURN = ("pitch_sd_st", "pitch_range_st", "energy_sd_db", "syllable_rate_sps", "monotony_index")


def _feature(name: str, unit: str, lo: float | None, hi: float | None, description: str) -> MetricSpec:
    """A prosody feature: it describes how the model speaks, neither better nor worse by itself."""
    return MetricSpec(name=name, direction="descriptive", unit=unit, range=(lo, hi), description=description)


#: the judge's metrics: the averaged per-clip features, then the two across-turn ones
PROSODY_METRICS = (
    _feature("f0_median_hz", "Hz", 0.0, None, "median F0 of voiced frames, mean over turns"),
    _feature("pitch_sd_st", "st", 0.0, None, "F0 standard deviation re. the clip's median, mean over turns"),
    _feature("pitch_range_st", "st", 0.0, None, "5th-95th percentile F0 range, mean over turns"),
    _feature("energy_sd_db", "dB", 0.0, None, "frame loudness sd over speech, mean over turns"),
    _feature("syllable_rate_sps", "syllables/s", 0.0, None, "syllable nuclei per second of speech"),
    _feature("pause_count", "pauses", 0.0, None, "pauses between speech segments, mean over turns"),
    _feature("mean_pause_s", "s", 0.0, None, "mean pause length, mean over turns"),
    _feature("longest_pause_s", "s", 0.0, None, "longest pause, mean over turns"),
    _feature("speech_ratio", "", 0.0, 1.0, "speech time / clip duration, mean over turns"),
    _feature("monotony_index", "", 0.0, 1.0, "1 / (1 + pitch_sd_st): 1 for a perfectly flat voice"),
    _feature("f0_drift_st_per_turn", "st/turn", None, None, "slope of the turns' median F0 over turn index"),
    _feature("rate_cv", "", 0.0, None, "coefficient of variation of the syllable rate across turns"),
)


def _turn_feature(name: str, unit: str, direction: str, description: str) -> MetricSpec:
    """A per-turn feature as the long-turn statistics read it: its direction is which way a change
    over a conversation's turns is good (``evalkit.turn_stats``), not a grade of one reply."""
    return MetricSpec(name=name, direction=direction, unit=unit, range=(0.0, None), description=description)  # type: ignore[arg-type]


#: the per-turn features (``PER_TURN``) over the turns: a voice that grows flatter (less pitch and
#: loudness movement, more monotony) is the long-turn decay of prosodic naturalness; rate is neither
PROSODY_TURN_METRICS = (
    _turn_feature("pitch_sd_st", "st", "higher", "F0 sd of one reply; falling over the turns: flattens"),
    _turn_feature("pitch_range_st", "st", "higher", "F0 5th-95th range of one reply; falling: flattens"),
    _turn_feature("energy_sd_db", "dB", "higher", "loudness sd of one reply; falling: the delivery flattens"),
    _turn_feature("syllable_rate_sps", "syllables/s", "descriptive", "speaking rate of one reply"),
    MetricSpec(
        name="monotony_index",
        direction="lower",
        range=(0.0, 1.0),
        description="1 / (1 + pitch_sd_st) of one reply; rising over the turns: the voice flattens",
    ),
)


def measure(ref: AudioRef) -> ProsodyFeatures:
    """Features of one clip (raises ``AudioError`` for unreadable audio)."""
    samples, rate = audio_io.load(ref, sample_rate=ANALYSIS_RATE_HZ)
    return extract_features(samples, rate)


def measure_turn(ref: AudioRef) -> dict[str, Any]:
    """A model turn's features and its F0 contour thumbnail (``ClipAnalysis.contour_st``, which
    the report draws at the turn), from one load and one analysis."""
    samples, rate = audio_io.load(ref, sample_rate=ANALYSIS_RATE_HZ)
    analysis = analyse(samples, rate)
    return {**analysis.features.as_dict(), "contour_st": analysis.contour_st()}


def _mean(values: list[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def f0_drift_st_per_turn(turns: list[int], f0_medians: list[float | None]) -> float | None:
    """Least-squares slope of the per-turn median F0, in semitones per turn (positive = the voice
    rises over the conversation); None with fewer than two turns that have a pitch."""
    points = [(t, f) for t, f in zip(turns, f0_medians, strict=True) if f is not None]
    if len(points) < 2:
        return None
    x = np.array([t for t, _ in points], dtype=float)
    st = 12.0 * np.log2(np.array([f for _, f in points]) / points[0][1])
    return float(np.polyfit(x, st, 1)[0])


def coefficient_of_variation(values: list[float | None]) -> float | None:
    """std / mean across turns (population std); None with fewer than two values or a zero mean."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if len(present) < 2 or present.mean() == 0:
        return None
    return float(present.std() / present.mean())


@register_judge("prosody")
class ProsodyJudge(Judge):
    """Prosody of the model's speech: pitch variation, energy dynamics, rate, pauses, drift."""

    name = "prosody"
    metrics = PROSODY_METRICS
    turn_metric_specs = PROSODY_TURN_METRICS
    needs_speech = True
    execution = "process"

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        rows: list[dict[str, Any]] = []
        for k, output in enumerate(outputs):
            if output.audio is None:
                raise ValueError(
                    f"turn {k}: the model returned no speech; the prosody judge needs the model's audio "
                    "(use a speech-output model, or drop this judge from the task)"
                )
            rows.append({"turn": k, **measure_turn(output.audio)})
        if not rows:
            raise ValueError("no answered turns to measure")
        user_rows = [
            {"user_turn": i, "conversation_index": index, **measure(turn.audio).as_dict()}
            for i, (index, turn) in enumerate(
                (index, turn)
                for index, turn in enumerate(sample.conversation)
                if turn.role == "user" and turn.audio is not None
            )
        ]
        metrics: dict[str, float | None] = {name: _mean([r[name] for r in rows]) for name in AVERAGED}
        metrics["f0_drift_st_per_turn"] = f0_drift_st_per_turn(
            [r["turn"] for r in rows], [r["f0_median_hz"] for r in rows]
        )
        metrics["rate_cv"] = coefficient_of_variation([r["syllable_rate_sps"] for r in rows])
        sd, mono = metrics["pitch_sd_st"], metrics["monotony_index"]
        explanation = f"{len(rows)} turn(s) of model speech; pitch sd " + (
            f"{sd:.2f} st, monotony {mono:.2f}" if sd is not None and mono is not None else "n/a (unvoiced)"
        )
        return Score(
            judge=self.name,
            metrics=metrics,
            explanation=explanation,
            details={
                "turn_features": rows,
                "user_turns": user_rows,
                # by turn index over conversations in summary.json (``by_turn_metrics``)
                "turn_metrics": [{"turn": r["turn"], **{m: r[m] for m in PER_TURN}} for r in rows],
            },
        )
