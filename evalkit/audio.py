"""Audio I/O on soundfile + soxr: decode any common format, mix to mono, resample, encode WAV.

torchaudio is deliberately not used: its PyPI build is CUDA-only and fails to import next to CPU
torch. Every failure here raises ``AudioError`` whose message names the file and what is wrong,
so the runner can record it as an ``input_audio`` error and move on to the next sample.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from evalkit.errors import EvalkitError
from evalkit.records import AudioRef


class AudioError(EvalkitError):
    """An input clip is missing, empty or undecodable."""


def _describe(ref: AudioRef) -> str:
    return ref.path if ref.path is not None else f"<{len(ref.data or b'')} bytes in memory>"


def load(ref: AudioRef, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode ``ref`` to float32 samples in [-1, 1]; optionally mix to mono and resample.

    Returns ``(samples, rate)``; samples are shape ``(n,)`` when mono else ``(n, channels)``.
    """
    where = _describe(ref)
    try:
        raw = ref.read_bytes()
    except FileNotFoundError:
        raise AudioError(f"{where}: audio file not found; fix the path in the dataset") from None
    except OSError as exc:
        raise AudioError(f"{where}: cannot read audio file ({exc.strerror})") from None
    if not raw:
        raise AudioError(f"{where}: audio file is empty (0 bytes); re-export or drop the item")
    try:
        samples, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = re.sub(r"Error opening <[^>]*>: ", "", str(exc))  # drop the in-memory buffer's address
        raise AudioError(f"{where}: cannot decode audio ({reason}); convert it to WAV/FLAC") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{where}: audio has no samples; re-export or drop the item")
    if mono:
        samples = samples.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality resampling (soxr 'HQ'); works on (n,) and (n, channels) arrays."""
    import soxr

    if rate_in == rate_out:
        return samples
    return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def duration(ref: AudioRef) -> float:
    """Seconds of audio, read from the header only."""
    if ref.path is not None:
        return float(sf.info(ref.path).duration)
    return float(sf.info(io.BytesIO(ref.read_bytes())).duration)


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode samples as a WAV file in memory (16-bit PCM by default: what every API accepts)."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def to_wav_bytes(ref: AudioRef, sample_rate: int | None = 16000, mono: bool = True) -> bytes:
    """Decode any input and re-encode it as (mono, resampled) 16-bit WAV."""
    samples, rate = load(ref, sample_rate=sample_rate, mono=mono)
    return wav_bytes(samples, rate)


def to_base64_wav(ref: AudioRef, sample_rate: int | None = 16000) -> str:
    """Base64 WAV, the ``input_audio.data`` form of the OpenAI chat API."""
    return base64.b64encode(to_wav_bytes(ref, sample_rate=sample_rate)).decode("ascii")


def reencoded_wav(path: Path) -> bytes:
    """The file decoded and written again as 16-bit WAV at its own rate and channel count: what a
    report embeds and a leaderboard copies, so only sound ever leaves a file, never the raw bytes
    of whatever a path names. ``AudioError`` when it does not decode as audio."""
    samples, rate = load(AudioRef(path=str(path)), mono=False)
    return wav_bytes(samples, rate)


def is_audio_header(path: Path) -> bool:
    """Whether the file opens as audio (header only; no samples decoded): the cheap check before
    a report links a file too large to embed."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return False
    return info.frames > 0


def write(path: Path, data: bytes) -> Path:
    """Write encoded audio bytes to ``path`` (creating folders); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
