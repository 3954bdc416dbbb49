"""Speech features and the prosody judge on signals whose answer is known: synthetic tones (pitch),
espeak-ng speech with silences of known length spliced in (pauses, with the real silero VAD), and
the same sentence rendered flat and expressive through SSML (ordering)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from evalkit import audio as audio_io
from evalkit.judges.base import load_judge
from evalkit.judges.speech_features import (
    PITCH_RATE_HZ,
    VAD_MIN_SILENCE_MS,
    VAD_RATE_HZ,
    _silero_model,
    extract_features,
    f0_track,
    speech_segments,
)
from evalkit.models.tts import espeak, espeak_binary
from evalkit.records import AudioRef, ModelOutput, Sample, Turn

RATE = 16000
SENTENCE = (
    "Did you really see that? I can hardly believe it, it was the most amazing thing I have ever heard!"
)


def tone(freq_hz: np.ndarray | float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """A sine whose instantaneous frequency is ``freq_hz`` (a constant or one value per sample)."""
    n = round(seconds * RATE)
    freq = np.broadcast_to(np.asarray(freq_hz, dtype=float), (n,))
    return (amplitude * np.sin(2 * np.pi * np.cumsum(freq) / RATE)).astype(np.float32)


def speech(text: str) -> np.ndarray:
    """espeak-ng speech with its leading/trailing silence cut, so spliced gaps have known length."""
    samples, _ = audio_io.load(AudioRef(data=espeak(text, wpm=160)), sample_rate=RATE)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1]


def ssml_speech(text: str, pitch_range: str) -> bytes:
    """The same words with espeak-ng's SSML pitch range (``x-low`` is near-monotone)."""
    markup = f'<speak><prosody range="{pitch_range}">{text}</prosody></speak>'
    proc = subprocess.run(
        [espeak_binary(), "-m", "-v", "en-us", "--stdout", markup], capture_output=True, check=True
    )
    samples, rate = audio_io.load(AudioRef(data=proc.stdout), sample_rate=RATE)
    return audio_io.wav_bytes(samples, rate)


def test_pure_tone_pitch_and_flatness():
    features = extract_features(tone(200.0, 1.0), RATE, vad="energy")
    assert features.f0_median_hz is not None and abs(features.f0_median_hz - 200.0) <= 2.0
    assert features.pitch_sd_st is not None and features.pitch_sd_st < 0.3
    assert features.monotony_index is not None and features.monotony_index > 0.75
    assert features.duration_s == pytest.approx(1.0)
    assert features.speech_ratio > 0.95


