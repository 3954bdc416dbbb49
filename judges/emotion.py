"""Emotional continuity across the turns of a spoken conversation, three ways.

No speech-emotion model with weights ships with evalkit, so the default judge measures *affect*
acoustically and the other two are opt-in:

``emotion`` (CPU, no model): an acoustic arousal proxy per model turn and how it moves.
    Per turn we take five prosodic features from ``judges.speech_features`` (one analysis for
    every judge) that rise with arousal in the speech-emotion literature: pitch level (median F0 in
    semitones re 100 Hz), pitch variability (``pitch_sd_st``), loudness (``energy_mean_db``),
    loudness dynamics (``energy_sd_db``) and tempo (``syllable_rate_sps``).

    *Per-speaker normalisation.* Each feature is centred on the speaker's own median over the
    conversation (the model's turns for the model, the user's turns for the user), so a deep or a
    quiet voice is not "calm" and a high or loud one is not "excited": only changes relative to the
    speaker count. The centred value is divided by a FIXED reference scale per feature
    (``REFERENCE_SCALES``), not by the conversation's own standard deviation: dividing by the
    conversation's spread would give every conversation unit variance, so a voice that swings
    between whispering and shouting and one that barely moves would have the same jumps and the
    metrics could not tell them apart. The scales are typical within-speaker, turn-to-turn spreads
    of neutral conversational speech (2 st of pitch level, 1 st of pitch variability, 3 dB of
    loudness, 2 dB of loudness dynamics, 0.75 syllables/s), so one unit of the proxy ("arousal
    unit", au) means "every cue moved by about one typical spread". Arousal = mean of the available
    features' scaled deviations (a feature that is not measurable in a turn, e.g. no voiced frame,
    is left out of that turn's mean, never counted as zero).

    Affect CHANGE is measured per cue, not on this average (``judges.affect``: four cues, each
    against its own threshold calibrated on within-speaker turn-to-turn variation of natural
    speech; the calibration data and figures are in that module's docstring). Metrics:

    - ``affect_jump_max`` (x threshold): largest ``|cue change| / cue threshold`` between
      consecutive model turns, over the four cues (> 1 means a jump).
    - ``affect_jumps``: consecutive-turn changes where ANY cue moved beyond its threshold.
    - ``affect_drifts``: cues that slide over the turns (trend beyond the threshold, a line fitting
      better than one step) with their steps not counted as jumps.
    - ``unjustified_jumps``: model jumps with no user affect change in the same direction at that
      turn or the one before (an excited reply to a user who just became excited is continuity).
      ``None`` unless every answered user turn has audio (no evidence is not evidence of a break).
    - ``user_affect_changes`` / ``ignored_user_changes`` / ``responsiveness``: the user's own
      jumps, those the model did not follow within one turn, and the share it followed; the
      verdict (``follows``, ``ignores``, ``steady``, ``unprompted``) is
      ``details["responsiveness_verdict"]``. Each event (jump, drift, ignored user change) is in
      ``details["events"]`` with its turn; ``details["turn_metrics"]`` feeds summary.json by turn.

    On the arousal average (au):

    - ``user_alignment``: Pearson correlation of the model's and the user's arousal over the
      answered turns (-1..1); ``None`` with fewer than three turns or a constant trajectory.
    - ``affect_variance``: population variance of the model's arousal over its turns (au^2).
    - ``emotion_label_agreement`` (when ``reference["emotions"]`` gives one label per answered
      turn): labels map to an arousal level (``LABEL_AROUSAL``: +1 high, 0 neutral, -1 low); since
      the proxy is relative to the speaker, agreement is *ordinal*: the share of turn pairs with
      different expected levels that the proxy orders the same way (0..1, 0.5 = chance). ``None``
      when all labels have the same level. An unknown label is a judge error, never skipped.

    Which user turn does output k answer? The runner gives one output per answered turn in order;
    tasks answer either every user turn or the last ones (fixed-context protocols), so the outputs
    are aligned with the LAST ``len(outputs)`` user turns.

    With ``EVALKIT_SER_MODEL`` set, the ``emotion`` judge adds the classifier metrics below.

``emotion-ser`` (needs ``EVALKIT_SER_MODEL``): a speech-emotion classifier per model turn.
    ``EVALKIT_SER_MODEL`` is a local path or Hugging Face id of any ``audio-classification``
    checkpoint (wav2vec2/HuBERT SER fine-tunes, emotion2vec exported to transformers, ...), run with
    ``transformers.pipeline`` on CPU. Per turn: the distribution over the model's labels (all
    labels, renormalised to sum to 1). Metrics: ``ser_jsd_mean`` / ``ser_jsd_max``, the
    Jensen-Shannon divergence (base 2, 0 = identical, 1 = disjoint) between consecutive turns'
    distributions; ``ser_label_flips``, how often the top label changes between consecutive turns;
    and ``ser_label_accuracy`` when reference emotions are given (top label == expected label, after
    mapping the common abbreviations such as ``neu``/``hap``/``ang`` in ``LABEL_ALIASES``).

``emotion-llm`` (needs ``EVALKIT_EMOTION_JUDGE``, a model spec such as ``openai:gpt-4o``): a judge
    model reads the conversation as text (user transcripts, model replies) with a prosody summary
    per model turn and rates emotional appropriateness and continuity 1-5, returning JSON
    ``{"score": 1-5, "justification": "..."}``. The judge model is a role of the run's model
    service, and re-asks after an unreadable reply are the shared loop, as for the rubric judges
    (``judges.model_judge``); an unreadable reply after the re-asks is a judge error, never a
    guessed score.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.compat import torchaudio_stand_in
from evalkit.errors import EvalkitError
from evalkit.judges.affect import (
    JUMP_THRESHOLDS,
    Cues,
    affect_cues,
    affect_events,
    cue_changes,
    jump_direction,
    jump_ratio,
    justified,
    principal_cue,
    responsiveness,
)
from evalkit.judges.base import Judge, JudgeOptions, MetricSpec, build_options, count, share
from evalkit.judges.model_judge import DEFAULT_JUDGE_MAX_TOKENS, ModelJudge, score_and_justification
from evalkit.judges.rubric import load_json_object
from evalkit.judges.speech_features import ProsodyFeatures, extract_features
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score, Turn
from evalkit.registry import register_judge
from evalkit.specs import env_field

#: the SER checkpoint (path or HF id) for ``emotion-ser`` and the optional part of ``emotion``
SER_MODEL_ENV = "EVALKIT_SER_MODEL"
#: the judge model spec for ``emotion-llm``
EMOTION_JUDGE_ENV = "EVALKIT_EMOTION_JUDGE"
#: every clip is analysed at this rate (speech_features' own, and what SER checkpoints expect)
ANALYSIS_RATE_HZ = 16000

#: feature -> reference scale (one typical within-speaker spread between turns of neutral speech)
REFERENCE_SCALES: dict[str, float] = {
    "pitch_level_st": 2.0,
    "pitch_sd_st": 1.0,
    "energy_mean_db": 3.0,
    "energy_sd_db": 2.0,
    "syllable_rate_sps": 0.75,
}

#: expected emotion label -> arousal level (Russell's circumplex: activation, not valence)
LABEL_AROUSAL: dict[str, int] = {
    "angry": 1,
    "excited": 1,
    "happy": 1,
    "fearful": 1,
    "surprised": 1,
    "anxious": 1,
    "frustrated": 1,
    "enthusiastic": 1,
    "neutral": 0,
    "calm": -1,
    "sad": -1,
    "bored": -1,
    "tired": -1,
    "relaxed": -1,
    "content": -1,
}
#: classifier label spellings -> the names above (IEMOCAP/SUPERB-style abbreviations and variants)
LABEL_ALIASES: dict[str, str] = {
    "ang": "angry",
    "anger": "angry",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "exc": "excited",
    "excitement": "excited",
    "neu": "neutral",
    "sadness": "sad",
    "fea": "fearful",
    "fear": "fearful",
    "sur": "surprised",
    "surprise": "surprised",
    "cal": "calm",
    "fru": "frustrated",
    "frustration": "frustrated",
}


def canonical_label(label: str) -> str:
    """A label in the judge's vocabulary: lower-cased, stripped, abbreviations expanded."""
    key = label.strip().lower()
    return LABEL_ALIASES.get(key, key)


