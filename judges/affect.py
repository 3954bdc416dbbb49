"""Affect change across turns, cue by cue: jumps, gradual drift, and whether the model follows the
user.

Used by the ``emotion`` judge (``judges.emotion``); pure functions of per-turn cue values, so they
are tested by hand as well as on rendered speech (tests/test_affect_change.py).

Cues (``affect_cues``), each read from the shared per-clip analysis (``judges.speech_features``):

=============== ============= ================================================================
cue             unit          what
=============== ============= ================================================================
``pitch_level`` st re 100 Hz  median F0 of the voiced frames
``pitch_range`` st            5th-95th percentile F0 range of the clip
``loudness``    dB            RMS level over speech time (dBFS)
``tempo``       syllables/s   the text's syllables per second of speech (needs the text)
=============== ============= ================================================================

*Why per cue.* The previous detector averaged five scaled cues into one arousal number; a cue that
moved alone (a +6 st pitch jump, +10 dB) was diluted by the ones that did not, and two cues (pitch
and energy spread) barely move between renders at all. Here every cue has its own threshold, and
the composite sits on top: a turn change is a jump when ANY cue's ``|change|`` exceeds its own
threshold; ``jump_ratio`` = max over cues of ``|change| / threshold`` (> 1 = jump) is the size.

*Calibration* (``JUMP_THRESHOLDS``; reproduce with ``benchmarks/affect_calibration.py``): the
thresholds are the 99.5th percentile of ``|change|`` between two turns of the SAME speaker and the
same, unmanipulated delivery (the within-speaker turn-to-turn variation of natural speech), rounded
up to 0.1. Data: the "steady" validation conversations of ``evalkit.testing.speech_validation``
(Piper's joe voice, WORLD resynthesis with no manipulation, a different sentence and the small
steady-speaker jitter each turn) and the user turns of its steady dialogues (the female voice),
seeds 100-115, 8 turns each: 896 same-speaker pairs per cue (448 for tempo, which needs text). The
figures are in ``CALIBRATION``: p99.5 = 1.80 st (pitch level), 9.47 st (pitch range), 1.06 dB
(loudness), 1.53 syllables/s (tempo). Those renders are level-normalised, so a second set without
normalisation, espeak-ng (20 sentences x 3 voices, 570 pairs, ``CALIBRATION_ESPEAK``), gives 1.59
st, 3.90 st, 2.18 dB, 1.73 syllables/s; each threshold is the larger p99.5 of the two. With four
cues each at its 99.5th percentile the expected false-jump rate is at most ~2% per turn change;
tests/test_affect_change.py measures it on 20 other steady renders and bounds it. Jump sizes of the
validation set for scale: +6 st, 2x range (about +5-8 st, under the 9.5 st threshold), +10 dB,
1.3x tempo (about +1.1-1.6 syllables/s, under the 1.8 threshold): a pitch-range change alone of
2x or a tempo change alone of 1.3x is within sentence-to-sentence variation and goes unflagged
(the tests pin both as known misses; the sustained test below catches some); together with other
cues they are caught. Scale-free
measures do not rescue them: as log2 ratios between turns (2x range = 1.0, 1.3x tempo = 0.38) the
p99.5 on the same 16 seeds is 1.23 (16-84% F0 spread), 1.34 (10-90%), 1.61 (5-95%) for the range
and 0.43 (text syllables per second of speech), 0.87 (per second voiced), 0.39 (letters per second
of speech) for the tempo: the sentence moves each as much as the change does.

*Sustained shifts* (``cue_shifts``): a change that persists is tested on the turns' means as well:
the largest standardised step between the turns before and after any split (two turns a side at
least), against the Monte Carlo 99.5% critical value of that maximum for the conversation's
length (``TURN_SD``, ``SHIFT_CRITICAL_Z``; ``benchmarks/affect_calibration.py --shift``). On 10
renders (seeds 700-709, 8 turns) a 1.3x tempo alone is caught at its turn on 4/10 by the turn test
and 7/10 with the sustained test, a 2x pitch range alone on 1/10 and 4/10; steady renders show no
jump on 10/10 either way. The validation case of the tests (seed 7) stays a known miss for both:
its tempo step is +0.81 syllables/s (z 2.56 < 3.22), its measured range step +1.1 st, because the
YIN track loses the widest excursions as unvoiced (Harvest measures the 2x range as 1.6-2.1x the
16-84% spread, this tracker 1.2-2.4x).

*Drift* (``cue_drifts``): a cue whose least-squares trend over >= 3 turns moves it by more than its
jump threshold from the first to the last turn, and for which that line fits the turns at least as
well as a single step does: a slow slide, reported apart from jumps (its steps are not counted as
jumps even when noise pushes one over the threshold). The event's ``turn`` is the first turn at
which the trend line is more than one threshold away from its value at the first turn.

*Responsiveness* (``responsiveness``): a user affect change is a user turn change with a cue beyond
its threshold (same thresholds: they are within-speaker noise, whoever speaks). Reply k answers
user turn k; the model *follows* a user change at turn k when, at reply k or k+1 (the reply to the
changed turn, or the next: one turn of lag), one of the model's cues differs from its value at
reply k-1 (the reply before the change) by more than its threshold, in the user's direction (up or
down, the sign of the user's largest cue change: every cue rises with arousal). Verdicts:
``follows`` (at least half of the user's changes followed), ``ignores`` (the user changed, the
model followed fewer than half), ``steady`` (neither the user nor the model changed beyond noise),
``unprompted`` (the user steady, the model jumped or drifted).

What it cannot detect: valence (a happy and an angry voice can share every cue; that needs an
emotion model, ``emotion-ser``), whether a change is appropriate to the *words*, changes carried by
voice quality (breathiness, tension) rather than these four cues, and changes smaller than
within-speaker noise.
"""

