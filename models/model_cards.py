"""Model cards: a declarative recipe per known model (``models/cards/NAME.yaml``), each registered
as a model kind so ``--model step-audio-r1.5 --base-url http://host:8000/v1`` just works.

Why cards: reaching a model correctly takes more than a URL. Step-Audio-R1.x needs its end-of-turn
stop string, ``skip_special_tokens: false``, audio cut into <= 25 s parts, the knowledge that its
server prefills ``<think>\\n`` (so replies start inside the reasoning) and a non-OpenAI speech
field. Written once in a card, with where each value came from, every run gets it right and the
manifest records exactly which recipe was used.

Spec: ``CARD[:[served=NAME][,card=DIGEST][@BASE_URL]]``. The base URL comes from ``@BASE_URL``, the
``base_url`` model option (``evalkit run --base-url``) or ``OPENAI_BASE_URL``; the served model name
defaults to the card's ``served_name``. The canonical spec carries the card's digest, so editing a
card changes every cache key made with it.

Precedence of generation settings (``evalkit.generation``, applied by the runner): the command
line (``--max-tokens``, ``--temperature``, ``--top-p``), then the card's ``sampling`` and ``stop``,
then what the task sets explicitly, then ``GenerationParams``' defaults; the manifest records each
value and its source. The budget belongs to the model: a reasoning model's card outranks a task's
512-token default. Extra fields: the card's, overridden key by key by the task's.

Request shape: ``audio`` says how input audio is sent (rate, channels, chunk length and rule, and
whether text parts go before audio). Step-Audio cards reproduce the published client part for part;
each way of departing from it is a named option of ``AudioSpec``, off in those cards.

Cards are strict: an unknown key or a wrong type fails with one line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.errors import SpecError
from evalkit.manifest import redact_urls
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.openai_chat import (
    DEFAULT_BASE_URL,
    OpenAIChatAdapter,
    check_base_url,
    count_audio_chunks,
    order_parts,
    split_spec_url,
)
from evalkit.records import AudioPart, Message, TextPart
from evalkit.registry import register_model
from evalkit.specs import Options, parse_into

CARDS_DIR = Path(__file__).parent / "cards"


class CardError(SpecError):
    """A model card that cannot be read or does not match the schema (one line: file and field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasoningSpec(_Strict):
    """How the model marks its reasoning. ``prefill`` is the text the server's generation prompt
    ends with (``"<think>\\n"``): the reply then starts inside the reasoning and only closes it."""

    prefill: str | None = None
    open: Literal["<think>"] = "<think>"  # the markers evalkit.models.reasoning splits on
    close: Literal["</think>"] = "</think>"


class AudioSpec(_Strict):
    """Input audio: 16-bit WAV at ``sample_rate`` (None: the file's own rate), mixed to mono when
    ``mono``, cut into parts of <= ``chunk_seconds`` by ``chunking`` (``even``: equal consecutive
    pieces, never an empty one; ``step-audio-client``: Step-Audio's published client rule, see
    ``evalkit.models.openai_chat.chunk_bounds``). ``text_first``: a message's text parts go
    before its audio parts (the task builds audio first)."""

    chunk_seconds: float | None = Field(default=None, gt=0)
    chunking: Literal["even", "step-audio-client"] = "even"
    sample_rate: int | None = Field(default=16000, gt=0)
    mono: bool = True
    text_first: bool = False


class SamplingSpec(_Strict):
    """The model's generation settings: above the task's, below the command line's (see the
    module docstring)."""

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)


class CapabilitiesSpec(_Strict):
    audio_in: bool = True
    audio_out: bool = False
    multi_turn: bool = True


