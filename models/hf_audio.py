"""Audio language models under the ``hf:`` kind, run in-process with transformers.

``evalkit.models.hf_text.HFModel`` reads a checkpoint's ``model_type`` and looks it up in
``AUDIO_ADAPTERS`` below; adding an audio LM family is one class and one table row. Qwen2-Audio
(``qwen2_audio``: Qwen2-Audio-7B and -7B-Instruct) is the first.

Audio reaches the processor as 16 kHz mono float32 arrays decoded by ``evalkit.audio.load``, never
as paths or URLs, so every input format evalkit reads works and nothing is fetched. The prompt is
rendered by the checkpoint's own chat template, which writes one ``<|audio_bos|><|AUDIO|>
<|audio_eos|>`` per clip; the processor expands each ``<|AUDIO|>`` to one token per 40 ms of audio.
Qwen2-Audio's encoder sees at most 30 s per clip: longer clips are cut by its feature extractor.
"""

from __future__ import annotations

from typing import Any

from evalkit.audio import load as load_audio
from evalkit.errors import EvalkitError
from evalkit.models.base import Capabilities
from evalkit.models.hf_text import HFAdapterBase, Prepared
from evalkit.records import AudioPart, ChatRequest


class Qwen2AudioAdapter(HFAdapterBase):
    """Qwen2-Audio (``Qwen2AudioForConditionalGeneration`` + ``AutoProcessor``): audio and text in,
    text out."""

    capabilities = Capabilities(audio_in=True, audio_out=False, multi_turn=True, batching=True)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._processor: Any = None

    @property
    def _tokenizer(self) -> Any:
        return self._processor.tokenizer

    @property
    def sample_rate(self) -> int:
        return int(self._processor.feature_extractor.sampling_rate)

    def _load_model(self, transformers: Any, path: str) -> Any:
        self._processor = transformers.AutoProcessor.from_pretrained(path)
        if self._processor.chat_template is None:  # base checkpoints ship none
            raise EvalkitError(
                f"{path}: the processor has no chat template; use an -Instruct checkpoint or add "
                "chat_template.jinja to the folder"
            )
        tokenizer = self._processor.tokenizer
        tokenizer.padding_side = "left"  # decoder-only: new tokens must follow every prompt directly
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return transformers.Qwen2AudioForConditionalGeneration.from_pretrained(path, **self._weights_kwargs())

    def _prepare(self, request: ChatRequest) -> Prepared:
        """Chat-template the conversation with one audio placeholder per clip, in order, and decode
        the clips; the placeholders carry no data because the template only counts them."""
        conversation = []
        clips = []
        for message in request.messages:
            content: list[dict[str, Any]] = []
            for part in message.content:
                if isinstance(part, AudioPart):
                    samples, _ = load_audio(part.audio, sample_rate=self.sample_rate)
                    clips.append(samples)
                    content.append({"type": "audio", "audio": f"clip-{len(clips)}"})
                else:
                    content.append({"type": "text", "text": part.text})
            conversation.append({"role": message.role, "content": content})
        prompt = self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return Prepared(prompt=prompt, params=request.params, audio=clips)

    def _encode(self, items: list[Prepared]) -> dict[str, Any]:
        clips = [clip for item in items for clip in item.audio]
        inputs = self._processor(
            text=[item.prompt for item in items],
            audio=clips or None,
            sampling_rate=self.sample_rate,
            padding=True,
            add_special_tokens=False,  # the chat template already wrote them
            return_tensors="pt",
        )
        return dict(inputs)


#: ``config.json`` ``model_type`` -> adapter class; any other model type is served as a text LM
AUDIO_ADAPTERS: dict[str, type[HFAdapterBase]] = {
    "qwen2_audio": Qwen2AudioAdapter,
}
