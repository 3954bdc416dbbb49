"""evalkit.audio on real files written in the test: decoding, mono mixing, resampling, WAV
encoding, and one-line errors that name the file."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalkit import audio
from evalkit.audio import AudioError
from evalkit.records import AudioRef


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("fmt", "tolerance"),
    [("wav", 1 / 32768 * 2), ("flac", 1 / 32768 * 2), ("ogg", 0.05)],  # ogg is lossy
)
def test_load_formats_as_float32_mono(tmp_path: Path, fmt: str, tolerance: float) -> None:
    rate = 16000
    tone = sine(440, rate, 0.5)
    path = tmp_path / f"tone.{fmt}"
    sf.write(path, tone, rate)

    samples, got_rate = audio.load(AudioRef(path=str(path)))
    assert got_rate == rate
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) == 8000  # 0.5 s at 16 kHz
    assert np.max(np.abs(samples - tone)) < tolerance
    assert audio.duration(AudioRef(path=str(path))) == pytest.approx(0.5, abs=1e-3)


def test_load_from_bytes_in_memory(tmp_path: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, sine(300, 8000, 0.25), 8000, format="FLAC")
    ref = AudioRef(data=buf.getvalue())
    samples, rate = audio.load(ref)
    assert (rate, len(samples)) == (8000, 2000)
    assert audio.duration(ref) == pytest.approx(0.25)


def test_resample_44k1_to_16k_keeps_duration_and_frequency(tmp_path: Path) -> None:
    path = tmp_path / "tone44k.wav"
    sf.write(path, sine(440, 44100, 1.0), 44100, subtype="PCM_16")

    native, native_rate = audio.load(AudioRef(path=str(path)))
    assert (native_rate, len(native)) == (44100, 44100)

    samples, rate = audio.load(AudioRef(path=str(path)), sample_rate=16000)
    assert rate == 16000
    assert samples.dtype == np.float32
    assert abs(len(samples) - 16000) <= 1  # still one second
    assert peak_frequency(samples, rate) == pytest.approx(440, abs=2)
    # amplitude survives (away from the filter's edge effects)
    assert np.max(np.abs(samples[1000:-1000])) == pytest.approx(0.5, abs=0.02)


def test_resample_function_directly() -> None:
    tone = sine(1000, 48000, 0.5)
    out = audio.resample(tone, 48000, 16000)
    assert out.dtype == np.float32
    assert len(out) == 8000
    assert peak_frequency(out, 16000) == pytest.approx(1000, abs=3)
    assert audio.resample(tone, 16000, 16000) is tone  # no-op when rates agree


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")

    mixed, _ = audio.load(AudioRef(path=str(path)))
    assert mixed.shape == (8000,)
    assert np.max(np.abs(mixed)) < 1e-6  # L = +x, R = -x cancel

    both, _ = audio.load(AudioRef(path=str(path)), mono=False)
    assert both.shape == (8000, 2)
    np.testing.assert_allclose(both[:, 0], x, atol=1e-7)
    np.testing.assert_allclose(both[:, 1], -x, atol=1e-7)


def test_stereo_mix_is_the_channel_mean(tmp_path: Path) -> None:
    left = np.full(100, 0.5, dtype=np.float32)
    right = np.full(100, 0.1, dtype=np.float32)
    path = tmp_path / "dc.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    mixed, _ = audio.load(AudioRef(path=str(path)))
    np.testing.assert_allclose(mixed, 0.3, atol=1e-6)


def test_wav_bytes_round_trip_within_16_bit_quantisation() -> None:
    tone = sine(440, 16000, 0.25, amplitude=0.8)
    data = audio.wav_bytes(tone, 16000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    info = sf.info(io.BytesIO(data))
    assert (rate, info.subtype, info.channels) == (16000, "PCM_16", 1)
    assert len(decoded) == len(tone)
    assert np.max(np.abs(decoded - tone)) <= 1 / 32768 + 1e-7


def test_to_base64_wav_decodes_to_same_samples(tmp_path: Path) -> None:
    tone = sine(440, 16000, 0.25)
    path = tmp_path / "tone.flac"
    sf.write(path, tone, 16000, subtype="PCM_24")
    encoded = audio.to_base64_wav(AudioRef(path=str(path)), sample_rate=16000)
    decoded, rate = sf.read(io.BytesIO(base64.b64decode(encoded)), dtype="float32")
    assert rate == 16000
    assert decoded.ndim == 1
    assert np.max(np.abs(decoded - tone)) <= 1 / 32768 + 1e-6


def test_to_wav_bytes_resamples_and_mixes(tmp_path: Path) -> None:
    x = sine(440, 44100, 0.5)
    path = tmp_path / "stereo44k.ogg"
    sf.write(path, np.stack([x, x], axis=1), 44100)
    data = audio.to_wav_bytes(AudioRef(path=str(path)))  # default: 16 kHz mono
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.duration == pytest.approx(0.5, abs=0.01)


def test_write_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.wav"
    assert audio.write(target, b"abc") == target
    assert target.read_bytes() == b"abc"


def _assert_one_line_naming(exc: AudioError, name: str) -> None:
    message = str(exc)
    assert name in message
    assert "\n" not in message
    assert message.strip() == message and message


def test_corrupt_bytes_raise_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00this is not a wav file at all" * 4)
    with pytest.raises(AudioError) as info:
        audio.load(AudioRef(path=str(path)))
    _assert_one_line_naming(info.value, str(path))
    assert "decode" in str(info.value)


def test_empty_file_raises_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as info:
        audio.load(AudioRef(path=str(path)))
    _assert_one_line_naming(info.value, str(path))
    assert "empty" in str(info.value)


def test_missing_file_raises_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(AudioError) as info:
        audio.load(AudioRef(path=str(path)))
    _assert_one_line_naming(info.value, str(path))
    assert "not found" in str(info.value)


def test_file_without_samples_raises_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioError) as info:
        audio.load(AudioRef(path=str(path)))
    _assert_one_line_naming(info.value, str(path))


def test_corrupt_bytes_in_memory_raise_audio_error() -> None:
    with pytest.raises(AudioError) as info:
        audio.load(AudioRef(data=b"garbage bytes"))
    _assert_one_line_naming(info.value, "13 bytes in memory")


def test_audio_error_is_an_evalkit_error() -> None:
    from evalkit.errors import EvalkitError

    assert issubclass(AudioError, EvalkitError)
