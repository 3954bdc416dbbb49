"""Affect change across turns, cue by cue: jumps, gradual drift, and whether the model follows the user.

Used by the ``emotion`` judge (``judges.emotion``); pure functions of per-turn cue values, so they
are tested by hand as well as on rendered speech (tests/test_affect_change.py).

Cues (``affect_cues``), each read from the shared per-clip analysis (``judges.speech_features``):

=============== ============= ================================================================
cue             unit          what
=============== ============= ================================================================
``pitch_level`` st re 100 Hz  median F0 of the voiced frames
``pitch_range`` st            5th-95th percentile F0 range of the clip
``loudness``    dB            mean frame level over speech (dBFS)
``tempo``       syllables/s   syllable nuclei per second of speech
=============== ============= ================================================================

*Why per cue.* The previous detector averaged five scaled cues into one arousal number; a cue that
moved alone (a +6 st pitch jump, +10 dB) was diluted by the ones that did not, and two cues (pitch
and energy spread) barely move between renders at all. Here every cue has its own threshold, and
the composite sits on top: a turn change is a jump when ANY cue's ``|change|`` exceeds its own
threshold; ``jump_ratio`` = max over cues of ``|change| / threshold`` (> 1 = jump) is the size.

*Calibration* (``JUMP_THRESHOLDS``; reproduce with ``benchmarks/affect_calibration.py``): the
thresholds are the 99.5th percentile of ``|change|`` between two turns of the SAME speaker and
the same, unmanipulated delivery, i.e. the within-speaker turn-to-turn variation of natural speech,
rounded up. Data: 40 different English sentences (5-16 words) rendered by espeak-ng at its default
settings (voices en-us, en-gb and en-us+f3; 120 clips), every ordered pair of two different
sentences of one voice (4680 pairs). See the ``CALIBRATION`` table for the measured percentiles.
Because a turn change is a jump when any of four cues crosses its 99.5th percentile, the expected
false-jump rate on natural speech is at most ~2% per turn change (measured on the validation
renders in tests/test_affect_change.py).

*Drift* (``cue_drifts``): a cue whose least-squares trend over >= 3 turns moves it by more than
its jump threshold from the first to the last turn, while no single turn change of that cue is a
jump: a slow slide, reported apart from jumps. The event's ``turn`` is the first turn at which the
trend line is more than one threshold away from its value at the first turn.

*Responsiveness* (``responsiveness``): a user affect change is a user turn change with a cue
beyond its threshold (same thresholds: they are within-speaker noise, whoever speaks). Reply k
answers user turn k; the model *follows* a user change at turn k when one of the model's cues
changes beyond its threshold in the same direction (up or down, the user's largest cue's sign:
every cue rises with arousal) at reply k or k+1 (the reply to the changed turn, or the next:
one turn of lag). Verdicts: ``follows`` (at least half of the user's changes followed),
``ignores`` (the user changed, the model followed fewer than half), ``steady`` (neither the user
nor the model changed beyond noise), ``unprompted`` (the user steady, the model jumped or drifted).

What it cannot detect: valence (a happy and an angry voice can share every cue; that needs an
emotion model, ``emotion-ser``), whether a change is appropriate to the *words*, changes carried by
voice quality (breathiness, tension) rather than these four cues, and changes smaller than
within-speaker noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.judges.speech_features import ProsodyFeatures

#: cue -> unit
CUE_UNITS: dict[str, str] = {
    "pitch_level": "st",
    "pitch_range": "st",
    "loudness": "dB",
    "tempo": "syllables/s",
}
#: cue -> the |turn-to-turn change| above which it is a jump (calibrated, module docstring)
JUMP_THRESHOLDS: dict[str, float] = {"pitch_level": 1.9, "pitch_range": 7.0, "loudness": 4.1, "tempo": 2.3}
#: the calibration figures behind ``JUMP_THRESHOLDS`` (espeak-ng, 3 voices x 40 sentences, 4680
#: same-voice pairs; ``benchmarks/affect_calibration.py``): cue -> percentile -> |change|
CALIBRATION: dict[str, dict[str, float]] = {
    "pitch_level": {"p50": 0.48, "p95": 1.33, "p99": 1.75, "p99.5": 1.83, "max": 2.34},
    "pitch_range": {"p50": 0.97, "p95": 3.95, "p99": 6.14, "p99.5": 6.90, "max": 8.05},
    "loudness": {"p50": 1.05, "p95": 2.89, "p99": 3.65, "p99.5": 4.04, "max": 5.08},
    "tempo": {"p50": 0.53, "p95": 1.56, "p99": 2.11, "p99.5": 2.27, "max": 2.90},
}
#: a user change counts as followed when the model moves at the reply to it or the next one
RESPONSE_LAGS = (0, 1)
#: "follows" needs at least this share of the user's changes followed
FOLLOW_SHARE = 0.5

Cues = dict[str, float | None]


def affect_cues(features: ProsodyFeatures) -> Cues:
    """The four affect cues of one clip (``None`` where not measurable, e.g. no voiced frame)."""
    level = None if features.f0_median_hz is None else 12.0 * float(np.log2(features.f0_median_hz / 100.0))
    return {
        "pitch_level": level,
        "pitch_range": features.pitch_range_st,
        "loudness": features.energy_mean_db,
        "tempo": features.syllable_rate_sps,
    }


def cue_changes(turns: list[Cues]) -> list[Cues]:
    """Per consecutive turn pair (k-1 -> k, listed for k = 1..n-1): each cue's signed change."""
    return [
        {c: None if a[c] is None or b[c] is None else float(b[c] - a[c]) for c in JUMP_THRESHOLDS}  # type: ignore[operator]
        for a, b in zip(turns, turns[1:], strict=False)
    ]


