"""Voice consistency: does the model keep ONE voice across its spoken turns?

A spoken assistant that changes timbre mid-conversation (a TTS voice reset, a different speaker
prompt, a sampling accident in a speech decoder) sounds like a different person answering. We
embed each model turn's speech with resemblyzer's ``VoiceEncoder`` (a GE2E speaker-verification
LSTM: 256-d embedding per utterance, unit norm; CPU; its weights ship inside the package) and
compare the turns' embeddings by cosine similarity.

Preprocessing is resemblyzer's own (volume normalised to -30 dBFS, long silences trimmed with
webrtcvad), applied to audio resampled with evalkit's soxr path to the encoder's 16 kHz.

Metrics (cosine similarities, -1..1; speaker embeddings of one voice are typically 0.85-0.95):

- ``voice_similarity_min``: the lowest similarity of any compared turn to the ANCHOR turn, the
  first turn with at least ``MIN_RELIABLE_SPEECH_S`` of speech (the voice the listener first met).
- ``voice_similarity_mean``: the mean of those similarities.
- ``timbre_drift_turns``: how many compared turns fall below ``DRIFT_THRESHOLD``; ``timbre_drift``:
  1.0 when any does, else 0.0 (``passed`` is its negation).
- details ``per_turn``: each turn's similarity to the anchor and to the mean voice of the OTHER
  turns (leave-one-out, so a deviant turn does not pull its reference towards itself), its speech
  seconds after trimming, ``short`` and ``drift`` flags.

Turns with less than ``MIN_RELIABLE_SPEECH_S`` of speech are reported but neither anchor nor
compared: their embeddings are too noisy (below). With fewer than two reliable turns the metrics
are ``None`` (no continuity to judge), never a pass.

Calibration (espeak-ng 1.51, 16 kHz, this module's preprocessing). Ten voices (en-us, en-gb and
the en-us +f2 +f3 +f5 +m1 +m2 +m3 +m7 +klatt variants), seven sentences of 2.2-4 s of speech;
cosine similarity of two DIFFERENT sentences:

- same voice: min 0.837, 1st percentile 0.845, mean 0.907 (210 pairs);
- male vs female voice: max 0.769 (en-us vs +f2), pair means 0.55-0.73;
- same-gender voices are often NOT separable: en-us vs +m1 max 0.903, +f2 vs +f5 max 0.936,
  en-us vs en-gb (one timbre, another accent) max 0.935, en-us vs +klatt max 0.797.

``DRIFT_THRESHOLD`` = 0.80 lies between the same-voice minimum (0.837) and the male/female maximum
(0.769): a steady voice is not flagged, a change of speaker gender or of a clearly different
formant set is; a switch between similar voices of one gender may pass unflagged (the encoder
sees the same kind of speaker). Short clips, against the same voice's long sentences: same-voice
similarity fell to min 0.603-0.627 at 0.6 s of speech, 0.650-0.790 at 1.3-1.6 s, and was back at
0.823-0.854 at 2.2 s; hence ``MIN_RELIABLE_SPEECH_S`` = 2.0.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge, JudgeOptions, MetricSpec, build_options, share
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score
from evalkit.registry import register_judge

#: resemblyzer's encoder works at 16 kHz (``resemblyzer.hparams.sampling_rate``)
ENCODER_RATE_HZ = 16000
#: a later turn whose cosine similarity to the first turn is below this is a timbre change
DRIFT_THRESHOLD = 0.80
#: speech (after silence trimming) shorter than this gives noisy embeddings: reported, not compared
MIN_RELIABLE_SPEECH_S = 2.0

_encoder_lock = threading.Lock()


@lru_cache(maxsize=1)
def voice_encoder() -> Any:
    """resemblyzer's VoiceEncoder on CPU, once per process (the judge pool builds one judge per
    sample; loading the encoder per sample would dominate its cost)."""
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise EvalkitError(f"the voice judge needs resemblyzer ({exc}): pip install resemblyzer") from exc
    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(samples: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """The unit-norm speaker embedding of one mono clip, and its speech seconds after trimming."""
    from resemblyzer.audio import normalize_volume, trim_long_silences
    from resemblyzer.hparams import audio_norm_target_dBFS

    wav = audio_io.resample(np.asarray(samples, dtype=np.float32), rate, ENCODER_RATE_HZ)
    wav = trim_long_silences(normalize_volume(wav, audio_norm_target_dBFS, increase_only=True))
    if len(wav) == 0:
        raise EvalkitError("no speech left after silence trimming")
    encoder = voice_encoder()
    with _encoder_lock:  # torch modules are not re-entrant across threads
        embedding = encoder.embed_utterance(wav)
    return np.asarray(embedding, dtype=np.float64), len(wav) / ENCODER_RATE_HZ


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class VoiceOptions(JudgeOptions):
    """The voice judge's setting: the similarity to the anchor turn below which a turn drifted."""

    threshold: float = Field(default=DRIFT_THRESHOLD, gt=-1.0, le=1.0)


