"""Voice consistency: does the model keep ONE voice across its spoken turns?

A spoken assistant that changes timbre mid-conversation (a TTS voice reset, a different speaker
prompt, a sampling accident in a speech decoder) sounds like a different person answering. We
embed each model turn's speech with resemblyzer's ``VoiceEncoder`` (a GE2E speaker-verification
LSTM: 256-d embedding per utterance, unit norm; CPU; its weights ship inside the package) and
compare the turns' embeddings by cosine similarity.

Why pooled splits, not turn against turn: a clip under ~2 s gives a noisy embedding (same-voice
similarity of a 0.6 s clip to the same voice's long sentences fell to 0.60, as low as a male vs
female pair), and cascades answer mostly in short replies (14 of 16 under 2 s in one), so comparing
single turns either judged nothing or flagged noise. Instead the question is asked of STRETCHES of
the conversation: for each turn k, the speech of every turn before k is pooled into one embedding
and compared with the speech of every turn from k on. A persistent switch at k makes the two sides
least alike exactly at k (each side is then one voice, with all of its speech); the split of least
similarity is a switch when below ``DRIFT_THRESHOLD``. One switch per conversation is reported:
searching each side again (binary segmentation) flagged false second switches, because the sides
shrink to single replies whose embeddings follow their words more than their voice; a voice that
switches back (A-B-A) is reported at the one split that separates it best. A split is judged only
when each side pools at least ``MIN_WINDOW_S`` of speech. When no split is below the threshold,
each reply with ``MIN_WINDOW_S`` of speech is also compared with all the others pooled: one reply
in another voice among replies in one voice (A-A-B-A, a TTS reset for one reply) moves no split far
enough, but stands apart on its own (``ISOLATED_THRESHOLD``); it is reported at that reply's turn.

Preprocessing: each turn's speech is the shared analysis's VAD segments joined
(``judges.speech_features.analyse_many``, one pass per conversation, cached for prosody and
emotion), at the encoder's 16 kHz, volume normalised to -30 dBFS as resemblyzer does. Each turn is
embedded once as resemblyzer's partial embeddings (1.6 s windows); a side's embedding is the
normalised mean of its turns' partials, which is resemblyzer's own utterance pooling.

Metrics (cosine similarities, -1..1):

- ``voice_similarity_min``: the lowest similarity of the two sides of any examined split.
- ``voice_similarity_mean``: the mean similarity over every judged split.
- ``timbre_drift_turns``: voice switches found (0 or 1); ``timbre_drift``: 1.0 when one was,
  else 0.0 (``passed`` is its negation).
- details ``switch_turns`` (the turns where the voice changed), ``events`` (``{"turn": k, "kind":
  "voice_switch", "similarity": s}``, the convention of summary.json), ``boundaries`` (every
  judged split: turn, similarity), ``per_turn`` (speech
  seconds, switch flag) and ``turn_metrics`` (the similarity of the split at that turn, if examined).

With no split that has ``MIN_WINDOW_S`` of speech on both sides (one turn; two 0.6 s replies) the
metrics are ``None`` (no continuity to judge), never a pass.

Calibration: the validation speech of ``evalkit.testing.speech_validation`` (Piper joe; its
"joe_female" is joe resynthesised +9 st with formants x1.18: a mild switch, the same speaker's
prosody and phonetics), 8-turn conversations, the switch at turn 4, seeds 0-15 steady and 0-9
switched. The least similar split of a steady conversation: short replies (0.5-1.2 s each)
0.886-0.957, long (2.5-3.8 s) 0.867-0.910; of a switched one: 0.732-0.789 short, 0.742-0.805
long, found at turn 4 every time. ``DRIFT_THRESHOLD`` = 0.84 lies between (0 false switches in
32 steady conversations; tests/test_voice_listener.py re-renders some and bounds the rate).
espeak-ng male vs female voices are much further apart
(single 2-4 s sentences: male/female max 0.769, same voice min 0.837). What it cannot detect: a
switch between similar voices of one gender (en-us vs en-us+m1 reached 0.903); a single deviant
reply with under ``MIN_WINDOW_S`` of speech; a switch in the last reply when it has under
``MIN_WINDOW_S`` of speech (no split there is judged).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge, JudgeOptions, MetricSpec, build_options, count, share
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score
from evalkit.registry import register_judge

#: resemblyzer's encoder works at 16 kHz (``resemblyzer.hparams.sampling_rate``)
ENCODER_RATE_HZ = 16000
#: the speech of the turns before and after a split less similar than this: the voice changed there
DRIFT_THRESHOLD = 0.84
#: a split is judged only when both sides pool at least this much speech
MIN_WINDOW_S = 1.5
#: one reply (with MIN_WINDOW_S of speech) less similar than this to all the others pooled: that
#: reply alone was in another voice (A-A-B-A). Steady conversations (Piper long replies, 80
#: replies; espeak-ng demo-speech clean/flat/expressive/noisy, 44) reached no lower than 0.851; a
#: single other-voice reply: Piper joe_female among joe 0.724-0.759 (4 seeds), espeak-ng en-us+f3
#: among en-us 0.637-0.687
ISOLATED_THRESHOLD = 0.77

_encoder_lock = threading.Lock()


@lru_cache(maxsize=1)
def voice_encoder() -> Any:
    """resemblyzer's VoiceEncoder on CPU, once per process (the judge pool builds one judge per
    sample; loading the encoder per sample would dominate its cost)."""
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise EvalkitError(
            f"the voice judge needs resemblyzer ({exc}): pip install webrtcvad-wheels && "
            "pip install --no-deps resemblyzer"
        ) from exc
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
    """The voice judge's setting: the similarity of the speech before and after a split below
    which the voice changed there."""

    threshold: float = Field(default=DRIFT_THRESHOLD, gt=-1.0, le=1.0)


@register_judge("voice")
class VoiceConsistencyJudge(Judge):
    """Voice (timbre) consistency across the model's spoken turns: resemblyzer speaker embeddings,
    cosine similarity of each turn to the first, drift below a calibrated threshold."""

    name = "voice"
    needs_speech = True
    turn_metric_specs = (
        MetricSpec(
            name="voice_similarity",
            direction="higher",
            range=(-1.0, 1.0),
            description="similarity of the speech before and after this turn; falling: the voice drifts",
        ),
    )
    metrics = (
        MetricSpec(
            name="voice_similarity_min",
            direction="higher",
            unit="cos",
            range=(-1.0, 1.0),
            description="lowest speaker-embedding similarity of the speech before and after a turn split",
        ),
        MetricSpec(
            name="voice_similarity_mean",
            direction="higher",
            unit="cos",
            range=(-1.0, 1.0),
            description="mean speaker-embedding similarity of the speech before and after each turn split",
        ),
        count(
            "timbre_drift_turns",
            "turns",
            "voice switches found (0 or 1): the least similar split, below the threshold",
            direction="lower",
        ),
        share("timbre_drift", "1 when the voice changed at some turn, else 0", direction="lower"),
    )
    execution = "process"
    #: 3: also one reply in another voice among the others (A-A-B-A); 2: pooled split search (short
    #: replies judged), threshold 0.84; 1 compared turns to turn 0
    scorer_version = "3"

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
                {
                    "turn": k,
                    "kind": "voice_switch",
                    "similarity": next((b["similarity"] for b in boundaries if b["turn"] == k), None),
                }
                for k in switches
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
                f"voice changed at turn(s) {switches} (speech before vs after < {self.threshold}, or that "
                f"reply alone vs the others < {ISOLATED_THRESHOLD})"
                if switches
                else f"one voice throughout (min similarity across a turn boundary: {min(similarities):.3f})"
            ),
            details=details,
        )

    def _splits(
        self, speech: list[np.ndarray], speech_s: list[float]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The split of the conversation whose two sides (every turn of each, pooled) are least
        alike is the voice switch when below the threshold. Not searched again inside each side:
        there sides shrink to one or two turns, whose embeddings are content-dominated (steady
        long replies fell to 0.76 turn against turn) and flagged switches that were not there.
        Returns every judged split (turn, similarity) and the switch turn (none or one)."""
        partials = [partial_embeddings(w) if len(w) else np.zeros((0, 256)) for w in speech]
        rows = []
        for k in range(1, len(speech)):
            if min(sum(speech_s[:k]), sum(speech_s[k:])) >= MIN_WINDOW_S:
                similarity = cosine(pooled(partials[:k]), pooled(partials[k:]))
                rows.append({"turn": k, "similarity": round(similarity, 4)})
        if not rows:
            return rows, []
        best = min(rows, key=lambda r: r["similarity"])
        if best["similarity"] < self.threshold:
            return rows, [best["turn"]]
        return rows, self._isolated(partials, speech_s)

    @staticmethod
    def _isolated(partials: list[np.ndarray], speech_s: list[float]) -> list[int]:
        """A single reply in another voice between replies in one (A-A-B-A) moves no split far:
        each side still holds mostly the first voice. So each reply with ``MIN_WINDOW_S`` of speech
        is also compared with all the others pooled; the least similar below
        ``ISOLATED_THRESHOLD`` is the turn whose voice differed (a switch there and back)."""
        total = sum(speech_s)
        candidates = [
            (cosine(pooled([partials[k]]), pooled(partials[:k] + partials[k + 1 :])), k)
            for k in range(len(partials))
            if speech_s[k] >= MIN_WINDOW_S and total - speech_s[k] >= MIN_WINDOW_S
        ]
        if not candidates:
            return []
        similarity, turn = min(candidates)
        return [turn] if similarity < ISOLATED_THRESHOLD else []

    def _error(self, message: str) -> Score:
        return Score(judge=self.name, error=ErrorInfo(kind="judge_error", message=message))
