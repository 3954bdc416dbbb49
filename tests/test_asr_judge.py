"""The asr judge: Whisper tiny.en on espeak-ng speech against the model's own text."""

from __future__ import annotations

import pytest

from evalkit.judges.asr_consistency import error_rates, normalise
from evalkit.judges.base import load_judge
from evalkit.models.tts import espeak
from evalkit.records import AudioRef, ModelOutput, Sample, Turn

SPOKEN = "The train to the city leaves at seven in the morning."
OTHER = "Purple elephants quietly painted seventeen violins underwater yesterday."


def _sample() -> Sample:
    return Sample(id="s", task="t", conversation=[Turn(role="user", text="when does the train leave?")])


def test_normalise_rules():
    assert normalise("Hello, World!  It\u2019s twelve-thirty.") == "hello world it's 12 30"
    assert normalise("That costs 1,200 dollars, or 3.5 each.") == "that costs 1200 dollars or 3.5 each"
    assert error_rates(["a b c d"], ["a x c"]) == (pytest.approx(0.5), pytest.approx(3 / 7))


@pytest.mark.slow
def test_asr_judge_wer_and_word_times():
    judge = load_judge("asr")
    audio = AudioRef(data=espeak(SPOKEN, wpm=150, gap=2))
    same = judge.score(_sample(), [ModelOutput(text=SPOKEN, audio=audio)])
    other = judge.score(_sample(), [ModelOutput(text=OTHER, audio=audio)])
    assert same.metrics["wer"] <= 0.35, same.details
    assert other.metrics["wer"] > 0.7, other.details
    assert same.metrics["cer"] < other.metrics["cer"]
    row = same.details["turn_asr"][0]
    assert row["turn"] == 0 and row["transcript"]
    words = row["words"]
    assert len(words) >= 5
    starts = [start for _, start, _ in words]
    assert starts == sorted(starts)
    assert all(start <= end for _, start, end in words)
    assert "turns" not in same.details  # summary.py reads details["turns"] as correctness


def test_asr_judge_requires_speech_and_text():
    judge = load_judge("asr")
    with pytest.raises(ValueError, match="no speech"):
        judge.score(_sample(), [ModelOutput(text="hello")])
    # an empty answer is an answer: no WER exists, so a counted parse failure, not a judge error
    empty = judge.score(_sample(), [ModelOutput(text=" ?! ", audio=AudioRef(data=espeak("hello")))])
    assert empty.error is None and empty.parse_failed and "text is empty" in empty.explanation
    assert empty.metrics == {"wer": None, "cer": None}
