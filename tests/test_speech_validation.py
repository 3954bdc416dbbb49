"""The speech validation set (evalkit/testing/speech_validation.py) and the acoustic analysis on it.

The renders are a Piper voice resynthesised with WORLD, so each clip's pitch, loudness and tempo are
known by construction. These tests check (1) that the renders really have the properties they are
built with, measured by ``judges.speech_features``, and (2) the robust pitch statistics: the
monotony measure orders flat < natural < exaggerated on EVERY clip, not on average, and octave
errors no longer inflate a monotone voice's spread. Renders are cached for the session (Piper and
WORLD analysis cost ~1 s per sentence; the resynthesis ~0.1 s).
"""

from __future__ import annotations

import numpy as np
import pytest

sv = pytest.importorskip("evalkit.testing.speech_validation")
pytest.importorskip("pyworld")

from evalkit.judges.speech_features import analyse, analyse_many  # noqa: E402

SEEDS = range(8)


@pytest.fixture(scope="session")
def styles() -> dict[tuple[str, int], tuple[np.ndarray, int]]:
    """flat / natural / exaggerated renders of eight sentences (same sentence within a seed)."""
    return {(style, seed): sv.clip(style, seed) for style in sv.STYLES for seed in SEEDS}


@pytest.fixture(scope="session")
def conversations() -> dict[str, object]:
    cases = ("steady", "jump_pitch_level", "jump_loudness", "jump_tempo", "voice_switch")
    out = {case: sv.conversation(case, seed=3, n_turns=4) for case in cases}
    out["voice_switch_short"] = sv.conversation("voice_switch", seed=3, n_turns=4, short=True)
    return out


def _features(clips: tuple[np.ndarray, ...]) -> list:
    return [a.features for a in analyse_many([(c, sv.RATE) for c in clips])]


def test_renders_are_deterministic_and_seeded():
    a, rate = sv.clip("natural", 5)
    b, _ = sv.clip("natural", 5)
    other, _ = sv.clip("natural", 6)
    assert rate == sv.RATE == 16000
    assert np.array_equal(a, b)
    assert len(a) != len(other) or not np.array_equal(a, other)
    assert sv.BACKEND == "piper"  # the neural voice ran; espeak-ng is only the documented fallback


@pytest.mark.parametrize("seed", SEEDS)
def test_monotony_orders_flat_natural_exaggerated_on_every_clip(styles, seed):
    flat, natural, lively = (analyse(*styles[(s, seed)]).features for s in ("flat", "natural", "exaggerated"))
    assert flat.monotony_index > natural.monotony_index > lively.monotony_index
    assert flat.pitch_sd_st < natural.pitch_sd_st < lively.pitch_sd_st
    # a monotone render (constant F0 by construction) reads as monotone: no octave errors left
    assert flat.pitch_sd_st < 0.3 and flat.pitch_range_st < 1.0
    assert flat.monotony_index > 0.75


def test_octave_errors_are_folded_back():
    """A flat 150 Hz track with 3% of frames at half and double F0 keeps a near-zero spread."""
    from evalkit.judges.speech_features import octave_correct, robust_pitch_stats

    rng = np.random.default_rng(0)
    f0 = 150.0 * 2 ** (rng.normal(0, 0.03, 1000) / 12)
    f0[rng.choice(1000, 30, replace=False)] *= rng.choice([0.5, 2.0], 30)
    f0[::7] = np.nan  # unvoiced frames stay unvoiced
    raw = 12 * np.log2(f0[~np.isnan(f0)] / 150.0)
    assert raw.std() > 1.5  # what the errors did to the plain standard deviation
    fixed = octave_correct(f0)
    assert np.array_equal(np.isnan(fixed), np.isnan(f0))
    stats = robust_pitch_stats(fixed)
    assert stats is not None and stats["pitch_sd_st"] < 0.1 and stats["pitch_range_st"] < 0.3
    assert np.nanmax(np.abs(12 * np.log2(fixed / 150.0))) < 0.5