# -- inputs -------------------------------------------------------------------------------------------
def answered_user_turns(sample: Sample, n_outputs: int) -> list[int]:
    """Conversation indices of the user turns the outputs answer: the last ``n_outputs`` user turns
    (every user turn in the default protocol, the final ones in fixed-context protocols)."""
    users = [i for i, turn in enumerate(sample.conversation) if turn.role == "user"]
    if n_outputs > len(users):
        raise EvalkitError(f"sample {sample.id!r}: {n_outputs} outputs but only {len(users)} user turns")
    return users[len(users) - n_outputs :]


def output_audio(sample: Sample, outputs: list[ModelOutput]) -> list[np.ndarray]:
    """Each model turn's speech at ``ANALYSIS_RATE_HZ``; an output without audio is an error (these
    judges measure how the reply sounds, and a text-only reply has no sound to measure)."""
    clips = []
    for k, output in enumerate(outputs):
        if output.audio is None:
            raise EvalkitError(f"sample {sample.id!r} turn {k}: the model output has no audio to judge")
        samples, _ = audio_io.load(output.audio, sample_rate=ANALYSIS_RATE_HZ)
        clips.append(samples)
    return clips


# -- the arousal proxy --------------------------------------------------------------------------------
def arousal_cues(features: ProsodyFeatures) -> dict[str, float | None]:
    """The five arousal cues of one clip (``None`` where not measurable)."""
    level = None if features.f0_median_hz is None else 12.0 * float(np.log2(features.f0_median_hz / 100.0))
    return {
        "pitch_level_st": level,
        "pitch_sd_st": features.pitch_sd_st,
        "energy_mean_db": features.energy_mean_db,
        "energy_sd_db": features.energy_sd_db,
        "syllable_rate_sps": features.syllable_rate_sps,
    }