class ModelCard(_Strict):
    """One ``models/cards/NAME.yaml``. Comments in the file say where each value came from;
    ``sources`` lists them for the manifest."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    description: str
    adapter: Literal["openai"] = "openai"
    served_name: str | None = None
    sources: list[str] = Field(default_factory=list)
    notes: str | None = None
    chat_template: str | None = None
    reasoning: ReasoningSpec = Field(default_factory=ReasoningSpec)
    stop: list[str] = Field(default_factory=list)
    audio: AudioSpec = Field(default_factory=AudioSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    extra: dict[str, Any] = Field(default_factory=dict)
    speech_field: Literal["tts_content"] | None = None
    #: ``package.module:function`` turning the codec tokens a reply speaks in into WAV bytes (for
    #: models that return ``<audio_N>`` tokens rather than audio, e.g. Step-Audio's token2wav)
    speech_decoder: str | None = None
    capabilities: CapabilitiesSpec = Field(default_factory=CapabilitiesSpec)
    #: seconds one attempt of a request may take in all (the runner's deadline when the run gives
    #: no --timeout; reasoning models need long ones); None: the adapter's default (600)
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    @property
    def digest(self) -> str:
        """Short sha256 of the card's content: part of the canonical spec (and so of cache keys)."""
        blob = self.model_dump_json()
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def load_card(path: Path) -> ModelCard:
    """Read and validate one card file; any problem is a one-line ``CardError``."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read model card ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CardError(f"{path}:{where} not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise CardError(f"{path}: a model card is a YAML mapping of fields, got {type(raw).__name__}")
    try:
        card = ModelCard.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(card)"
        if error["type"] == "extra_forbidden":
            raise CardError(f"{path}: unknown field '{field}' in model card") from None
        raise CardError(f"{path}: field '{field}': {error['msg']}") from None
    if card.name != path.stem:
        raise CardError(f"{path}: field 'name' is {card.name!r} but the file is named {path.stem!r}")
    return card


@cache
def builtin_cards() -> dict[str, ModelCard]:
    """Every card shipped in ``models/cards`` by name."""
    return {path.stem: load_card(path) for path in sorted(CARDS_DIR.glob("*.yaml"))}


def get_card(name: str) -> ModelCard:
    cards = builtin_cards()
    if name not in cards:
        raise CardError(f"no model card {name!r}; known cards: {', '.join(sorted(cards))}")
    return cards[name]


class CardAdapter(OpenAIChatAdapter):
    """The OpenAI-compatible adapter configured by a model card; its spec and manifest entry name
    the card (and its digest) rather than the bare ``openai:`` form."""

    def __init__(self, card: ModelCard, model: str, base_url: str, **options: Any):
        if card.timeout is not None:  # --timeout (an option) beats the card's
            options.setdefault("timeout", card.timeout)
        sampling = card.sampling.model_dump(exclude_none=True)
        super().__init__(
            model,
            base_url,
            audio_sample_rate=card.audio.sample_rate,
            reasoning_prefilled=card.reasoning.prefill is not None,
            audio_chunk_seconds=card.audio.chunk_seconds,
            audio_chunk_rule=card.audio.chunking,
            audio_mono=card.audio.mono,
            text_before_audio=card.audio.text_first,
            default_params=sampling,
            default_stop=card.stop,
            default_extra=card.extra,
            speech_field=card.speech_field,
            speech_decoder=card.speech_decoder,
            **options,
        )
        self.card = card
        self.capabilities = Capabilities(**card.capabilities.model_dump(), batching=False)
        self.spec = f"{card.name}:served={model},card={card.digest}@{self.base_url}"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            card=card_manifest(self.card),
            capabilities=asdict(self.capabilities),
        )
        return info


def card_manifest(card: ModelCard) -> dict[str, Any]:
    """What the manifest keeps of a card: all of it (the template included) and its digest."""
    return {**card.model_dump(mode="json"), "digest": card.digest, "file": f"models/cards/{card.name}.yaml"}


class CardSpecOptions(Options):
    """``CARD[:served=NAME,card=DIGEST][@URL]``: the served model name, and the card digest a
    canonical spec pins (a changed card file is then refused, not silently used)."""

    served: str | None = None
    card: str | None = None


class CardModel(ModelAdapter):
    """Base of the per-card registry entries (one subclass per card, made below)."""

    card_name: str = ""

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> ModelAdapter:
        if isinstance(options.get("base_url"), list | tuple):  # --base-url repeated: one replica each
            from evalkit.models.replica_pool import replicate_over_urls

            return replicate_over_urls(cls.from_spec, arg, options, cls.card_name)
        card = get_card(cls.card_name)
        where = f"model spec '{card.name}:{redact_urls(arg)}'"
        body, spec_url = split_spec_url(arg)
        opts = parse_into(CardSpecOptions, body, where)
        if opts.card is not None and opts.card != card.digest:
            raise SpecError(
                f"{where} was made with card digest {opts.card} but models/cards/{card.name}.yaml "
                f"is now {card.digest}; drop card= to use the current card"
            )
        option_url = options.get("base_url")
        if spec_url and option_url and spec_url.rstrip("/") != option_url.rstrip("/"):
            raise SpecError(
                f"{where} names base URL {redact_urls(spec_url)!r} but --base-url is "
                f"{redact_urls(option_url)!r}"
            )
        base_url = spec_url or option_url or os.environ.get("OPENAI_BASE_URL") or ""
        if not base_url:
            raise SpecError(
                f"{where} needs the server's URL: add --base-url http://HOST:PORT/v1 "
                f"(OpenAI itself is {DEFAULT_BASE_URL})"
            )
        check_base_url(base_url, where, "http(s)://HOST:PORT/v1")
        served = opts.served or card.served_name
        if not served:
            raise SpecError(f"card {card.name!r} has no served model name; give {card.name}:served=NAME")
        known = {"api_key_env", "timeout", "stream"}
        return CardAdapter(card, served, base_url, **{k: v for k, v in options.items() if k in known})

    async def generate(self, request):  # pragma: no cover - never instantiated
        raise NotImplementedError


def _register_cards() -> None:
    """One registry entry per card; its docstring (the card's description) is what
    ``evalkit list models`` shows."""
    for name, card in builtin_cards().items():
        entry = type(f"Card_{name}", (CardModel,), {"card_name": name, "__doc__": card.description})
        register_model(name)(entry)


# -- rendering ------------------------------------------------------------------------------------
def template_view(card: ModelCard, messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as a vLLM server hands it to the chat template (content format "openai",
    vllm/entrypoints/chat_utils.py): every message a list of parts, text as
    ``{"type": "text", "text": ...}``, each *sent* audio part (after chunking) as
    ``{"type": "audio", ...}``. The audio dicts also carry an ``audio`` key, which templates written
    for Hugging Face processors test for (Qwen2-Audio); templates that test the type ignore it."""
    audio = card.audio
    view: list[dict[str, Any]] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        for part in order_parts(message.content, audio.text_first):
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, AudioPart):
                n = count_audio_chunks(part.audio, audio.chunk_seconds, audio.sample_rate, audio.chunking)
                parts.extend({"type": "audio", "audio": "<audio>"} for _ in range(n))
        view.append({"role": message.role, "content": parts})
    return view


def render_template(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render chat-template text the way transformers' ``apply_chat_template`` does (sandboxed,
    ``trim_blocks``/``lstrip_blocks``, loop controls, ``raise_exception``), which vLLM calls."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, tools=None
    )


def render_chat(card: ModelCard, messages: list[Message], add_generation_prompt: bool = True) -> str:
    """The prompt the card's server builds from ``messages`` (with the card's audio chunking):
    used to check that evalkit's message order, roles and audio placeholders produce the
    published template's rendering."""
    if card.chat_template is None:
        raise CardError(f"card {card.name!r} records no chat template to render")
    return render_template(card.chat_template, template_view(card, messages), add_generation_prompt)


_register_cards()
