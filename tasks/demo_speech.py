"""``demo-speech``: spoken conversations whose *replies* differ in known ways, for the speech judges.

The other demo tasks test what a model says; this one tests the judges of *how* it is said
(naturalness, prosody, emotion, voice consistency, ASR consistency). Every conversation is
rendered offline with espeak-ng in five variants that differ only in how the assistant's replies
sound, so the expected ordering of each judge's metric is known by construction:

- ``clean``: the reference rendering (espeak-ng's default prosody, one voice);
- ``flat``: every reply inside SSML ``<prosody range="x-low">``: nearly monotone pitch;
- ``expressive``: ``range="x-high"`` with the pitch level moved sentence by sentence;
- ``voice-switch``: as clean, but the third reply is spoken in a different espeak-ng voice;
- ``noisy``: the clean replies with white noise at ``NOISE_SNR_DB`` (seeded, deterministic).

Run it with ``--model replay`` to score the pre-rendered replies (the user clips name them; see
``evalkit.models.replay``), or with any audio-out model (``--model cascade``), which ignores them and
speaks its own replies. The words of a conversation are the same in every variant, so a
per-variant comparison in summary.json (``group_by=("variant",)``) isolates the sound.

Audio is synthesised once into ``<cache>/datasets/demo-speech/<VERSION>/`` through a temporary
folder and an atomic rename, like the ``demo`` tasks; bump ``VERSION`` whenever anything that
shapes the audio changes. The manifest records a fingerprint over every sample and audio byte.
"""

from __future__ import annotations

import itertools
import subprocess
import zlib
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.models.replay import replay_comment, sidecar_bytes, wav_with_comment
from evalkit.models.tts import espeak_binary, espeak_version
from evalkit.paths import cache_dir, publish_folder
from evalkit.records import AudioRef, GenerationParams, Sample, Turn
from evalkit.registry import register_task
from evalkit.tasks.base import InMemoryTask

VERSION = "v1"
RATE_HZ = 16000
#: the user: slow speech with word gaps, which Whisper tiny.en (the cascade's ears) hears reliably
USER_VOICE, USER_WPM, USER_GAP = "en-us", 120, 4
REPLY_VOICE, REPLY_WPM = "en-us", 150
#: voice-switch: this voice speaks the reply at index SWITCH_TURN (the third reply)
SWITCH_VOICE, SWITCH_TURN = "en-us+f3", 2
NOISE_SNR_DB = 5.0
VARIANTS = ("clean", "flat", "expressive", "voice-switch", "noisy")
#: pitch level per sentence in the expressive variant (cycled): moves the pitch up and down
EXPRESSIVE_PITCH = ("+25%", "-15%", "+10%", "-20%")

#: (topic, [(user question, assistant reply), ...]): 3-4 turns each, later turns refer back
CONVERSATIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "trip",
        [
            (
                "I want to visit the museum on Saturday.",
                "That sounds lovely. The museum opens at ten in the morning. Tickets cost twelve dollars.",
            ),
            (
                "How do I get there from the station?",
                "Take the number four bus from the station. It stops right at the front door.",
            ),
            (
                "Is there somewhere to eat nearby?",
                "Yes, there is a small cafe across the street. It serves soup and fresh bread.",
            ),
            (
                "What time should I leave to be there when it opens?",
                "Leave the station at half past nine. The bus ride takes about twenty minutes.",
            ),
        ],
    ),
    (
        "cooking",
        [
            (
                "I would like to bake bread this afternoon.",
                "Great idea. You need flour, water, salt and yeast. Nothing else is required.",
            ),
            (
                "How long does the dough need to rise?",
                "Let it rise for about one hour in a warm place. It should double in size.",
            ),
            (
                "And how hot should the oven be?",
                "Heat the oven to two hundred degrees. Bake the loaf for thirty five minutes.",
            ),
        ],
    ),
    (
        "garden",
        [
            (
                "My tomato plants look a little yellow.",
                "Yellow leaves often mean the soil is too wet. Water them less often for a week.",
            ),
            (
                "Should I move them into the sun?",
                "Yes, tomatoes love the sun. Give them at least six hours of light each day.",
            ),
            (
                "When can I pick the first tomatoes?",
                "Usually about two months after planting. Pick them when they are deep red.",
            ),
            (
                "Thank you, that helps a lot.",
                "You are very welcome. I hope you enjoy a big harvest this summer.",
            ),
        ],
    ),
]


def _sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def reply_ssml(text: str, variant: str) -> str:
    """The SSML a reply is spoken from: only ``flat`` and ``expressive`` change the prosody."""
    if variant == "flat":
        return f'<speak><prosody range="x-low">{escape(text)}</prosody></speak>'
    if variant == "expressive":
        spans = [
            f'<prosody range="x-high" pitch="{pitch}">{escape(s)}</prosody> '
            for pitch, s in zip(itertools.cycle(EXPRESSIVE_PITCH), _sentences(text))  # noqa: B905
        ]
        return "<speak>" + "".join(spans) + "</speak>"
    return f"<speak>{escape(text)}</speak>"