from __future__ import annotations

import re
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
JUMP_THRESHOLDS: dict[str, float] = {"pitch_level": 1.9, "pitch_range": 9.5, "loudness": 2.2, "tempo": 1.8}
#: the calibration figures behind ``JUMP_THRESHOLDS`` (``benchmarks/affect_calibration.py 16``:
#: 16 steady validation conversations x 8 turns, two voices, 896 same-speaker pairs; tempo only
#: on the 448 pairs with text): cue -> percentile -> |change| in the cue's unit
CALIBRATION: dict[str, dict[str, float]] = {
    "pitch_level": {"p50": 0.54, "p95": 1.40, "p99": 1.69, "p99.5": 1.80, "max": 2.01},
    "pitch_range": {"p50": 1.99, "p95": 6.44, "p99": 9.35, "p99.5": 9.47, "max": 9.59},
    "loudness": {"p50": 0.35, "p95": 0.89, "p99": 1.03, "p99.5": 1.06, "max": 1.18},
    "tempo": {"p50": 0.42, "p95": 1.25, "p99": 1.47, "p99.5": 1.53, "max": 1.68},
}
#: the same on espeak-ng (``--espeak``: 20 sentences x 3 voices, not level-normalised, 570 pairs):
#: the renders above are normalised to one level, so their loudness spread is only their jitter
CALIBRATION_ESPEAK: dict[str, dict[str, float]] = {
    "pitch_level": {"p50": 0.45, "p95": 1.24, "p99": 1.54, "p99.5": 1.59, "max": 1.71},
    "pitch_range": {"p50": 1.46, "p95": 3.27, "p99": 3.77, "p99.5": 3.90, "max": 4.30},
    "loudness": {"p50": 0.42, "p95": 1.52, "p99": 1.89, "p99.5": 2.18, "max": 2.41},
    "tempo": {"p50": 0.45, "p95": 1.28, "p99": 1.69, "p99.5": 1.73, "max": 2.09},
}
#: tempo is measured only over at least this much speech: on shorter clips the VAD's edges (a
#: window or two, 32-64 ms a segment) and one syllable more or less move the rate by 5-10%
MIN_TEMPO_SPEECH_S = 2.0
#: a user change counts as followed when the model moves at the reply to it or the next one
RESPONSE_LAGS = (0, 1)
#: "follows" needs at least this share of the user's changes followed
FOLLOW_SHARE = 0.5

Cues = dict[str, float | None]


def text_syllables(text: str) -> int:
    """Syllables of English ``text`` by spelling: vowel groups per word (a silent final e not
    counted), at least one per word. Crude per word, but the same sentence is counted the same
    way every time, and that is what a tempo change needs."""
    count = 0
    for word in re.findall(r"[a-z]+", text.lower()):
        groups = len(re.findall(r"[aeiouy]+", word))
        if word.endswith("e") and not word.endswith(("le", "ee")) and groups > 1:
            groups -= 1
        count += max(1, groups)
    return count


