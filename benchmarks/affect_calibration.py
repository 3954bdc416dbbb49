"""Calibrate the per-cue jump thresholds of ``judges.affect`` on natural speech.

Within-speaker turn-to-turn variation of natural, unmanipulated speech: the "steady" validation
conversations of ``evalkit.testing.speech_validation`` (Piper's joe voice, a different sentence and
the steady-speaker jitter every turn, no manipulation) and the user turns of its "steady" dialogues
(the second, female voice), seeds 100.. (the tests use other seeds).
For every pair of two turns of one conversation we take each cue's |change| and print its
percentiles (``judges.affect.CALIBRATION``). ``--espeak`` prints the same for espeak-ng sentences
at their own level (``CALIBRATION_ESPEAK``; the validation renders are level-normalised), and each
of ``JUMP_THRESHOLDS`` is the larger 99.5th percentile of the two, rounded up to 0.1.
Run: ``.venv/bin/python benchmarks/affect_calibration.py [N | --espeak]``.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np

from evalkit.judges.affect import JUMP_THRESHOLDS, affect_cues
from evalkit.judges.speech_features import extract_features
from evalkit.testing import speech_validation as sv

PERCENTILES = (50, 95, 99, 99.5, 100)
N_TURNS = 8


def main(n_conversations: int) -> None:
    changes: dict[str, list[float]] = {c: [] for c in JUMP_THRESHOLDS}
    for seed in range(100, 100 + n_conversations):
        conv = sv.conversation("steady", seed=seed, n_turns=N_TURNS)
        speakers = [
            [
                affect_cues(extract_features(x, conv.rate), x, conv.rate, text)
                for x, text in zip(conv.clips, conv.texts, strict=True)
            ]
        ]
        # the second voice (the dialogues' user) without text: its tempo is not measured
        dialogue = sv.dialogue("steady", seed=seed, n_turns=N_TURNS)
        speakers.append(
            [affect_cues(extract_features(x, dialogue.rate), x, dialogue.rate, None) for x in dialogue.user]
        )
        for cues in speakers:
            for a, b in itertools.combinations(cues, 2):
                for cue, values in changes.items():
                    if a[cue] is not None and b[cue] is not None:
                        values.append(abs(b[cue] - a[cue]))
    print(f"{sv.BACKEND}: {n_conversations} steady conversations x {N_TURNS} turns, two voices")
    for cue, values in changes.items():
        figures = ", ".join(f"p{p}={np.percentile(values, p):.2f}" for p in PERCENTILES)
        print(f"{cue:12s} pairs={len(values)} {figures}  (threshold now {JUMP_THRESHOLDS[cue]})")


#: espeak-ng: 20 sentences (the validation set's and a few questions) in three voices, at espeak's
#: own level for each sentence (no normalisation, unlike the validation renders)
ESPEAK_VOICES = ("en-us", "en-us+f3", "en-gb")
ESPEAK_EXTRA = (
    "The weather today is sunny with a light breeze from the west.",
    "I think you should try the pasta, it is really very good.",
    "Sure, let me check the train times for you this evening.",
    "That sounds wonderful, congratulations on the new job!",
    "What is the weather like today?",
    "Where should I eat tonight?",
    "When does the last train leave?",
    "I finally got the job I wanted.",
)


def espeak_main() -> None:
    import subprocess

    from evalkit import audio as audio_io
    from evalkit.records import AudioRef

    changes: dict[str, list[float]] = {c: [] for c in JUMP_THRESHOLDS}
    for voice in ESPEAK_VOICES:
        cues = []
        for text in (*sv.SENTENCES, *ESPEAK_EXTRA):
            wav = subprocess.run(
                ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
            )
            x, rate = audio_io.load(AudioRef(data=wav.stdout), sample_rate=16000)
            cues.append(affect_cues(extract_features(x, rate), x, rate, text))
        for a, b in itertools.combinations(cues, 2):
            for cue, values in changes.items():
                if a[cue] is not None and b[cue] is not None:
                    values.append(abs(b[cue] - a[cue]))
    print(f"espeak-ng: {len(ESPEAK_VOICES)} voices")
    for cue, values in changes.items():
        figures = ", ".join(f"p{p}={np.percentile(values, p):.2f}" for p in PERCENTILES)
        print(f"{cue:12s} pairs={len(values)} {figures}  (threshold now {JUMP_THRESHOLDS[cue]})")


if __name__ == "__main__":
    if "--espeak" in sys.argv:
        espeak_main()
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
