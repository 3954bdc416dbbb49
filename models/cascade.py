"""``cascade``: ASR -> text LLM -> optional TTS, the offline default model.

Spec: ``cascade`` or ``cascade:asr=tiny.en,llm=hf:smollm2-135m-instruct,tts=espeak,voice=en-us``.
``llm`` is any text model spec (``hf:...`` or ``openai:...``); ``tts=none`` turns speech off.

It is a real but *weak* baseline: a 39M-parameter English Whisper feeding a 135M-parameter chat
model. It hears only words (no tone, no speaker), and small-model answers are often wrong; the
report says so. Its value is that it runs anywhere, end to end, with no download.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from evalkit.errors import EvalkitError
from evalkit.models.asr import WhisperTranscriber
from evalkit.models.base import Capabilities, ModelAdapter, load_model
from evalkit.models.hf_text import SMOLLM2
from evalkit.models.tts import espeak
from evalkit.records import AudioPart, AudioRef, ChatRequest, Message, ModelOutput, TextPart
from evalkit.registry import register_model
from evalkit.specs import Options, parse_into


class CascadeOptions(Options):
    """``cascade[:asr=NAME,llm=SPEC,tts=espeak|none,voice=V]``: the llm spec may hold ':' and '@'
    but no ','."""

    asr: str = "tiny.en"
    llm: str = f"hf:{SMOLLM2}"
    tts: Literal["espeak", "none"] = "espeak"
    voice: str = "en-us"


NOTE = (
    "Weak offline baseline: Whisper tiny.en transcribes the audio, SmolLM2-135M-Instruct answers the "
    "text, espeak-ng speaks the answer. It ignores everything in the audio but the words."
)


@register_model("cascade")
class CascadeAdapter(ModelAdapter):
    """Offline ASR -> text LLM -> TTS baseline: cascade[:asr=tiny.en,llm=SPEC,tts=espeak|none]."""

    def __init__(self, asr: str, llm: ModelAdapter, tts: str, voice: str):
        if tts not in ("espeak", "none"):
            raise EvalkitError(f"cascade tts={tts!r} is not known; use tts=espeak or tts=none")
        self.asr_name = asr
        self.transcriber = WhisperTranscriber(asr)
        self.llm = llm
        self.tts = tts
        self.voice = voice
        self.spec = f"cascade:asr={asr},llm={llm.spec},tts={tts}" + (
            f",voice={voice}" if tts != "none" else ""
        )
        self.capabilities = Capabilities(
            audio_in=True, audio_out=tts != "none", multi_turn=True, batching=False
        )
        self.max_concurrency = llm.max_concurrency
        self._transcripts: dict[str, str] = {}

    @property
    def pinned_revision(self) -> str | None:
        """Pinned when its language model is (the ASR and TTS come from versioned packages)."""
        revision = self.llm.pinned_revision
        return None if revision is None else f"llm:{revision}"

    @property
    def cache_identity(self) -> str:
        # Whisper's precision and beam change transcripts, hence answers, without being in the spec
        return f"{self.spec}#asr-decoding={self.transcriber.decoding}"

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> CascadeAdapter:
        opts = parse_into(CascadeOptions, arg, "model spec 'cascade:...'")
        if opts.llm.startswith("cascade"):
            raise EvalkitError("cascade llm= must be a text model spec (hf:... or openai:...)")
        return cls(opts.asr, load_model(opts.llm, **options), opts.tts, opts.voice)

    async def check(self) -> None:
        await asyncio.to_thread(self.transcriber.load)
        await self.llm.check()

    def _transcribe(self, ref: AudioRef) -> str:
        key = ref.digest()
        if key not in self._transcripts:
            self._transcripts[key] = self.transcriber.transcribe(ref)
        return self._transcripts[key]

    def _to_text(self, request: ChatRequest) -> tuple[ChatRequest, str | None]:
        """Replace each audio part by its transcript; returns the text request and the transcript
        of the turn being answered (the last user message)."""
        messages = []
        last_heard = None
        for message in request.messages:
            pieces = []
            heard = None
            for part in message.content:
                if isinstance(part, AudioPart):
                    heard = self._transcribe(part.audio)
                    pieces.append(heard)
                else:
                    pieces.append(part.text)
            if message.role == "user":
                last_heard = heard
            messages.append(Message(role=message.role, content=[TextPart(text="\n".join(pieces))]))
        return request.model_copy(update={"messages": messages}), last_heard

    async def generate(self, request: ChatRequest) -> ModelOutput:
        text_request, heard = await asyncio.to_thread(self._to_text, request)
        output = await self.llm.generate(text_request)
        trace = {**output.trace}
        if heard is not None:
            trace["asr"] = heard
        update: dict[str, Any] = {"trace": trace}
        if self.tts != "none" and output.text:
            wav = await asyncio.to_thread(espeak, output.text, self.voice)
            update["audio"] = AudioRef(data=wav, sample_rate=16000)
        return output.model_copy(update=update)

    async def aclose(self) -> None:
        await self.llm.aclose()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(asr=self.asr_name, llm=self.llm.describe(), tts=self.tts, voice=self.voice, note=NOTE)
        return info
