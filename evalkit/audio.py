"""Audio I/O on soundfile + soxr: decode any common format, mix to mono, resample, encode WAV.

torchaudio is deliberately not used: its PyPI build is CUDA-only and fails to import next to CPU
torch. Every failure here raises ``AudioError`` whose message names the file and what is wrong,
so the runner can record it as an ``input_audio`` error and move on to the next sample.

numpy and soundfile are imported by the functions that decode or encode, not by this module: a run
whose clips already are the wire format (16-bit WAV, sent as they are) never decodes one, and
importing the two (with libsndfile) was ~0.1 s of its start (issue 18).
"""

from __future__ import annotations

import base64
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.records import AudioRef

if TYPE_CHECKING:
    import numpy as np


class AudioError(EvalkitError):
    """An input clip is missing, empty or undecodable."""


def _describe(ref: AudioRef) -> str:
    return ref.path if ref.path is not None else f"<{len(ref.data or b'')} bytes in memory>"


def load(ref: AudioRef, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode ``ref`` to float32 samples in [-1, 1]; optionally mix to mono and resample.

    Returns ``(samples, rate)``; samples are shape ``(n,)`` when mono else ``(n, channels)``.
    """
    import numpy as np
    import soundfile as sf

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
    import numpy as np
    import soxr

    if rate_in == rate_out:
        return samples
    return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def duration(ref: AudioRef) -> float:
    """Seconds of audio, read from the header only."""
    import soundfile as sf

    if ref.path is not None:
        return float(sf.info(ref.path).duration)
    return float(sf.info(io.BytesIO(ref.read_bytes())).duration)


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode samples as a WAV file in memory (16-bit PCM by default: what every API accepts)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def to_wav_bytes(ref: AudioRef, sample_rate: int | None = 16000, mono: bool = True) -> bytes:
    """Decode any input and re-encode it as (mono, resampled) 16-bit WAV."""
    samples, rate = load(ref, sample_rate=sample_rate, mono=mono)
    return wav_bytes(samples, rate)


@dataclass(frozen=True)
class WavHeader:
    """What a RIFF/WAVE header says: PCM format tag, channels, rate, bits and sample frames."""

    format_tag: int
    channels: int
    samplerate: int
    bits: int
    frames: int
    #: where the samples start and how many bytes the data chunk says they take
    data_at: int
    data_bytes: int


def wav_header(head: bytes) -> WavHeader | None:
    """The header of a WAV file from its first bytes (the ``fmt `` chunk and the ``data`` chunk's
    size must lie in ``head``), or None when it is not a plain RIFF/WAVE file. Parsed here, in a
    few struct reads, because asking libsndfile costs ~0.3 ms per clip and a run asks per clip."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt: tuple[int, int, int, int] | None = None
    at = 12
    while at + 8 <= len(head):
        kind, size = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
        if kind == b"fmt " and at + 24 <= len(head):
            tag, channels, rate = struct.unpack_from("<HHI", head, at + 8)
            fmt = (tag, channels, rate, struct.unpack_from("<H", head, at + 22)[0])
        elif kind == b"data":
            if fmt is None or not fmt[1] or not fmt[3]:
                return None
            frame_bytes = max(1, fmt[1] * fmt[3] // 8)
            return WavHeader(*fmt, frames=size // frame_bytes, data_at=at + 8, data_bytes=size)
        at += 8 + size + (size & 1)
    return None


def pcm16_wav_as_is(raw: bytes, sample_rate: int | None, mono: bool) -> WavHeader | None:
    """The header of ``raw`` when its bytes already are what decoding and re-encoding would send:
    a plain 16-bit PCM WAV (format tag 1) at ``sample_rate`` (None: any), mono when ``mono``, with
    samples, whose data chunk is whole. None otherwise (``load`` then decodes, or says why not).
    Sending such a clip's own bytes skips a decode and an encode per clip (issue 18); the samples
    sent are the same either way."""
    header = wav_header(raw[:4096])
    if header is None:
        return None
    plain = header.format_tag == 1 and header.bits == 16 and header.frames > 0
    rate = sample_rate is None or header.samplerate == sample_rate
    channels = header.channels == 1 or not mono
    whole = header.data_at + header.data_bytes <= len(raw)
    return header if plain and rate and channels and whole else None


def to_base64_wav(ref: AudioRef, sample_rate: int | None = 16000) -> str:
    """Base64 WAV, the ``input_audio.data`` form of the OpenAI chat API."""
    return base64.b64encode(to_wav_bytes(ref, sample_rate=sample_rate)).decode("ascii")


def reencoded_wav(path: Path) -> bytes:
    """The file decoded and written again as 16-bit WAV at its own rate and channel count: what a
    report embeds and a leaderboard copies, so only sound ever leaves a file, never the raw bytes
    of whatever a path names. ``AudioError`` when it does not decode as audio."""
    samples, rate = load(AudioRef(path=str(path)), mono=False)
    return wav_bytes(samples, rate)


def reencoded_ogg(path: Path) -> bytes:
    """The file decoded and written again as Ogg Vorbis (libsndfile, any sample rate): what a
    report embeds, about a fifth to a tenth of the 16-bit WAV of speech, decoded and re-encoded
    like ``reencoded_wav`` so only sound leaves a file. ``AudioError`` when it does not decode."""
    import soundfile as sf

    samples, rate = load(AudioRef(path=str(path)), mono=False)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def is_audio_header(path: str | Path) -> bool:
    """Whether the file opens as audio (header only; no samples decoded): the cheap check before
    a report links a file too large to embed (a WAV file's own header is read without libsndfile)."""
    try:
        with open(path, "rb", buffering=0) as fh:  # one read of the head: no 8 KiB buffer to fill
            header = wav_header(fh.read(4096))
    except OSError:
        return False
    if header is not None:
        return header.frames > 0 and header.channels > 0 and header.samplerate > 0
    import soundfile as sf

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
