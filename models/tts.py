"""Text-to-speech through espeak-ng (a Debian package, called as a program: no Python binding,
no GPL code linked). Used by the cascade model to answer in speech and by the demo tasks to
synthesise their questions, so both sound alike and are deterministic for a given espeak-ng.

The long-turn suite's user speaks with affect (``AFFECT_STYLES``: rate, pitch, pitch range and
loudness per label, ``espeak_affect``). Two speech models serve the model-call service's ``tts``
role with the same request shape (``speech_request``: the words, the affect in ``params.extra``):
``espeak[:voice=V]`` (in process) and ``openai-tts:MODEL@BASE_URL`` (any OpenAI-compatible
``/v1/audio/speech`` endpoint; the affect becomes ``instructions`` and ``speed``)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError, ModelError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.openai_chat import OpenAIChatAdapter, _map_error
from evalkit.records import AudioRef, ChatRequest, GenerationParams, Message, ModelOutput, TextPart, Timing
from evalkit.registry import register_model
from evalkit.specs import Options, parse_into

DEFAULT_RATE_HZ = 16000


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EvalkitError(
            "espeak-ng is not installed (needed for synthesised speech): run `apt-get install espeak-ng` "
            "or `make setup`"
        )
    return path


def espeak_version() -> str:
    proc = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def espeak(
    text: str, voice: str = "en-us", wpm: int = 160, gap: int = 0, sample_rate: int = DEFAULT_RATE_HZ
) -> bytes:
    """Speak ``text``; returns mono 16-bit WAV bytes at ``sample_rate``. ``gap`` adds pauses between
    words (units of 10 ms at normal speed), which makes espeak-ng markedly easier to recognise."""
    if not text.strip():
        raise EvalkitError("nothing to speak: empty text")
    proc = subprocess.run(
        [espeak_binary(), "-v", voice, "-s", str(wpm), "-g", str(gap), "--stdout", text],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise EvalkitError(
            f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}"
        )
    samples, rate = audio_io.load(AudioRef(data=proc.stdout), sample_rate=sample_rate)
    return audio_io.wav_bytes(samples, rate)


# -- affect-shaped speech (the long-turn suite's user voice) -----------------------------------------
@dataclass(frozen=True)
class AffectStyle:
    """How one affect is spoken. espeak-ng: words per minute, base pitch (0-99, default 50),
    SSML pitch range (``x-low`` .. ``x-high``) and amplitude (0-200, default 100); an OpenAI-compatible
    ``/v1/audio/speech`` server: the ``instructions`` sentence and a ``speed`` factor."""

    wpm: int
    pitch: int
    range: str
    amplitude: int
    instruction: str
    speed: float = 1.0


#: affect label -> style; slow-ish rates with word gaps keep small ASR models (the cascade) hearing
AFFECT_STYLES: dict[str, AffectStyle] = {
    "neutral": AffectStyle(130, 50, "medium", 100, "Speak in a neutral, even tone."),
    "calm": AffectStyle(120, 45, "low", 90, "Speak calmly and evenly, unhurried."),
    "worried": AffectStyle(145, 62, "high", 95, "Speak with a worried, uneasy tone.", 1.05),
    "anxious": AffectStyle(160, 66, "high", 100, "Speak anxiously, a little fast and tense.", 1.15),
    "frustrated": AffectStyle(150, 40, "high", 140, "Speak with clear frustration, clipped and firm.", 1.05),
    "angry": AffectStyle(155, 36, "x-high", 170, "Speak angrily, loud and sharp.", 1.1),
    "relieved": AffectStyle(125, 52, "medium", 100, "Speak with relief, relaxed and warm.", 0.95),
    "sad": AffectStyle(105, 35, "x-low", 70, "Speak sadly, slow and quiet.", 0.85),
    "tired": AffectStyle(100, 38, "low", 75, "Speak wearily, slow and low.", 0.85),
    "excited": AffectStyle(170, 75, "x-high", 150, "Speak with excitement, bright and lively.", 1.2),
    "happy": AffectStyle(150, 65, "high", 120, "Speak happily, warm and upbeat.", 1.1),
    "proud": AffectStyle(135, 55, "high", 125, "Speak proudly, confident and clear."),
    "grateful": AffectStyle(125, 55, "medium", 105, "Speak gratefully, warm and sincere.", 0.95),
    "confused": AffectStyle(125, 58, "high", 95, "Speak in a puzzled, uncertain tone.", 0.95),
    "playful": AffectStyle(155, 70, "x-high", 115, "Speak playfully, light and teasing.", 1.1),
}
#: word gap (10 ms units) of affect-shaped espeak-ng speech
AFFECT_GAP = 3


def affect_style(affect: str) -> AffectStyle:
    """The style of ``affect`` (one line naming the known labels when it has none)."""
    style = AFFECT_STYLES.get(affect)
    if style is None:
        raise EvalkitError(f"unknown affect {affect!r}; known: {', '.join(AFFECT_STYLES)}")
    return style


def espeak_affect(
    text: str, affect: str, voice: str = "en-us", gap: int = AFFECT_GAP, sample_rate: int = DEFAULT_RATE_HZ
) -> bytes:
    """``text`` spoken by espeak-ng in ``affect``'s style (rate, pitch, SSML range, amplitude); mono
    16-bit WAV bytes at ``sample_rate``. Deterministic for a given espeak-ng."""
    if not text.strip():
        raise EvalkitError("nothing to speak: empty text")
    style = affect_style(affect)
    ssml = f'<speak><prosody range="{style.range}">{escape(text)}</prosody></speak>'
    args = [espeak_binary(), "-v", voice, "-s", str(style.wpm), "-p", str(style.pitch)]
    args += ["-a", str(style.amplitude), "-g", str(gap), "-m", "--stdout", ssml]
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise EvalkitError(
            f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}"
        )
    samples, rate = audio_io.load(AudioRef(data=proc.stdout), sample_rate=sample_rate)
    return audio_io.wav_bytes(samples, rate)


def speech_request(text: str, affect: str, voice: str | None = None) -> ChatRequest:
    """The request a speech model (role ``tts`` of the model-call service) answers: the words as
    the one user message, the affect (and voice) in ``params.extra``, so both are in the cache key."""
    extra: dict[str, Any] = {"affect": affect, **({"voice": voice} if voice else {})}
    return ChatRequest(
        messages=[Message(role="user", content=[TextPart(text=text)])],
        params=GenerationParams(max_tokens=1, temperature=0.0, extra=extra),
    )


def _spoken(request: ChatRequest) -> tuple[str, str, str | None]:
    """(words, affect, voice) of a ``speech_request``."""
    words = request.messages[-1].text()
    affect = str(request.params.extra.get("affect", "neutral"))
    voice = request.params.extra.get("voice")
    return words, affect, None if voice is None else str(voice)


class EspeakOptions(Options):
    """``espeak[:voice=V,gap=N]``: the voice and the word gap of affect-shaped speech."""

    voice: str = "en-us"
    gap: int = AFFECT_GAP


@register_model("espeak")
class EspeakSpeech(ModelAdapter):
    """espeak-ng as a speech model (role ``tts``): speaks the request's text in its affect's style."""

    capabilities = Capabilities(audio_in=False, audio_out=True, multi_turn=False)
    max_concurrency = 2

    def __init__(self, voice: str = "en-us", gap: int = AFFECT_GAP):
        self.voice = voice
        self.gap = gap
        self.spec = f"espeak:voice={voice},gap={gap}"

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> EspeakSpeech:
        opts = parse_into(EspeakOptions, arg, "model spec 'espeak:...' (e.g. espeak:voice=en-us)")
        return cls(opts.voice, opts.gap)

    @property
    def pinned_revision(self) -> str | None:
        """The espeak-ng version: the same text and style always give the same audio."""
        return espeak_version() or None

    async def generate(self, request: ChatRequest) -> ModelOutput:
        words, affect, voice = _spoken(request)
        wav = await asyncio.to_thread(espeak_affect, words, affect, voice or self.voice, self.gap)
        return ModelOutput(text=words, audio=AudioRef(data=wav, sample_rate=DEFAULT_RATE_HZ))


#: OpenAI documents that ``instructions`` does not work with these models; they get ``speed`` only
NO_INSTRUCTIONS = ("tts-1",)


@register_model("openai-tts")
class OpenAISpeech(OpenAIChatAdapter):
    """An OpenAI-compatible ``/v1/audio/speech`` endpoint (role ``tts``): openai-tts:MODEL@BASE_URL.
    The affect travels as ``instructions`` (a sentence) and ``speed``; the voice is the request's
    (``alloy`` when none is given). Client, base URL, API key and error classes are the chat
    adapter's."""

    capabilities = Capabilities(audio_in=False, audio_out=True, multi_turn=False)
    default_voice = "alloy"

    def __init__(self, model: str, base_url: str, **kwargs: Any):
        super().__init__(model, base_url, **kwargs)
        self.spec = f"openai-tts:{model}@{self.base_url}"

    def speech_payload(self, request: ChatRequest) -> dict[str, Any]:
        """The ``/audio/speech`` body: words, voice, WAV, and the affect's speed and instructions."""
        words, affect, voice = _spoken(request)
        style = affect_style(affect)
        payload: dict[str, Any] = {
            "model": self.model,
            "input": words,
            "voice": voice or self.default_voice,
            "response_format": "wav",
            "speed": style.speed,
        }
        if not self.model.startswith(NO_INSTRUCTIONS):
            payload["instructions"] = style.instruction
        return payload

    async def generate(self, request: ChatRequest) -> ModelOutput:
        payload = self.speech_payload(request)
        started = time.perf_counter()
        try:
            response = await self.client.audio.speech.create(**payload)
            data = await response.aread()
        except Exception as exc:  # API and transport failures are classified; anything else is a bug
            mapped = _map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if not data:
            raise ModelError("bad_response", "the speech endpoint returned no audio", transient=False)
        return ModelOutput(
            text=payload["input"],
            audio=AudioRef(data=data),
            timing=Timing(total=time.perf_counter() - started),
            model=self.model,
        )
