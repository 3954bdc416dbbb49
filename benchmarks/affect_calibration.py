"""Calibrate the per-cue jump thresholds of ``judges.affect`` on natural speech.

Within-speaker turn-to-turn variation: each voice says 40 different sentences at its default
(unmanipulated) delivery; for every ordered pair of two different sentences of one voice we take
each cue's |change|, and print its percentiles. ``JUMP_THRESHOLDS`` are the 99.5th percentiles,
rounded up (figures in ``judges.affect.CALIBRATION``).
Run: ``.venv/bin/python benchmarks/affect_calibration.py``.
"""

from __future__ import annotations

import itertools
import subprocess

import numpy as np

from evalkit import audio as audio_io
from evalkit.judges.affect import JUMP_THRESHOLDS, affect_cues
from evalkit.judges.speech_features import ANALYSIS_RATE_HZ, extract_features
from evalkit.records import AudioRef

VOICES = ("en-us", "en-gb", "en-us+f3")
SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "I think you should try the pasta, it is really very good.",
    "Sure, let me check the train times for you this evening.",
    "That sounds wonderful, congratulations on the new job!",
    "The museum opens at nine and closes at half past five.",
    "You can pay by card or in cash at the front desk.",
    "It usually takes about twenty minutes to get there by bus.",
    "I would recommend booking a table before the weekend.",
    "The package should arrive on Thursday or Friday at the latest.",
    "Remember to bring a jacket, it gets cold after sunset.",
    "The library has a quiet room on the second floor.",
    "Your appointment has been moved to Monday morning.",
    "Most people find the first lesson the hardest.",
    "The recipe needs two eggs, flour, sugar and a pinch of salt.",
    "There is a pharmacy just around the corner from the station.",
    "I can set a reminder for you an hour before the meeting.",
    "The concert was cancelled because of the storm.",
    "Drinking enough water helps you stay focused during the day.",
    "The flight to Lisbon leaves from gate twelve.",
    "Let me read the last message back to you.",
    "Your order contains three items and a gift card.",
    "The park is a nice place for a walk on Sunday.",
    "It might rain later, so take an umbrella just in case.",
    "The battery is low, you should plug in the charger.",
    "I found four restaurants near you that are still open.",
    "The answer to your question is forty two.",
    "Turn left at the next light and then keep straight on.",
    "The school holidays start at the end of June.",
    "You have two new emails from your manager.",
    "A good night's sleep makes a big difference.",
    "The price includes breakfast and free parking.",
    "He said he would call you back after lunch.",
    "The shop on the high street sells fresh bread every morning.",
    "Many birds fly south when the days get shorter.",
    "The meeting notes have been shared with the whole team.",
    "You can cancel the subscription at any time.",
    "The river is calm and perfect for a boat trip.",
    "The tickets are sold out for tonight, but not for tomorrow.",
    "I am sorry to hear that, is there anything I can do?",
    "The train is running about ten minutes late.",
)
PERCENTILES = (50, 90, 95, 99, 99.5, 100)


def speak(text: str, voice: str) -> AudioRef:
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    return AudioRef(data=wav)


def main() -> None:
    changes: dict[str, list[float]] = {c: [] for c in JUMP_THRESHOLDS}
    for voice in VOICES:
        cues = []
        for text in SENTENCES:
            samples, _ = audio_io.load(speak(text, voice), sample_rate=ANALYSIS_RATE_HZ)
            cues.append(affect_cues(extract_features(samples, ANALYSIS_RATE_HZ)))
        for a, b in itertools.permutations(cues, 2):
            for cue in changes:
                if a[cue] is not None and b[cue] is not None:
                    changes[cue].append(abs(b[cue] - a[cue]))
    print(f"{len(VOICES)} voices x {len(SENTENCES)} sentences; pairs per cue: {len(changes['loudness'])}")
    for cue, values in changes.items():
        figures = ", ".join(f"p{p}={np.percentile(values, p):.2f}" for p in PERCENTILES)
        print(f"{cue:12s} {figures}  (threshold now {JUMP_THRESHOLDS[cue]})")


if __name__ == "__main__":
    main()