def arousal_trajectory(cues: list[dict[str, float | None]]) -> list[float | None]:
    """One speaker's arousal per turn (au): each cue centred on the speaker's median over these
    turns, divided by its reference scale, averaged over the cues measurable in that turn."""
    centres: dict[str, float] = {}
    for name in REFERENCE_SCALES:
        values = [c[name] for c in cues if c[name] is not None]
        if values:
            centres[name] = float(np.median(values))
    trajectory: list[float | None] = []
    for turn in cues:
        z = [
            (value - centres[name]) / scale
            for name, scale in REFERENCE_SCALES.items()
            if (value := turn[name]) is not None
        ]
        trajectory.append(float(np.mean(z)) if z else None)
    return trajectory


def continuity_metrics(
    model: list[Cues], user: list[Cues] | None
) -> tuple[dict[str, float | None], list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """The per-cue continuity metrics of the model's turns against the user's (None: no user
    audio at all; a user turn without audio has all cues None), one detail row per
    consecutive-turn change, the events (``judges.affect``: jumps, drifts, ignored user changes,
    each with its turn) and the responsiveness verdict (None without user audio)."""
    changes = cue_changes(model)
    jumps, drifts = affect_events(model)
    user_complete = user is not None and all(any(v is not None for v in u.values()) for u in user)
    response = responsiveness(model, user) if user is not None else None
    user_events = response["user_changes"] if response is not None else []
    jump_turns = sorted({e["turn"] for e in jumps})
    rows: list[dict[str, Any]] = []
    unjustified = 0
    for k, change in enumerate(changes, start=1):
        ratio = jump_ratio(change)
        row: dict[str, Any] = {
            "from_turn": k - 1,
            "to_turn": k,
            "changes": {c: _rounded(v) for c, v in change.items()},
            "jump_ratio": _rounded(ratio),
            "principal_cue": principal_cue(change),
            "jump": k in jump_turns,
        }
        if k in jump_turns and user is not None:
            row["justified"] = justified(k, jump_direction(change), user_events)
            unjustified += not row["justified"]
        rows.append(row)
    ignored = [e for e in user_events if not e["followed"]]
    events = [
        *jumps,
        *drifts,
        *({"turn": e["turn"], "kind": "ignored_user", "cue": e["cue"]} for e in ignored),
    ]
    events.sort(key=lambda e: (e["turn"], e["kind"]))
    ratios = [r for r in (jump_ratio(c) for c in changes) if r is not None]
    metrics: dict[str, float | None] = {
        "affect_jump_max": max(ratios) if ratios else None,
        "affect_jumps": float(len(jump_turns)) if ratios else None,
        "affect_drifts": float(len(drifts)) if ratios else None,
        "unjustified_jumps": float(unjustified) if ratios and user_complete else None,
        "user_affect_changes": float(len(user_events)) if user_complete and ratios else None,
        "ignored_user_changes": float(len(ignored)) if user_complete and ratios else None,
        "responsiveness": response["share_followed"] if user_complete and response is not None else None,
    }
    verdict = response["verdict"] if user_complete and response is not None else None
    return metrics, rows, events, verdict


def _correlation(a: list[float | None], b: list[float | None]) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    return float(np.corrcoef(xs, ys)[0, 1])


def label_levels(sample: Sample, n_outputs: int) -> list[int] | None:
    """``reference["emotions"]`` as arousal levels, or None when the sample gives none."""
    labels = sample.reference.get("emotions")
    if labels is None:
        return None
    if not isinstance(labels, list) or len(labels) != n_outputs:
        raise EvalkitError(
            f"sample {sample.id!r}: reference 'emotions' must list one label per answered turn "
            f"({n_outputs}), got {labels!r}"
        )
    levels = []
    for label in labels:
        name = canonical_label(str(label))
        if name not in LABEL_AROUSAL:
            known = ", ".join(sorted(LABEL_AROUSAL))
            raise EvalkitError(f"sample {sample.id!r}: unknown emotion label {label!r}; known: {known}")
        levels.append(LABEL_AROUSAL[name])
    return levels


def label_agreement(levels: list[int], arousal: list[float | None]) -> float | None:
    """Ordinal agreement of expected levels and the proxy: among turn pairs whose expected levels
    differ (and whose arousal is measured), the share the proxy orders the same way (a tie in the
    proxy counts half, as in Kendall's tau-b / AUC)."""
    concordant = 0.0
    comparable = 0
    for i in range(len(levels)):
        for j in range(i + 1, len(levels)):
            a_i, a_j = arousal[i], arousal[j]
            if levels[i] == levels[j] or a_i is None or a_j is None:
                continue
            comparable += 1
            expected = np.sign(levels[j] - levels[i])
            observed = np.sign(a_j - a_i)
            concordant += 1.0 if observed == expected else 0.5 if observed == 0 else 0.0
    return concordant / comparable if comparable else None


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- the speech-emotion classifier --------------------------------------------------------------------
@dataclass(frozen=True)
class EmotionDistribution:
    """One clip's emotion probabilities, labels as the checkpoint names them."""

    probs: dict[str, float]

    @property
    def top(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)


class EmotionClassifier:
    """Any Hugging Face ``audio-classification`` checkpoint, run on CPU through
    ``transformers.pipeline``. Loaded once per process per checkpoint (the judge pool builds a
    judge per sample, the model must not be). ``pipeline`` objects are not safe to call from two
    threads at once, hence the lock."""

    def __init__(self, path_or_id: str):
        self.path_or_id = path_or_id
        self._pipe = _load_pipeline(path_or_id)
        self._lock = threading.Lock()

    @property
    def sampling_rate(self) -> int:
        return int(self._pipe.feature_extractor.sampling_rate)

    def classify(self, samples: np.ndarray, rate: int) -> EmotionDistribution:
        """The distribution over ALL the checkpoint's labels for one mono clip, renormalised to sum
        to 1 (wav2vec2 heads already softmax; some exported heads do not)."""
        wanted = self.sampling_rate
        clip = audio_io.resample(np.asarray(samples, dtype=np.float32), rate, wanted)
        with self._lock:
            rows = self._pipe({"raw": clip, "sampling_rate": wanted}, top_k=None)
        probs = {str(r["label"]): float(r["score"]) for r in rows}
        total = sum(probs.values())
        if not np.isfinite(total) or total <= 0:
            raise EvalkitError(f"SER model {self.path_or_id}: scores do not form a distribution ({probs})")
        return EmotionDistribution({label: p / total for label, p in probs.items()})


@lru_cache(maxsize=2)
def _load_pipeline(path_or_id: str) -> Any:
    with torchaudio_stand_in():
        try:
            from transformers import pipeline
        except ImportError as exc:
            raise EvalkitError(
                f"the SER classifier needs transformers and torch ({exc}): pip install evalkit[hf]"
            ) from exc
        try:
            return pipeline("audio-classification", model=path_or_id, device="cpu")
        except (OSError, ValueError) as exc:
            raise EvalkitError(
                f"cannot load SER model {path_or_id!r} (set by {SER_MODEL_ENV}): {exc}; give a local "
                "folder or a Hugging Face id of an audio-classification checkpoint"
            ) from exc


def jensen_shannon(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon divergence in bits (0..1) between two label distributions."""
    labels = sorted(set(p) | set(q))
    a = np.array([p.get(x, 0.0) for x in labels])
    b = np.array([q.get(x, 0.0) for x in labels])
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))


def ser_metrics(
    dists: list[EmotionDistribution], expected: list[str] | None
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Turn-to-turn consistency of classifier outputs, and per-turn detail rows."""
    jsd = [jensen_shannon(a.probs, b.probs) for a, b in zip(dists, dists[1:], strict=False)]
    flips = sum(a.top != b.top for a, b in zip(dists, dists[1:], strict=False))
    metrics: dict[str, float | None] = {
        "ser_jsd_mean": float(np.mean(jsd)) if jsd else None,
        "ser_jsd_max": max(jsd) if jsd else None,
        "ser_label_flips": float(flips) if jsd else None,
    }
    if expected is not None:
        hits = [canonical_label(d.top) == canonical_label(e) for d, e in zip(dists, expected, strict=True)]
        metrics["ser_label_accuracy"] = sum(hits) / len(hits)
    rows = [
        {"turn": k, "top": d.top, "probs": {label: round(p, 4) for label, p in d.probs.items()}}
        for k, d in enumerate(dists)
    ]
    return metrics, rows


class SEROptions(JudgeOptions):
    """The speech-emotion classifier a judge uses: a local folder or Hugging Face id of an
    audio-classification model (default ``EVALKIT_SER_MODEL``; emotion: none = acoustic proxy only)."""

    ser_model: str | None = env_field(SER_MODEL_ENV)


def _required_ser_model(options: SEROptions) -> str:
    if options.ser_model is None:
        raise EvalkitError(
            f"the emotion-ser judge needs a speech-emotion checkpoint: set {SER_MODEL_ENV} to a local folder "
            "or Hugging Face id of an audio-classification model"
        )
    return options.ser_model


# -- the judges ---------------------------------------------------------------------------------------
#: the speech-emotion classifier's metrics (``ser_metrics``), written by emotion-ser and by emotion
#: when it has a classifier; the flips and divergences describe the trajectory (a change can be right)
SER_METRICS = (
    MetricSpec(
        name="ser_jsd_mean",
        direction="descriptive",
        unit="bits",
        range=(0.0, 1.0),
        description="mean Jensen-Shannon divergence of consecutive turns' emotion distributions",
    ),
    MetricSpec(
        name="ser_jsd_max",
        direction="descriptive",
        unit="bits",
        range=(0.0, 1.0),
        description="largest Jensen-Shannon divergence of consecutive turns' emotion distributions",
    ),
    count("ser_label_flips", "flips", "consecutive turns whose top emotion label differs"),
    share("ser_label_accuracy", "share of turns whose top label is the reference emotion"),
)
#: the acoustic arousal proxy's metrics (``continuity_metrics``, module docstring)
AROUSAL_METRICS = (
    MetricSpec(
        name="affect_jump_max",
        direction="descriptive",
        unit="x threshold",
        range=(0.0, None),
        description="largest |cue change| / cue threshold between consecutive model turns (> 1: a jump)",
    ),
    count(
        "affect_jumps",
        "jumps",
        "consecutive-turn changes where any cue moved beyond its calibrated threshold",
    ),
    count(
        "affect_drifts", "cues", "cues whose trend over the turns exceeds their threshold with no single jump"
    ),
    count(
        "unjustified_jumps",
        "jumps",
        "model jumps with no same-direction user change at that turn or the one before",
        direction="lower",
    ),
    count("user_affect_changes", "changes", "user turn changes where any cue moved beyond its threshold"),
    count(
        "ignored_user_changes",
        "changes",
        "user affect changes the model did not follow within one turn",
        direction="lower",
    ),
    share("responsiveness", "share of the user's affect changes the model followed within one turn"),
    MetricSpec(
        name="user_alignment",
        direction="higher",
        range=(-1.0, 1.0),
        description="Pearson correlation of the model's and the user's arousal over the turns",
    ),
    MetricSpec(
        name="affect_variance",
        direction="descriptive",
        unit="au^2",
        range=(0.0, None),
        description="population variance of the model's arousal over its turns",
    ),
    share("emotion_label_agreement", "ordinal agreement of the reference emotion levels and the arousal"),
)


def _measure_turn(turn: Turn) -> tuple[dict[str, float | None], Cues]:
    """A user turn's arousal cues and affect cues (all None without audio); its transcript, else
    its text, gives the tempo's syllables."""
    if turn.audio is None:
        return dict.fromkeys(REFERENCE_SCALES), dict.fromkeys(JUMP_THRESHOLDS)
    samples, _ = audio_io.load(turn.audio, sample_rate=ANALYSIS_RATE_HZ)
    features = extract_features(samples, ANALYSIS_RATE_HZ)
    return arousal_cues(features), affect_cues(
        features, samples, ANALYSIS_RATE_HZ, turn.transcript or turn.text
    )


def _error(judge: str, message: str) -> Score:
    return Score(judge=judge, error=ErrorInfo(kind="judge_error", message=message))


@register_judge("emotion")
class EmotionContinuityJudge(Judge):
    """Emotional continuity of the model's spoken turns: an acoustic arousal proxy (no model), plus
    a speech-emotion classifier's consistency when EVALKIT_SER_MODEL is set."""

    name = "emotion"
    execution = "process"
    needs_speech = True
    #: per-turn numbers: the arousal level (neither way is better) and the change from the turn before
    turn_metric_specs = (
        MetricSpec(name="arousal", direction="descriptive", unit="au", description="arousal of one reply"),
        MetricSpec(
            name="jump_ratio",
            direction="lower",
            unit="x threshold",
            range=(0.0, None),
            description="largest |cue change| / threshold from the reply before; rising: continuity erodes",
        ),
    )
    metrics = (*AROUSAL_METRICS, *SER_METRICS)
    #: 2: jumps per cue against calibrated thresholds, drift, responsiveness (judges.affect)
    scorer_version = "2"

    Options = SEROptions

    def __init__(self, ser_model: str | None = None):
        self.options: SEROptions = build_options(SEROptions, self.name, ser_model=ser_model)
        self.ser_model = self.options.ser_model

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        try:
            return self._score(sample, outputs)
        except EvalkitError as exc:  # bad input (no audio, bad labels) is a judge error, with its reason
            return _error(self.name, str(exc))

    def _score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if not outputs:
            raise EvalkitError(f"sample {sample.id!r}: no model outputs to judge")
        levels = label_levels(sample, len(outputs))
        clips = output_audio(sample, outputs)
        model_features = [extract_features(c, ANALYSIS_RATE_HZ) for c in clips]
        model_arousal = arousal_trajectory([arousal_cues(f) for f in model_features])

        user_turns = [sample.conversation[i] for i in answered_user_turns(sample, len(outputs))]
        user_arousal: list[float | None] | None = None
        user_cues: list[Cues] | None = None
        if any(t.audio is not None for t in user_turns):
            measured_user = [_measure_turn(turn) for turn in user_turns]
            user_arousal = arousal_trajectory([m[0] for m in measured_user])
            user_cues = [m[1] for m in measured_user]

        model_cues = [
            affect_cues(f, c, ANALYSIS_RATE_HZ, o.text)
            for f, c, o in zip(model_features, clips, outputs, strict=True)
        ]
        metrics, changes, events, verdict = continuity_metrics(model_cues, user_cues)
        measured = [a for a in model_arousal if a is not None]
        metrics["affect_variance"] = float(np.var(measured)) if len(measured) >= 2 else None
        metrics["user_alignment"] = (
            _correlation(model_arousal, user_arousal) if user_arousal is not None else None
        )
        if levels is not None:
            metrics["emotion_label_agreement"] = label_agreement(levels, model_arousal)
        per_turn = [
            {
                "turn": k,
                "arousal": _rounded(a),
                "user_arousal": _rounded(user_arousal[k]) if user_arousal is not None else None,
                "cues": {n: _rounded(v) for n, v in arousal_cues(f).items()},
                "affect_cues": {n: _rounded(v) for n, v in cues.items()},
            }
            | ({"expected_level": levels[k]} if levels is not None else {})
            for k, (a, f, cues) in enumerate(zip(model_arousal, model_features, model_cues, strict=True))
        ]
        # per-turn numbers summary.json averages by turn index over conversations
        turn_metrics = [
            {
                "turn": k,
                "arousal": _rounded(a),
                "jump_ratio": None if k == 0 else changes[k - 1]["jump_ratio"],
            }
            for k, a in enumerate(model_arousal)
        ]
        details: dict[str, Any] = {
            "per_turn": per_turn,
            "changes": changes,
            "events": events,
            "turn_metrics": turn_metrics,
            "responsiveness_verdict": verdict,
            "jump_thresholds": JUMP_THRESHOLDS,
            "user_audio": user_arousal is not None,
        }
        if self.ser_model is not None:
            expected = sample.reference.get("emotions")
            classifier = EmotionClassifier(self.ser_model)
            dists = [classifier.classify(c, ANALYSIS_RATE_HZ) for c in clips]
            ser, ser_rows = ser_metrics(dists, expected)
            metrics |= ser
            details |= {"ser_model": self.ser_model, "ser_turns": ser_rows}
        unjustified, ignored = metrics["unjustified_jumps"], metrics["ignored_user_changes"]
        return Score(
            judge=self.name,
            metrics=metrics,
            passed=None if unjustified is None or ignored is None else unjustified == 0 and ignored == 0,
            explanation=_explain(metrics, verdict),
            details=details,
        )


def _explain(metrics: dict[str, float | None], verdict: str | None) -> str:
    jump_max = metrics["affect_jump_max"]
    if jump_max is None:
        return "single measurable turn: no continuity to judge"
    parts = [
        f"largest cue change {jump_max:.2f}x its threshold",
        f"{metrics['affect_jumps']:.0f} jump(s)",
        f"{metrics['affect_drifts']:.0f} drift(s)",
    ]
    if metrics["unjustified_jumps"] is not None:
        parts.append(f"{metrics['unjustified_jumps']:.0f} not explained by the user")
    if verdict is not None:
        parts.append(f"responsiveness: {verdict}")
    return ", ".join(parts)


@register_judge("emotion-ser")
class EmotionSERJudge(Judge):
    """Turn-to-turn consistency of a speech-emotion classifier (EVALKIT_SER_MODEL) on the model's
    spoken turns: Jensen-Shannon divergence and top-label flips."""

    name = "emotion-ser"
    needs_speech = True
    execution = "process"
    metrics = SER_METRICS

    Options = SEROptions

    def __init__(self, model: str | None = None):
        self.options: SEROptions = build_options(SEROptions, self.name, ser_model=model)
        self.model = _required_ser_model(self.options)

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        try:
            expected = sample.reference.get("emotions")
            if expected is not None:
                label_levels(sample, len(outputs))  # same validation as the acoustic judge
            clips = output_audio(sample, outputs)
        except EvalkitError as exc:
            return _error(self.name, str(exc))
        classifier = EmotionClassifier(self.model)
        dists = [classifier.classify(c, ANALYSIS_RATE_HZ) for c in clips]
        metrics, rows = ser_metrics(dists, expected)
        flips = metrics["ser_label_flips"]
        return Score(
            judge=self.name,
            metrics=metrics,
            explanation=f"top labels {[d.top for d in dists]}"
            + ("" if flips is None else f", {flips:.0f} flip(s)"),
            details={"ser_model": self.model, "ser_turns": rows},
        )


# -- the LLM judge ------------------------------------------------------------------------------------
EMOTION_PROMPT = """You are judging the emotional behaviour of a spoken voice assistant in a conversation.
Below is the conversation as text. Each assistant turn is followed by a summary of how it SOUNDED
(prosody measured from its audio; "arousal" is relative to the assistant's own average in this
conversation, 0 = its usual level, +1 = clearly more animated, -1 = clearly more subdued).

<conversation>
{conversation}
</conversation>

Rate the assistant's emotional appropriateness and continuity on a 1-5 scale:
5 = the emotional tone of every reply fits what the user said and how they feel, and it changes
    only when the conversation gives a reason;
4 = appropriate and continuous with minor lapses;
3 = mostly appropriate, but at least one reply sounds emotionally off or changes tone without reason;
2 = several replies are emotionally inappropriate or the tone swings without reason;
1 = the emotional tone is consistently inappropriate or erratic.
Judge the tone (words and how they sound), not the factual correctness of the answers.

Return just a json object with the fields "score" (an integer from 1 to 5) and "justification"
(a string), in markdown format. Do not include any other text in the response."""

EMOTION_REASK = (
    "Your reply could not be read: {error}. Return just the json object, with the fields "
    '"score" (an integer from 1 to 5) and "justification" (a string), in markdown format. '
    "Do not include any other text in the response."
)


class EmotionParseError(ValueError):
    """The judge's reply is not the ``{score, justification}`` object the prompt asked for."""


@dataclass(frozen=True)
class EmotionVerdict:
    score: int
    justification: str


def parse_emotion_verdict(text: str | None) -> EmotionVerdict:
    """Exactly one JSON object, bare or in a Markdown code fence, with ``score`` a JSON integer 1..5
    (not "4", not 4.5, not true) and ``justification`` a string. Raises ``EmotionParseError``."""
    score, justification = score_and_justification(
        load_json_object(text, EmotionParseError), EmotionParseError
    )
    return EmotionVerdict(score=score, justification=justification)


def prosody_summary(features: ProsodyFeatures, arousal: float | None) -> str:
    """One line a judge model can read: what the reply sounded like."""

    def num(value: float | None, fmt: str, unit: str) -> str:
        return "n/a" if value is None else f"{value:{fmt}} {unit}"

    return (
        f"[prosody: {features.duration_s:.1f} s, median pitch {num(features.f0_median_hz, '.0f', 'Hz')}, "
        f"pitch variation {num(features.pitch_sd_st, '.1f', 'st')}, "
        f"loudness {features.energy_mean_db:.0f} dBFS, "
        f"tempo {num(features.syllable_rate_sps, '.1f', 'syllables/s')}, "
        f"arousal {'n/a' if arousal is None else f'{arousal:+.1f}'}]"
    )


@register_judge("emotion-llm")
class EmotionLLMJudge(ModelJudge):
    """Emotional appropriateness and continuity rated 1-5 by a judge model (EVALKIT_EMOTION_JUDGE)
    from the conversation text and a prosody summary of each spoken reply. ``revision`` pins the
    judge model so its cached answers serve other runs (``judges.model_judge``)."""

    model_env = EMOTION_JUDGE_ENV
    name = "emotion-llm"
    metrics = (
        MetricSpec(
            name="emotion_llm_score",
            direction="higher",
            range=(1.0, 5.0),
            description="emotional appropriateness and continuity rated 1-5 by the judge model",
        ),
    )

    def __init__(
        self,
        model_spec: str | None = None,
        retries: int = 2,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        revision: str | None = None,
    ):
        super().__init__(
            self.model_from_env(model_spec), retries=retries, max_tokens=max_tokens, revision=revision
        )

    def _prosody_lines(self, outputs: list[ModelOutput]) -> list[str | None]:
        """A prosody summary per output with audio (None for text-only outputs)."""
        feats = [
            None
            if o.audio is None
            else extract_features(audio_io.load(o.audio, sample_rate=ANALYSIS_RATE_HZ)[0], ANALYSIS_RATE_HZ)
            for o in outputs
        ]
        measured = [f for f in feats if f is not None]
        arousal = iter(arousal_trajectory([arousal_cues(f) for f in measured]))
        return [None if f is None else prosody_summary(f, next(arousal)) for f in feats]

    def conversation_text(self, sample: Sample, outputs: list[ModelOutput], prosody: list[str | None]) -> str:
        """``User:``/``Assistant:`` blocks: user transcripts (else their text, else a note that only
        audio exists) and every model reply followed by its prosody summary."""
        answered = answered_user_turns(sample, len(outputs))
        reply_at = dict(zip(answered, range(len(outputs)), strict=True))
        blocks: list[str] = []
        for i, turn in enumerate(sample.conversation):
            if turn.role == "user":
                said = turn.transcript or turn.text or "(spoken; no transcript available)"
                blocks.append(f"User: {said.strip()}")
            elif turn.role == "assistant" and i < min(answered):
                blocks.append(f"Assistant (earlier, scripted): {(turn.text or '').strip()}")
            if i in reply_at:
                k = reply_at[i]
                line = f"Assistant: {(outputs[k].text or '').strip()}"
                if prosody[k] is not None:
                    line += f"\n{prosody[k]}"
                blocks.append(line)
        return "\n\n".join(blocks)

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        try:
            prosody = await asyncio.to_thread(self._prosody_lines, outputs)
            prompt = EMOTION_PROMPT.format(conversation=self.conversation_text(sample, outputs, prosody))
        except EvalkitError as exc:
            return self._error(str(exc), attempts=0)
        result = await self.ask_until_parsed(
            sample, prompt, parse_emotion_verdict, EmotionParseError, EMOTION_REASK
        )
        if result.error is not None:
            return self._error(self.call_error(result.error), result.attempts)
        if result.value is None:
            return self._error(
                f"judge reply unreadable after {result.attempts} attempts: {result.problems[-1]}",
                result.attempts,
            )
        verdict = result.value
        details: dict[str, Any] = {
            "justification": verdict.justification,
            "judge_model": self.model_spec,
            "judge_attempts": result.attempts,
            "judge_cached": all(result.cached),
        }
        if result.problems:
            details["judge_parse_errors"] = result.problems
        return Score(
            judge=self.name,
            metrics={"emotion_llm_score": float(verdict.score)},
            explanation=f"{verdict.score}/5: {verdict.justification}",
            details=details,
        )