def jump_ratio(change: Cues) -> float | None:
    """The composite: the largest ``|change| / threshold`` over the measurable cues (> 1: a jump)."""
    ratios = [abs(v) / JUMP_THRESHOLDS[c] for c, v in change.items() if v is not None]
    return max(ratios) if ratios else None


def _direction(change: Cues) -> int:
    """+1 / -1: the sign of the cue that moved most relative to its threshold (0: nothing measured)."""
    measured = [(abs(v) / JUMP_THRESHOLDS[c], v) for c, v in change.items() if v is not None]
    return 0 if not measured else int(np.sign(max(measured)[1]))


def cue_jumps(turns: list[Cues]) -> list[dict[str, Any]]:
    """One event per (turn, cue) whose change from the previous turn exceeds the cue's threshold."""
    return [
        {"turn": k, "kind": "jump", "cue": c, "change": round(v, 3), "threshold": JUMP_THRESHOLDS[c]}
        for k, change in enumerate(cue_changes(turns), start=1)
        for c, v in change.items()
        if v is not None and abs(v) > JUMP_THRESHOLDS[c]
    ]


def cue_drifts(turns: list[Cues], jumps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per cue whose trend over the turns moves more than its threshold with no jump."""
    jumped = {e["cue"] for e in jumps}
    events = []
    for cue, threshold in JUMP_THRESHOLDS.items():
        points = [(k, t[cue]) for k, t in enumerate(turns) if t[cue] is not None]
        if cue in jumped or len(points) < 3:
            continue
        x = np.array([k for k, _ in points], dtype=float)
        slope, _ = np.polyfit(x, np.array([v for _, v in points], dtype=float), 1)
        if abs(slope) * (x[-1] - x[0]) <= threshold:
            continue
        first = next(int(k) for k in x if abs(slope) * (k - x[0]) > threshold)
        events.append(
            {
                "turn": first,
                "kind": "drift",
                "cue": cue,
                "from_turn": int(x[0]),
                "to_turn": int(x[-1]),
                "slope": round(float(slope), 3),
                "threshold": threshold,
            }
        )
    return events


def _moves_with(change: Cues, direction: int) -> bool:
    """Some cue changed beyond its threshold in ``direction``."""
    return any(v is not None and direction * v > JUMP_THRESHOLDS[c] for c, v in change.items())


def responsiveness(model: list[Cues], user: list[Cues]) -> dict[str, Any]:
    """Whether the model's affect follows the user's (module docstring): the user's change
    events, which of them the model followed, the share followed and the verdict."""
    model_changes, user_changes = cue_changes(model), cue_changes(user)
    user_events = []
    for k, change in enumerate(user_changes, start=1):
        if not _moves_with(change, 1) and not _moves_with(change, -1):
            continue
        direction = _direction(change)
        followed = any(
            _moves_with(model_changes[k - 1 + lag], direction)
            for lag in RESPONSE_LAGS
            if k - 1 + lag < len(model_changes)
        )
        cue = max((abs(v) / JUMP_THRESHOLDS[c], c) for c, v in change.items() if v is not None)[1]
        user_events.append({"turn": k, "cue": cue, "direction": direction, "followed": followed})
    model_moved = bool(cue_jumps(model)) or bool(cue_drifts(model, cue_jumps(model)))
    n_followed = sum(e["followed"] for e in user_events)
    share = n_followed / len(user_events) if user_events else None
    if share is None:
        verdict = "unprompted" if model_moved else "steady"
    else:
        verdict = "follows" if share >= FOLLOW_SHARE else "ignores"
    return {"user_changes": user_events, "share_followed": share, "verdict": verdict}


def justified(jump_turn: int, direction: int, user_changes: list[dict[str, Any]]) -> bool:
    """A model jump at ``jump_turn`` is justified by a user change in the same direction at that
    turn or up to the largest response lag before it."""
    return any(
        e["direction"] == direction and 0 <= jump_turn - e["turn"] <= max(RESPONSE_LAGS) for e in user_changes
    )


def jump_direction(change: Cues) -> int:
    """The direction of a turn change, for ``justified``."""
    return _direction(change)