def affect_cues(features: ProsodyFeatures, samples: np.ndarray, rate: int, text: str | None) -> Cues:
    """The four affect cues of one clip (``None`` where not measurable: no voiced frame, no speech,
    no text for the tempo).

    Loudness is the RMS level over speech time (power averaged, then dB), not the mean of frame
    dB: the mean of dB follows how many quiet frames (closures, breaths) a sentence has and varied
    5 dB between natural sentences, the power level 1.4 dB. Tempo is the text's syllables per
    second of speech (articulation rate, pauses excluded): the acoustic syllable-nucleus count
    varied by more between sentences (p99 1.9 syllables/s) than a 1.3x faster delivery moves it.
    Tempo needs ``MIN_TEMPO_SPEECH_S`` of speech."""
    speech_s = features.speech_ratio * features.duration_s
    level = None if features.f0_median_hz is None else 12.0 * float(np.log2(features.f0_median_hz / 100.0))
    loudness = None
    if speech_s > 0:
        power = float(np.sum(np.square(samples, dtype=np.float64))) / (speech_s * rate)
        loudness = 10.0 * float(np.log10(max(power, 1e-12)))
    syllables = text_syllables(text) if text else 0
    return {
        "pitch_level": level,
        "pitch_range": features.pitch_range_st,
        "loudness": loudness,
        "tempo": syllables / speech_s if syllables and speech_s >= MIN_TEMPO_SPEECH_S else None,
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
        {
            "turn": k,
            "kind": "jump",
            "cue": c,
            "evidence": "turn",
            "change": round(v, 3),
            "threshold": JUMP_THRESHOLDS[c],
        }
        for k, change in enumerate(cue_changes(turns), start=1)
        for c, v in change.items()
        if v is not None and abs(v) > JUMP_THRESHOLDS[c]
    ]


#: cue -> within-speaker standard deviation of one turn's value around its conversation's mean
#: (pooled over the 48 steady calibration conversations of ``benchmarks/affect_calibration.py
#: --shift``: seeds 100-131 of the model's voice and 100-115 of the user's, 8 turns each)
TURN_SD: dict[str, float] = {"pitch_level": 0.52, "pitch_range": 2.26, "loudness": 0.33, "tempo": 0.45}
#: two-sided 99.5% critical value of the largest standardised step over all splits with at least
#: ``SHIFT_MIN_SIDE`` turns a side, for n turns of independent normal noise (Monte Carlo, 40 000
#: conversations per n, seed 1, ``benchmarks/affect_calibration.py --shift``); interpolated between
#: the listed n and held beyond the last. On the calibration conversations (turn order permuted 50
#: times each) the empirical 99.5th percentile at n = 8 is lower than the table's 3.22: 2.85 (pitch
#: level), 3.24 (range), 2.80 (loudness), 2.89 (tempo), so the table is the conservative bound.
SHIFT_CRITICAL_Z: dict[int, float] = {
    4: 2.79,
    5: 3.08,
    6: 3.10,
    8: 3.22,
    10: 3.29,
    12: 3.35,
    16: 3.45,
    20: 3.51,
    25: 3.56,
    30: 3.59,
}
#: a sustained shift needs this many measured turns on each side of it
SHIFT_MIN_SIDE = 2


def shift_critical_z(n: int) -> float:
    """``SHIFT_CRITICAL_Z`` at ``n`` measured turns (linear between listed n, the last beyond)."""
    ns = sorted(SHIFT_CRITICAL_Z)
    return float(np.interp(n, ns, [SHIFT_CRITICAL_Z[k] for k in ns]))


