"""Calibrate the per-cue jump thresholds of ``judges.affect`` on natural speech.

Within-speaker turn-to-turn variation of natural, unmanipulated speech: the "steady" validation
conversations of ``evalkit.testing.speech_validation`` (Piper's joe voice, a different sentence and
the steady-speaker jitter every turn, no manipulation) and the user turns of its "steady" dialogues
(the second, female voice), seeds 100.. (the tests use other seeds).
For every pair of two turns of one conversation we take each cue's |change| and print its
percentiles; ``JUMP_THRESHOLDS`` are the 99.5th percentiles rounded up to 0.1 (figures kept in
``judges.affect.CALIBRATION``). Run: ``.venv/bin/python benchmarks/affect_calibration.py [N]``.
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