@register_judge("voice")
class VoiceConsistencyJudge(Judge):
    """Voice (timbre) consistency across the model's spoken turns: resemblyzer speaker embeddings,
    cosine similarity of each turn to the first, drift below a calibrated threshold."""

    name = "voice"
    metrics = (
        MetricSpec(
            name="voice_similarity_min",
            direction="higher",
            unit="cos",
            range=(-1.0, 1.0),
            description="lowest speaker-embedding similarity of a turn to the anchor turn",
        ),
        MetricSpec(
            name="voice_similarity_mean",
            direction="higher",
            unit="cos",
            range=(-1.0, 1.0),
            description="mean speaker-embedding similarity of the turns to the anchor turn",
        ),
        MetricSpec(
            name="timbre_drift_turns",
            direction="lower",
            unit="turns",
            range=(0.0, None),
            description="turns whose similarity to the anchor is below the drift threshold",
        ),
        share("timbre_drift", "1 when any turn drifted from the anchor voice, else 0", direction="lower"),
    )
    execution = "process"

    Options = VoiceOptions

    def __init__(self, threshold: float | None = None):
        self.options: VoiceOptions = build_options(VoiceOptions, self.name, threshold=threshold)
        self.threshold = self.options.threshold

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        embeddings: list[np.ndarray] = []
        speech_s: list[float] = []
        for k, output in enumerate(outputs):
            if output.audio is None:
                return self._error(f"sample {sample.id!r} turn {k}: the model output has no audio to judge")
            try:
                samples, rate = audio_io.load(output.audio, sample_rate=ENCODER_RATE_HZ)
                embedding, seconds = speaker_embedding(samples, rate)
            except EvalkitError as exc:  # AudioError included: unreadable or silent output audio
                return self._error(f"sample {sample.id!r} turn {k}: {exc}")
            embeddings.append(embedding)
            speech_s.append(seconds)
        if not embeddings:
            return self._error(f"sample {sample.id!r}: no model outputs to judge")

        reliable = [k for k, seconds in enumerate(speech_s) if seconds >= MIN_RELIABLE_SPEECH_S]
        anchor = reliable[0] if reliable else None
        to_anchor = [None if anchor is None else cosine(e, embeddings[anchor]) for e in embeddings]
        compared = [k for k in reliable if k != anchor]
        drifted = [k for k in compared if (to_anchor[k] or 0.0) < self.threshold]
        per_turn = [
            {
                "turn": k,
                "similarity_to_anchor": None if to_anchor[k] is None else round(to_anchor[k], 4),
                "similarity_to_others": _rounded(self._leave_one_out(embeddings, k)),
                "speech_s": round(speech_s[k], 2),
                "short": speech_s[k] < MIN_RELIABLE_SPEECH_S,
                "drift": k in drifted,
            }
            for k in range(len(embeddings))
        ]
        details: dict[str, Any] = {"per_turn": per_turn, "anchor_turn": anchor, "threshold": self.threshold}
        if not compared:
            why = (
                "one spoken turn"
                if len(outputs) == 1
                else f"fewer than two turns with {MIN_RELIABLE_SPEECH_S} s"
            )
            return Score(
                judge=self.name,
                metrics=dict.fromkeys(
                    ("voice_similarity_min", "voice_similarity_mean", "timbre_drift_turns", "timbre_drift")
                ),
                explanation=f"{why} of speech: no voice continuity to judge",
                details=details,
            )
        similarities = [to_anchor[k] for k in compared if to_anchor[k] is not None]
        return Score(
            judge=self.name,
            metrics={
                "voice_similarity_min": min(similarities),
                "voice_similarity_mean": float(np.mean(similarities)),
                "timbre_drift_turns": float(len(drifted)),
                "timbre_drift": 1.0 if drifted else 0.0,
            },
            passed=not drifted,
            explanation=(
                f"voice changed at turn(s) {drifted} (similarity to turn {anchor} < {self.threshold})"
                if drifted
                else f"one voice throughout (min similarity to turn {anchor}: {min(similarities):.3f})"
            ),
            details=details,
        )

    @staticmethod
    def _leave_one_out(embeddings: list[np.ndarray], k: int) -> float | None:
        others = [e for j, e in enumerate(embeddings) if j != k]
        if not others:
            return None
        return cosine(embeddings[k], np.mean(others, axis=0))

    def _error(self, message: str) -> Score:
        return Score(judge=self.name, error=ErrorInfo(kind="judge_error", message=message))
