"""Calibrate the per-cue jump thresholds of ``judges.affect`` on natural speech.

Within-speaker turn-to-turn variation of natural, unmanipulated speech: the "steady" validation
conversations of ``evalkit.testing.speech_validation`` (Piper's joe voice, a different sentence and
the steady-speaker jitter every turn, no manipulation) and the user turns of its "steady" dialogues
(the second, female voice), seeds 100.. (the tests use other seeds).
For every pair of two turns of one conversation we take each cue's |change| and print its
percentiles (``judges.affect.CALIBRATION``). ``--espeak`` prints the same for espeak-ng sentences
at their own level (``CALIBRATION_ESPEAK``; the validation renders are level-normalised), and each
of ``JUMP_THRESHOLDS`` is the larger 99.5th percentile of the two, rounded up to 0.1.
``--shift [N]`` prints the constants of the sustained-shift test (``TURN_SD``,
``SHIFT_CRITICAL_Z``) and its hit rates on N renders of the single-cue jumps and of steady speech.
Run: ``.venv/bin/python benchmarks/affect_calibration.py [N | --espeak | --shift [N]]``.
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


def pair_changes(speakers: list[list[dict[str, float | None]]]) -> dict[str, list[float]]:
    """cue -> |change| over every pair of two turns of one speaker's conversation."""
    changes: dict[str, list[float]] = {c: [] for c in JUMP_THRESHOLDS}
    for cues in speakers:
        for a, b in itertools.combinations(cues, 2):
            for cue, values in changes.items():
                if a[cue] is not None and b[cue] is not None:
                    values.append(abs(b[cue] - a[cue]))
    return changes


def print_percentiles(title: str, changes: dict[str, list[float]]) -> None:
    print(title)
    for cue, values in changes.items():
        figures = ", ".join(f"p{p}={np.percentile(values, p):.2f}" for p in PERCENTILES)
        print(f"{cue:12s} pairs={len(values)} {figures}  (threshold now {JUMP_THRESHOLDS[cue]})")


def main(n_conversations: int) -> None:
    speakers = []
    for seed in range(100, 100 + n_conversations):
        speakers.append(_cues_of(sv.conversation("steady", seed=seed, n_turns=N_TURNS)))
        speakers.append(_user_cues(seed))
    title = f"{sv.BACKEND}: {n_conversations} steady conversations x {N_TURNS} turns, two voices"
    print_percentiles(title, pair_changes(speakers))


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

    speakers = []
    for voice in ESPEAK_VOICES:
        cues = []
        for text in (*sv.SENTENCES, *ESPEAK_EXTRA):
            wav = subprocess.run(
                ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
            )
            x, rate = audio_io.load(AudioRef(data=wav.stdout), sample_rate=16000)
            cues.append(affect_cues(extract_features(x, rate), x, rate, text))
        speakers.append(cues)
    print_percentiles(f"espeak-ng: {len(ESPEAK_VOICES)} voices", pair_changes(speakers))


def _cues_of(conv: sv.Conversation) -> list[dict[str, float | None]]:
    return [
        affect_cues(extract_features(x, conv.rate), x, conv.rate, text)
        for x, text in zip(conv.clips, conv.texts, strict=True)
    ]


def _user_cues(seed: int) -> list[dict[str, float | None]]:
    """The second voice: the user turns of a steady dialogue, without text (no tempo)."""
    dialogue = sv.dialogue("steady", seed=seed, n_turns=N_TURNS)
    return [affect_cues(extract_features(x, dialogue.rate), x, dialogue.rate, None) for x in dialogue.user]


def shift_main(n_seeds: int) -> None:
    """The sustained-shift test's constants and what it catches: ``TURN_SD`` (pooled
    within-conversation SD over 32 steady conversations of the model's voice and 16 of the user's),
    the Monte Carlo ``SHIFT_CRITICAL_Z`` table, then per case the share of ``n_seeds`` renders (seeds
    700..) with a jump of the manipulated cue at the change turn, and steady renders with any jump."""
    from evalkit.judges.affect import SHIFT_CRITICAL_Z, SHIFT_MIN_SIDE, TURN_SD, affect_events

    speakers = [_cues_of(sv.conversation("steady", seed=s, n_turns=N_TURNS)) for s in range(100, 132)]
    for seed in range(100, 116):
        speakers.append(_user_cues(seed))
    for cue in TURN_SD:
        residuals, dof = [], 0
        for turns in speakers:
            y = np.array([t[cue] for t in turns if t[cue] is not None])
            if len(y) >= 2:
                residuals.extend(y - y.mean())
                dof += len(y) - 1
        sd = float(np.sqrt(np.sum(np.square(residuals)) / dof))
        print(f"{cue:12s} turn SD {sd:.3f} over {len(speakers)} conversations (now {TURN_SD[cue]})")
    rng = np.random.default_rng(1)
    for n in SHIFT_CRITICAL_Z:
        y = rng.standard_normal((40_000, n))
        best = np.zeros(len(y))
        for k in range(SHIFT_MIN_SIDE, n - SHIFT_MIN_SIDE + 1):
            z = (y[:, k:].mean(1) - y[:, :k].mean(1)) / np.sqrt(1 / k + 1 / (n - k))
            best = np.maximum(best, np.abs(z))
        print(f"n={n:2d} critical z (99.5%) {np.percentile(best, 99.5):.2f} (now {SHIFT_CRITICAL_Z[n]})")
    seeds = range(700, 700 + n_seeds)
    for case, cue in (("jump_tempo", "tempo"), ("jump_pitch_range", "pitch_range"), ("steady", None)):
        hits = {"turn": 0, "turn+sustained": 0}
        for seed in seeds:
            conv = sv.conversation(case, seed=seed, n_turns=N_TURNS)
            jumps, _ = affect_events(_cues_of(conv))
            for tests in hits:
                found = [e for e in jumps if e["evidence"] in tests.split("+")]
                at_turn = {(e["turn"], e["cue"]) for e in found}
                hits[tests] += bool(found) if cue is None else (conv.change_turn, cue) in at_turn
        what = "any jump" if cue is None else f"{cue} jump at the change turn"
        counts = ", ".join(f"{tests} test: {n}/{n_seeds}" for tests, n in hits.items())
        print(f"{case:17s} {what}: {counts} renders")


if __name__ == "__main__":
    if "--espeak" in sys.argv:
        espeak_main()
    elif "--shift" in sys.argv:
        shift_main(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 10)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