def test_single_cue_jumps_are_in_the_audio(conversations):
    """Each jump moves its own cue by the constructed amount (within jitter) and not the others."""
    steady = _features(conversations["steady"].clips)
    k = conversations["jump_pitch_level"].change_turn
    assert k == 2

    def step(case: str, name: str) -> float:
        rows = _features(conversations[case].clips)
        after = np.mean([getattr(r, name) for r in rows[k:]]) - np.mean([getattr(r, name) for r in rows[:k]])
        base = np.mean([getattr(r, name) for r in steady[k:]]) - np.mean(
            [getattr(r, name) for r in steady[:k]]
        )
        return float(after - base)

    def st_step(case: str) -> float:
        rows = _features(conversations[case].clips)
        return float(
            12
            * np.log2(
                np.mean([r.f0_median_hz for r in rows[k:]]) / np.mean([r.f0_median_hz for r in rows[:k]])
            )
        )

    assert st_step("jump_pitch_level") - st_step("steady") == pytest.approx(6.0, abs=1.5)
    assert abs(st_step("jump_loudness") - st_step("steady")) < 1.0
    assert step("jump_loudness", "energy_mean_db") == pytest.approx(10.0, abs=1.0)
    assert abs(step("jump_pitch_level", "energy_mean_db")) < 1.0
    speech_s = [a.speech_s for a in analyse_many([(c, sv.RATE) for c in conversations["jump_tempo"].clips])]
    texts = conversations["jump_tempo"].texts
    plain = [analyse(sv.render(t), sv.RATE).speech_s for t in texts]
    ratios = [p / s for p, s in zip(plain, speech_s, strict=True)]
    assert all(r == pytest.approx(1.0, abs=0.06) for r in ratios[:k])
    assert all(r == pytest.approx(1.3, abs=0.08) for r in ratios[k:])


def test_voice_switch_long_and_short(conversations):
    long, short = conversations["voice_switch"], conversations["voice_switch_short"]
    assert all(len(c) / sv.RATE >= 2.0 for c in long.clips)
    assert all(len(c) / sv.RATE < 2.0 for c in short.clips)
    for conv in (long, short):
        rows = _features(conv.clips)
        k = conv.change_turn
        assert [c.voice for c in conv.changes] == ["joe"] * k + ["joe_female"] * (len(rows) - k)
        # the female voice is ~9 st higher (a male -> female change, not just a formant shift)
        jump = 12 * np.log2(
            np.median([r.f0_median_hz for r in rows[k:]]) / np.median([r.f0_median_hz for r in rows[:k]])
        )
        assert jump == pytest.approx(9.0, abs=2.0)


def test_drift_and_partial_changes_are_constructed_as_documented():
    drift = sv.conversation("drift", seed=1, n_turns=5)
    levels = [c.shift_st for c in drift.changes]
    steps = np.diff(levels)
    assert levels[-1] == pytest.approx(6.0, abs=0.6)
    assert steps.max() < 2.2  # no single step near a jump: 1.5 st a turn plus jitter
    partial = sv.CASES["jump_partial"]
    assert partial.shift_st == pytest.approx(4.5) and partial.gain_db == pytest.approx(7.5)
    assert partial.range_scale == pytest.approx(2**0.75) and partial.tempo == pytest.approx(1.3**0.75)
    assert set(sv.EXPECTED) == set(sv.CASES)


def test_dialogue_user_changes_and_model_follows_one_turn_later():
    follows = sv.dialogue("follows_user", seed=0, n_turns=4)
    ignores = sv.dialogue("ignores_user", seed=0, n_turns=4)
    k = follows.change_turn
    assert [c.gain_db > 4 for c in follows.user_changes] == [i >= k for i in range(4)]
    assert [c.gain_db > 4 for c in follows.model_changes] == [i >= k + 1 for i in range(4)]
    assert not any(c.gain_db > 4 for c in ignores.model_changes)
    user = _features(follows.user)
    assert np.mean([r.energy_mean_db for r in user[k:]]) - np.mean([r.energy_mean_db for r in user[:k]]) > 4
    # (+8 dB of gain; faster, wider speech has relatively more quiet frames, so ~5.5 dB are measured)


def test_words_case_substitutes_one_word():
    _, _, exact, reference = sv.words_case("exact", 1)
    samples, rate, spoken, reference2 = sv.words_case("substituted", 1)
    assert exact == reference == reference2 and rate == sv.RATE and len(samples) > rate
    assert len(spoken.split()) == len(reference.split())
    assert sum(a != b for a, b in zip(spoken.split(), reference.split(), strict=True)) == 1


def test_write_wavs_round_trips(tmp_path):
    from evalkit import audio as audio_io
    from evalkit.records import AudioRef

    clip, _ = sv.clip("flat", 0)
    (path,) = sv.write_wavs([clip], tmp_path)
    back, rate = audio_io.load(AudioRef(path=str(path)))
    assert rate == sv.RATE and np.max(np.abs(back - clip)) < 1e-3