def test_f0_track_marks_silence_unvoiced():
    times, f0 = f0_track(np.concatenate([np.zeros(RATE // 2, np.float32), tone(220.0, 0.5)]), RATE)
    assert np.all(np.diff(times) > 0)
    assert np.isnan(f0[times < 0.4]).all()
    assert np.nanmedian(f0[times > 0.6]) == pytest.approx(220.0, abs=2.0)


def test_glide_range_in_semitones():
    # An exponential glide 150 -> 300 Hz spends equal time in every semitone of its octave, so the
    # 5th-95th percentile range is 0.9 * 12 = 10.8 st; allow 0.6 st for edges and the frame grid.
    seconds = 2.0
    t = np.arange(round(seconds * RATE)) / RATE
    features = extract_features(tone(150.0 * 2 ** (t / seconds), seconds), RATE, vad="energy")
    assert features.pitch_range_st == pytest.approx(10.8, abs=0.6)
    assert features.monotony_index is not None and features.monotony_index < 0.4  # sd ~3.5 st


def test_tone_pauses_with_energy_vad():
    # tone 0.6 s | 0.5 s silence | tone 0.6 s | 1.0 s silence | tone 0.6 s, total 3.3 s
    gap = np.zeros
    signal = np.concatenate(
        [tone(200, 0.6), gap(RATE // 2, np.float32), tone(200, 0.6), gap(RATE, np.float32), tone(200, 0.6)]
    )
    features = extract_features(signal, RATE, vad="energy")
    assert features.pause_count == 2
    assert features.longest_pause_s == pytest.approx(1.0, abs=0.15)
    assert features.mean_pause_s == pytest.approx(0.75, abs=0.15)
    assert features.speech_ratio == pytest.approx(1.8 / 3.3, abs=0.05)


def test_speech_pauses_with_silero():
    # Three espeak phrases joined by 0.5 s and 1.0 s of silence. Tolerances: longest pause
    # 1.0 +- 0.15 s; speech ratio within 0.08 of (phrases / total), since silero's 32 ms windows
    # and the stop closures inside words move segment edges.
    phrases = [speech("the weather is lovely today"), speech("shall we walk"), speech("to the river")]
    signal = np.concatenate(
        [phrases[0], np.zeros(RATE // 2, np.float32), phrases[1], np.zeros(RATE, np.float32), phrases[2]]
    )
    features = extract_features(signal, RATE)
    assert features.pause_count == 2
    assert features.longest_pause_s == pytest.approx(1.0, abs=0.15)
    expected_ratio = sum(len(p) for p in phrases) / len(signal)
    assert features.speech_ratio == pytest.approx(expected_ratio, abs=0.08)
    assert features.syllable_rate_sps is not None and 2.0 < features.syllable_rate_sps < 8.0
    with_words = extract_features(signal, RATE, word_times=[(0.0, 0.3)] * 10)
    speech_time = with_words.speech_ratio * with_words.duration_s
    assert with_words.speaking_rate_wps == pytest.approx(10 / speech_time)
    assert features.speaking_rate_wps is None


def test_batched_vad_matches_silero_reference():
    """Our batched streams must give the segments of silero's own sequential loop."""
    import torch
    from silero_vad import get_speech_timestamps

    signal = np.concatenate([speech(SENTENCE), np.zeros(RATE // 2, np.float32), speech("that is all")])
    ours = speech_segments(signal, RATE)
    low = audio_io.resample(signal, RATE, VAD_RATE_HZ)
    reference = get_speech_timestamps(
        torch.from_numpy(low),
        _silero_model(),
        sampling_rate=VAD_RATE_HZ,
        min_silence_duration_ms=VAD_MIN_SILENCE_MS,
        speech_pad_ms=0,
    )
    assert len(ours) == len(reference) >= 2
    for (start, end), ref in zip(ours, reference, strict=True):
        assert start == pytest.approx(ref["start"] / VAD_RATE_HZ, abs=0.07)  # two 32 ms windows
        assert end == pytest.approx(ref["end"] / VAD_RATE_HZ, abs=0.07)


def test_vad_batched_across_clips_matches_one_clip_at_a_time():
    """``analyse_many`` runs the VAD of several clips as one batch; each clip must get the
    segments (and features) it gets alone, and a second call comes from the cache."""
    from evalkit.judges import speech_features

    long = np.concatenate([speech(SENTENCE), np.zeros(RATE // 2, np.float32), speech("that is all")])
    clips = [(speech("hello there"), RATE), (long, RATE), (speech("see you soon, bye"), RATE)]
    speech_features.clear_analysis_cache()
    together = speech_features.analyse_many(clips)
    alone = []
    for clip in clips:
        speech_features.clear_analysis_cache()
        alone.append(speech_features.analyse(*clip))
    for a, b in zip(together, alone, strict=True):
        assert a.segments == b.segments and len(a.segments) >= 1
        assert a.features == b.features
    hits = speech_features.CACHE_STATS["hits"]
    again = speech_features.analyse_many(clips[::-1])
    assert speech_features.CACHE_STATS["hits"] - hits == 1  # only the last clip survived the clearing
    assert again[0] is alone[2] and again[1] is not together[1]


def test_f0_agrees_with_librosa_yin():
    """The own YIN (8 kHz, with aperiodicity) must track like librosa.yin at 16 kHz on speech."""
    import librosa

    samples = speech(SENTENCE)
    times, ours = f0_track(samples, RATE)
    theirs = librosa.yin(samples, fmin=50, fmax=600, sr=RATE, frame_length=1024, hop_length=160)
    n = min(len(ours), len(theirs))
    voiced = ~np.isnan(ours[:n])
    assert 0.3 < voiced.mean() < 0.9  # espeak speech is partly voiced, not all or nothing
    cents = np.abs(1200 * np.log2(ours[:n][voiced] / theirs[:n][voiced]))
    assert np.median(cents) < 20
    assert PITCH_RATE_HZ == 8000  # the claim in the docstring that this test backs


def _sample_with_user(user_audio: bytes) -> Sample:
    return Sample(
        id="s1",
        task="t",
        conversation=[
            Turn(role="user", audio=AudioRef(data=user_audio), transcript="hello"),
            Turn(role="user", text="and then?"),
        ],
    )


def test_prosody_judge_orders_flat_and_expressive():
    judge = load_judge("prosody")
    user = _sample_with_user(espeak("hello there, how are you", wpm=160))
    scores = {}
    for style in ("x-low", "x-high"):
        audio = AudioRef(data=ssml_speech(SENTENCE, style))
        scores[style] = judge.score(user, [ModelOutput(text=SENTENCE, audio=audio)] * 2)
    flat, lively = scores["x-low"].metrics, scores["x-high"].metrics
    assert lively["pitch_sd_st"] > flat["pitch_sd_st"] + 0.5
    assert lively["pitch_range_st"] > flat["pitch_range_st"]
    assert lively["monotony_index"] < flat["monotony_index"]
    # identical turns: no drift, no rate variation
    assert flat["f0_drift_st_per_turn"] == pytest.approx(0.0, abs=1e-6)
    assert flat["rate_cv"] == pytest.approx(0.0, abs=1e-6)
    details = scores["x-low"].details
    assert [row["turn"] for row in details["turn_features"]] == [0, 1]
    assert "turns" not in details  # summary.py would read feature rows as correctness
    assert len(details["user_turns"]) == 1 and details["user_turns"][0]["conversation_index"] == 0
    assert details["user_turns"][0]["f0_median_hz"] is not None


def test_prosody_judge_drift_across_turns():
    from evalkit.judges.prosody import f0_drift_st_per_turn

    # medians 100, 200, 400 Hz: one octave (12 st) per turn
    assert f0_drift_st_per_turn([0, 1, 2], [100.0, 200.0, 400.0]) == pytest.approx(12.0)
    assert f0_drift_st_per_turn([0, 1], [100.0, None]) is None


def test_prosody_judge_requires_speech():
    judge = load_judge("prosody")
    sample = Sample(id="s", task="t", conversation=[Turn(role="user", text="hi")])
    with pytest.raises(ValueError, match="no speech"):
        judge.score(sample, [ModelOutput(text="hello")])


def test_empty_clip_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        extract_features(np.zeros(0, np.float32), RATE)
