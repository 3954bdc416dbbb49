"""Deterministic speech synthesis for the demo tasks (espeak-ng, two voices at two rates).

Clips are rendered once into ``<cache>/datasets/demo/<version>/<task>/`` (16 kHz mono 16-bit WAV)
through a temporary folder and an atomic rename, so concurrent first runs never see half a set.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.models.tts import espeak, espeak_version
from evalkit.paths import cache_dir, publish_folder
from evalkit.records import AudioRef, Sample

#: (espeak-ng voice, words per minute, word gap), alternated by sample index. Slow speech with
#: gaps: at espeak-ng's default pace Whisper tiny.en mishears about half of the questions.
VOICES: list[tuple[str, int, int]] = [("en-us", 120, 4), ("en-us+f3", 125, 3)]
RATE_HZ = 16000


def synthesise(text: str, voice: str, wpm: int, gap: int) -> bytes:
    """One demo clip: 16 kHz mono WAV."""
    return espeak(text, voice=voice, wpm=wpm, gap=gap, sample_rate=RATE_HZ)


class DemoDataset:
    """The on-disk home of one version of the demo audio."""

    def __init__(self, version: str):
        self.version = version
        self.root = cache_dir() / "datasets" / "demo" / version

    def synthesiser_version(self) -> str:
        return espeak_version()

    def materialise(self, task: str, samples: list[Sample]) -> list[Sample]:
        """Attach audio to each user turn (from its transcript), synthesising missing clips."""
        folder = self.root / task
        if not folder.is_dir():
            self._render(folder, samples)
        out = []
        for index, sample in enumerate(samples):
            voice = VOICES[index % len(VOICES)][0]
            turns = []
            for k, turn in enumerate(sample.conversation):
                path = folder / f"{sample.id}_t{k}.wav"
                turns.append(turn.model_copy(update={"audio": AudioRef(path=str(path), sample_rate=RATE_HZ)}))
            out.append(
                sample.model_copy(update={"conversation": turns, "meta": {**sample.meta, "voice": voice}})
            )
        return out

    def _render(self, folder: Path, samples: list[Sample]) -> None:
        def build(tmp: Path) -> None:
            for index, sample in enumerate(samples):
                voice, wpm, gap = VOICES[index % len(VOICES)]
                for k, turn in enumerate(sample.conversation):
                    if turn.transcript is None:
                        raise EvalkitError(f"demo sample {sample.id} turn {k} has no transcript to speak")
                    (tmp / f"{sample.id}_t{k}.wav").write_bytes(synthesise(turn.transcript, voice, wpm, gap))

        publish_folder(folder, build)
