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
#: the speech of the turns before and after a split less similar than this: the voice changed there
DRIFT_THRESHOLD = 0.78
#: a split is judged only when both sides pool at least this much speech
MIN_WINDOW_S = 1.5

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


def speech_of_turns(clips: list[np.ndarray]) -> list[np.ndarray]:
    """Each turn's speech at 16 kHz: the shared analysis's VAD segments joined (one batched pass
    per conversation, cached for the prosody and emotion judges), volume normalised as
    resemblyzer's own preprocessing does."""
    from resemblyzer.audio import normalize_volume
    from resemblyzer.hparams import audio_norm_target_dBFS

    from evalkit.judges.speech_features import analyse_many

    analyses = analyse_many([(x, ENCODER_RATE_HZ) for x in clips])
    return [
        normalize_volume(a.speech_samples(x, ENCODER_RATE_HZ), audio_norm_target_dBFS, increase_only=True)
        for a, x in zip(analyses, clips, strict=True)
    ]


def partial_embeddings(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's partial embeddings of 16 kHz speech (one unit-norm row per 1.6 s window, 50 %
    overlap; a clip shorter than one window is one zero-padded window). Its utterance embedding
    is their normalised mean, so pooling several turns is averaging their rows: each turn is
    embedded once, however many splits it is pooled into."""
    encoder = voice_encoder()
    with _encoder_lock:  # torch modules are not re-entrant across threads
        _, partials, _ = encoder.embed_utterance(np.asarray(wav, dtype=np.float32), return_partials=True)
    return np.asarray(partials, dtype=np.float64)


def pooled(partials: list[np.ndarray]) -> np.ndarray:
    """The speaker embedding of several turns' speech: the mean of their partial embeddings."""
    mean = np.concatenate(partials).mean(axis=0)
    return mean / np.linalg.norm(mean)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


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
        clips: list[np.ndarray] = []
        for k, output in enumerate(outputs):
            if output.audio is None:
                return self._error(f"sample {sample.id!r} turn {k}: the model output has no audio to judge")
            try:
                clips.append(audio_io.load(output.audio, sample_rate=ENCODER_RATE_HZ)[0])
            except EvalkitError as exc:  # AudioError included: unreadable output audio
                return self._error(f"sample {sample.id!r} turn {k}: {exc}")
        if not clips:
            return self._error(f"sample {sample.id!r}: no model outputs to judge")
        speech = speech_of_turns(clips)
        speech_s = [len(w) / ENCODER_RATE_HZ for w in speech]
        boundaries, switches = self._splits(speech, speech_s)
        details: dict[str, Any] = {
            "per_turn": [
                {"turn": k, "speech_s": round(s, 2), "switch": k in switches} for k, s in enumerate(speech_s)
            ],
            "boundaries": boundaries,
            "switch_turns": switches,
            "events": [
                {"turn": b["turn"], "kind": "voice_switch", "similarity": b["similarity"]}
                for b in boundaries
                if b["turn"] in switches
            ],
            "turn_metrics": [
                {
                    "turn": k,
                    "voice_similarity": next((b["similarity"] for b in boundaries if b["turn"] == k), None),
                }
                for k in range(len(speech))
            ],
            "threshold": self.threshold,
        }
        if not boundaries:
            why = (
                "one spoken turn"
                if len(outputs) == 1
                else f"no turn boundary with {MIN_WINDOW_S} s of speech on both sides"
            )
            return Score(
                judge=self.name,
                metrics=dict.fromkeys(
                    ("voice_similarity_min", "voice_similarity_mean", "timbre_drift_turns", "timbre_drift")
                ),
                explanation=f"{why}: no voice continuity to judge",
                details=details,
            )
        similarities = [b["similarity"] for b in boundaries]
        return Score(
            judge=self.name,
            metrics={
                "voice_similarity_min": min(similarities),
                "voice_similarity_mean": float(np.mean(similarities)),
                "timbre_drift_turns": float(len(switches)),
                "timbre_drift": 1.0 if switches else 0.0,
            },
            passed=not switches,
            explanation=(
                f"voice changed at turn(s) {switches} (speech before vs after < {self.threshold})"
                if switches
                else f"one voice throughout (min similarity across a turn boundary: {min(similarities):.3f})"
            ),
            details=details,
        )

    def _splits(
        self, speech: list[np.ndarray], speech_s: list[float]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Binary segmentation: in a stretch of turns, the split whose two sides (every turn of
        each, pooled) are least alike is a voice switch when below the threshold, and both sides
        are searched again; a stretch with no such split has one voice. Returns every split
        examined (similarity, sides) and the switch turns, in turn order."""
        partials = [partial_embeddings(w) if len(w) else np.zeros((0, 256)) for w in speech]
        rows: list[dict[str, Any]] = []
        switches: list[int] = []

        def search(lo: int, hi: int) -> None:
            candidates = []
            for k in range(lo + 1, hi):
                seconds = (sum(speech_s[lo:k]), sum(speech_s[k:hi]))
                if min(seconds) >= MIN_WINDOW_S:
                    similarity = cosine(pooled(partials[lo:k]), pooled(partials[k:hi]))
                    candidates.append({"turn": k, "similarity": round(similarity, 4), "turns": [lo, hi]})
            if not candidates:
                return
            best = min(candidates, key=lambda c: c["similarity"])
            rows.append(best)
            if best["similarity"] < self.threshold:
                switches.append(best["turn"])
                search(lo, best["turn"])
                search(best["turn"], hi)

        search(0, len(speech))
        return sorted(rows, key=lambda r: r["turn"]), sorted(switches)

    def _error(self, message: str) -> Score:
        return Score(judge=self.name, error=ErrorInfo(kind="judge_error", message=message))