def cue_shifts(turns: list[Cues]) -> list[dict[str, Any]]:
    """One event per cue whose level after some turn differs from its level before it by more
    than noise allows: the largest standardised step ``z = (mean after - mean before) /
    (TURN_SD * sqrt(1/n_before + 1/n_after))`` over every split with ``SHIFT_MIN_SIDE`` turns a
    side, beyond ``shift_critical_z(n)``.

    Why: a single turn-to-turn change must beat the noise of two sentences, so a change that
    persists but is smaller than that (a 1.3x faster delivery kept for the rest of the
    conversation) is missed; averaging the turns on each side divides the noise of the pair test
    by sqrt(n/2) at a split in the middle (by 2 at 8 turns). The event is a ``jump`` (an abrupt
    change that stays) at the first turn after the split, with ``evidence: "sustained"``;
    ``cue_drifts`` tells a slide from a step, and ``affect_events`` drops the shifts of drifting cues."""
    events = []
    for cue, sd in TURN_SD.items():
        points = [(k, t[cue]) for k, t in enumerate(turns) if t[cue] is not None]
        n = len(points)
        if n < 2 * SHIFT_MIN_SIDE:
            continue
        y = np.array([v for _, v in points], dtype=float)
        best_z, best_split = 0.0, 0
        for split in range(SHIFT_MIN_SIDE, n - SHIFT_MIN_SIDE + 1):
            step = y[split:].mean() - y[:split].mean()
            z = float(step / (sd * np.sqrt(1.0 / split + 1.0 / (n - split))))
            if abs(z) > abs(best_z):
                best_z, best_split = z, split
        critical = shift_critical_z(n)
        if abs(best_z) > critical:
            step = float(y[best_split:].mean() - y[:best_split].mean())
            events.append(
                {
                    "turn": points[best_split][0],
                    "kind": "jump",
                    "cue": cue,
                    "evidence": "sustained",
                    "change": round(step, 3),
                    "z": round(best_z, 2),
                    "threshold": round(critical, 2),
                }
            )
    return events


def _rss_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, residual sum of squares) of the least-squares line through the points."""
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(np.sum((y - (slope * x + intercept)) ** 2))


def _rss_step(y: np.ndarray) -> float:
    """Residual sum of squares of the best single step (two levels, split anywhere)."""
    return min(
        float(np.sum((y[:k] - y[:k].mean()) ** 2) + np.sum((y[k:] - y[k:].mean()) ** 2))
        for k in range(1, len(y))
    )


def cue_drifts(turns: list[Cues]) -> list[dict[str, Any]]:
    """One event per cue that slides: over >= 3 turns its least-squares line moves it by more than
    its threshold from the first to the last turn, and the line fits the turns at least as well as
    one step does (a ramp, not a jump; a drift's steps can cross the threshold with noise)."""
    events = []
    for cue, threshold in JUMP_THRESHOLDS.items():
        points = [(k, t[cue]) for k, t in enumerate(turns) if t[cue] is not None]
        if len(points) < 3:
            continue
        x = np.array([k for k, _ in points], dtype=float)
        y = np.array([v for _, v in points], dtype=float)
        slope, rss_line = _rss_line(x, y)
        if abs(slope) * (x[-1] - x[0]) <= threshold or rss_line > _rss_step(y):
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


def affect_events(turns: list[Cues]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(jumps, drifts) of one speaker's turns: a drifting cue's steps are part of its drift, not
    jumps of their own."""
    drifts = cue_drifts(turns)
    drifting = {e["cue"] for e in drifts}
    jumps = [e for e in cue_jumps(turns) if e["cue"] not in drifting]
    seen = {(e["turn"], e["cue"]) for e in jumps}
    shifts = [e for e in cue_shifts(turns) if e["cue"] not in drifting and (e["turn"], e["cue"]) not in seen]
    return sorted([*jumps, *shifts], key=lambda e: (e["turn"], e["cue"])), drifts


def _moves_with(change: Cues, direction: int) -> bool:
    """Some cue changed beyond its threshold in ``direction``."""
    return any(v is not None and direction * v > JUMP_THRESHOLDS[c] for c, v in change.items())


def responsiveness(model: list[Cues], user: list[Cues]) -> dict[str, Any]:
    """Whether the model's affect follows the user's (module docstring): the user's change
    events, which of them the model followed, the share followed and the verdict."""
    user_events = []
    for k, change in enumerate(cue_changes(user), start=1):
        if not _moves_with(change, 1) and not _moves_with(change, -1):
            continue
        direction = _direction(change)
        # the model's replies after the user's change, against its reply before it
        followed = any(
            _moves_with(cue_changes([model[k - 1], model[k + lag]])[0], direction)
            for lag in RESPONSE_LAGS
            if k + lag < len(model)
        )
        cue = max((abs(v) / JUMP_THRESHOLDS[c], c) for c, v in change.items() if v is not None)[1]
        user_events.append({"turn": k, "cue": cue, "direction": direction, "followed": followed})
    model_moved = any(affect_events(model))
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


def principal_cue(change: Cues) -> str | None:
    """The cue that moved most relative to its threshold (None: nothing measured)."""
    measured = [(abs(v) / JUMP_THRESHOLDS[c], c) for c, v in change.items() if v is not None]
    return max(measured)[1] if measured else None


def jump_direction(change: Cues) -> int:
    """The direction of a turn change, for ``justified``."""
    return _direction(change)