def speak(text: str, voice: str, wpm: int, gap: int = 0, ssml: bool = False) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32 (``ssml``: ``text`` is SSML, read with ``espeak-ng -m``)."""
    args = [espeak_binary(), "-v", voice, "-s", str(wpm), "-g", str(gap), "--stdout"]
    proc = subprocess.run([*args, *(["-m"] if ssml else []), text], capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise EvalkitError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace')}")
    samples, _ = audio_io.load(AudioRef(data=proc.stdout), sample_rate=RATE_HZ)
    return samples


def add_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` below the clip's mean power (whole clip, pauses included);
    scaled down as a whole if the mix would clip, which keeps the SNR."""
    power = float(np.mean(samples.astype(np.float64) ** 2))
    noise = np.random.default_rng(seed).standard_normal(samples.shape[0]) * np.sqrt(
        power / 10 ** (snr_db / 10)
    )
    mixed = samples + noise
    peak = float(np.max(np.abs(mixed)))
    if peak > 0.99:
        mixed *= 0.99 / peak
    return mixed.astype(np.float32)


def render_reply(text: str, variant: str, turn: int, name: str) -> np.ndarray:
    """One assistant reply as the variant prescribes (``name`` seeds the noise)."""
    voice = SWITCH_VOICE if variant == "voice-switch" and turn == SWITCH_TURN else REPLY_VOICE
    samples = speak(reply_ssml(text, variant), voice, REPLY_WPM, ssml=True)
    if variant == "noisy":
        samples = add_noise(samples, NOISE_SNR_DB, zlib.crc32(name.encode()))
    return samples


def reply_info(variant: str, turn: int) -> dict[str, Any]:
    """What a reply is by construction, for judges, reports and tests."""
    return {
        "voice": SWITCH_VOICE if variant == "voice-switch" and turn == SWITCH_TURN else REPLY_VOICE,
        "prosody_range": {"flat": "x-low", "expressive": "x-high"}.get(variant, "default"),
        "noise_snr_db": NOISE_SNR_DB if variant == "noisy" else None,
    }


@register_task("demo-speech")
class DemoSpeech(InMemoryTask):
    """Spoken conversations with replies rendered flat, expressive, voice-switched or noisy (espeak-ng)."""

    name = "demo-speech"
    judges = ("naturalness", "asr", "prosody", "emotion", "voice")
    group_by = ("variant", "topic")
    primary_metric = "dnsmos_ovrl"
    requires = ("audio_in", "audio_out", "multi_turn")
    system_prompt = "You are a helpful voice assistant. The user speaks to you; reply briefly."
    params = GenerationParams(max_tokens=96, temperature=0.0)

    def __init__(self) -> None:
        self.root = cache_dir() / "datasets" / "demo-speech" / VERSION

    def build_samples(self) -> list[Sample]:
        """Conversation-major order, so ``--limit 5`` already covers every variant."""
        samples = []
        for i, (topic, turns) in enumerate(CONVERSATIONS):
            for variant in VARIANTS:
                sid = f"{topic}-{variant}"
                replies = [
                    {"text": reply, "audio": f"{sid}_t{k}.reply.wav", **reply_info(variant, k)}
                    for k, (_, reply) in enumerate(turns)
                ]
                samples.append(
                    Sample(
                        id=sid,
                        task=self.name,
                        conversation=[
                            Turn(
                                role="user",
                                transcript=question,
                                audio=AudioRef(path=str(self.root / f"{sid}_t{k}.wav"), sample_rate=RATE_HZ),
                            )
                            for k, (question, _) in enumerate(turns)
                        ],
                        reference={"replies": replies},
                        meta={"variant": variant, "topic": topic, "conversation": i},
                    )
                )
        return samples

    def parse(self) -> list[Sample]:
        samples = self.build_samples()
        if not self.root.is_dir():
            self._render(samples)
        return samples

    def _render(self, samples: list[Sample]) -> None:
        """Synthesise every clip into a temporary folder, then rename it into place atomically."""

        def build(tmp: Path) -> None:
            users: dict[str, np.ndarray] = {}  # the user's words are the same in every variant
            for sample in samples:
                for k, turn in enumerate(sample.conversation):
                    assert turn.transcript is not None and turn.audio is not None and turn.audio.path
                    reply = sample.reference["replies"][k]
                    stem = Path(turn.audio.path).stem
                    audio = audio_io.wav_bytes(
                        render_reply(reply["text"], sample.meta["variant"], k, stem), RATE_HZ
                    )
                    (tmp / reply["audio"]).write_bytes(audio)
                    sidecar = sidecar_bytes(reply["text"], reply["audio"], audio)
                    (tmp / f"{stem}.reply.json").write_bytes(sidecar)
                    if turn.transcript not in users:
                        users[turn.transcript] = speak(turn.transcript, USER_VOICE, USER_WPM, USER_GAP)
                    comment = replay_comment(f"{stem}.reply.json", sidecar)
                    (tmp / f"{stem}.wav").write_bytes(
                        wav_with_comment(users[turn.transcript], RATE_HZ, comment)
                    )

        publish_folder(self.root, build)

    def dataset_info(self) -> dict[str, Any]:
        return self.generated_dataset_info(VERSION, espeak_version(), self.root)
