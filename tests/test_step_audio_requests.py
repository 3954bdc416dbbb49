"""Step-Audio-R1.x requests are the published client's (stepfun-ai/Step-Audio-R1
``stepaudior1vllm.py`` + ``examples-vllm_r1.py`` @ 6685e7c4), part for part: the 25 s chunking
with its edge cases, the audio it sends, text before audio, and the prompt the server renders.

The client's side is written here from reading its code, in this file's own words (never
imported, never copied): ``client_piece_frames`` restates ``AudioService.read_audio_file`` on a
pydub segment, ``client_messages`` the messages ``mmau_test`` / ``mmsu_test`` /
``spoken_mqa_test`` build, and ``continue_final_message`` what transformers' chat templating does
with the client's ``"<think>\\n"`` assistant message (``eot: False``)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from test_model_cards import PUBLISHED_STEP_AUDIO_TEMPLATE

from evalkit.generation import resolve_generation
from evalkit.models.base import load_model
from evalkit.models.model_cards import get_card, render_chat, render_template
from evalkit.models.openai_chat import chunk_bounds
from evalkit.records import AudioRef, ChatRequest, GenerationParams, Message, ModelOutput, Sample, Turn
from evalkit.tasks.base import Task

URL = "http://127.0.0.1:8000/v1"


# -- the client's rules, restated -----------------------------------------------------------------
def client_piece_frames(n_frames: int, rate: int, max_s: float = 25.0) -> list[int]:
    """Frame counts of the WAV pieces the client sends for a clip: pydub measures the clip in
    rounded milliseconds; a clip no longer than 25 s goes whole; a longer one is sliced every
    25000 ms, floor(seconds / 25) + 1 times, slice ends clamped to the rounded length (and, when
    turned into frames, to the data there is)."""
    ms = round(n_frames * 1000 / rate)
    if ms / 1000 <= max_s:
        return [n_frames]
    counts = []
    for i in range(int((ms / 1000) // max_s) + 1):
        lo, hi = min(25000 * i, ms), min(25000 * (i + 1), ms)
        lo_f, hi_f = (min(int(x * (rate / 1000.0)), n_frames) for x in (lo, hi))
        counts.append(hi_f - lo_f)
    return counts


def client_messages(question: str, pieces: int, history: list[tuple[str, int, str]] = ()) -> list[dict]:
    """The messages the client's server receives, as the template sees them: role ``human``,
    the text part then one audio part per piece; earlier turns before; then the client's
    prefilled ``"<think>\\n"`` assistant message."""
    messages: list[dict[str, Any]] = []
    for text, n, answer in history:
        parts = [{"type": "text", "text": text}] + [{"type": "audio"}] * n
        messages += [{"role": "human", "content": parts}, {"role": "assistant", "content": answer}]
    parts = [{"type": "text", "text": question}] + [{"type": "audio"}] * pieces
    return [*messages, {"role": "human", "content": parts}, {"role": "assistant", "content": "<think>\n"}]


def continue_final_message(rendered: str, final: str) -> str:
    """transformers, continue_final_message=True: keep the rendering up to the end of the last
    message's content (its trailing whitespace kept when the template kept it)."""
    at = rendered.rindex(final.strip())
    if rendered[at : at + len(final.lstrip())] == final:
        return rendered[: at + len(final.lstrip())]
    return rendered[: at + len(final.strip())]


def client_prompt(messages: list[dict]) -> str:
    rendered = render_template(PUBLISHED_STEP_AUDIO_TEMPLATE, messages, add_generation_prompt=False)
    return continue_final_message(rendered, messages[-1]["content"])


def clip(path: Path, frames: int, rate: int = 16000, channels: int = 1) -> AudioRef:
    rng = np.random.default_rng(frames)
    data = (rng.standard_normal((frames, channels)) * 0.1).astype("float32")
    sf.write(path, data, rate, subtype="PCM_16")
    return AudioRef(path=str(path))


# -- chunking -------------------------------------------------------------------------------------
CASES = [
    (16000, 16000 * 3),  # short
    (16000, 16000 * 25),  # exactly 25 s: one piece
    (16000, 16000 * 25 + 6),  # 25.0004 s rounds to 25000 ms: still one piece, all of it
    (16000, 16000 * 25 + 10),  # 25.000625 s -> 25001 ms: a 10-frame second piece
    (16000, 16000 * 50),  # exactly 50 s: 25 + 25 + an empty piece
    (16000, 16000 * 50 + 6),  # 50.0004 s: rounded to 50000 ms, the 6 frames beyond are not sent
    (16000, 16000 * 60),
    (16000, 16000 * 75),  # exactly 75 s: four pieces, the last empty
    (44100, 44100 * 50),
    (22050, 22050 * 61 + 7),
    (8000, 8000 * 100),
]


@pytest.mark.parametrize(("rate", "frames"), CASES)
def test_chunk_bounds_follow_the_client(rate: int, frames: int) -> None:
    bounds = chunk_bounds(frames, rate, 25, "step-audio-client")
    assert [hi - lo for lo, hi in bounds] == client_piece_frames(frames, rate)
    assert bounds[0][0] == 0 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_exact_multiples_of_25_s() -> None:
    assert chunk_bounds(16000 * 25, 16000, 25, "step-audio-client") == [(0, 400000)]
    assert chunk_bounds(16000 * 50, 16000, 25, "step-audio-client") == [
        (0, 400000),
        (400000, 800000),
        (800000, 800000),
    ]
    # the named departure (chunking: even) never sends an empty piece
    assert chunk_bounds(16000 * 50, 16000, 25, "even") == [(0, 400000), (400000, 800000)]


def test_the_wire_audio_is_the_files_own(tmp_path: Path) -> None:
    """44.1 kHz stereo, 50 s: three input_audio parts at the file's rate and channels, the last
    one empty, the samples exactly the file's (16-bit source), after the text part."""
    ref = clip(tmp_path / "stereo.wav", 44100 * 50, rate=44100, channels=2)
    adapter = load_model("step-audio-r1.5", base_url=URL)
    message = Message(role="user", content=[{"type": "audio", "audio": ref}, {"type": "text", "text": "Q?"}])
    parts = adapter.build_payload(ChatRequest(messages=[message]))["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "input_audio", "input_audio", "input_audio"]
    pieces = [
        sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"])), dtype="int16") for p in parts[1:]
    ]
    assert [(len(x), rate, x.shape[1] if x.ndim == 2 else 1) for x, rate in pieces[:2]] == [
        (44100 * 25, 44100, 2)
    ] * 2
    assert len(pieces[2][0]) == 0
    original, _ = sf.read(ref.path, dtype="int16")
    assert np.array_equal(np.concatenate([pieces[0][0], pieces[1][0]]), original)


# -- the rendered prompt --------------------------------------------------------------------------
MMAU_TEXT = (
    "Which of the following best describes the male vocal in the audio?\nPlease choose the answer from the "
    "following options, do not provide any additional explanations or content: \nA. Soft and melodic\n"
    "B. Aggressive and talking\nC. High-pitched and singing\nD. Whispering\n"
)
MMSU_TEXT = (
    "What type of non-verbal sound is in the audio?\nPlease choose the answer from the following options, do "
    "not provide any additional explanations or content: \nA. laugh\nB. burp\nC. cough\nD. yawn\n"
)
SPOKEN_MQA_TEXT = "Solve the given math question step by step."


class _Plain(Task):
    """The base task's request building (audio part first, then text), which the benchmarks use."""

    name = "plain"
    judges = ()

    def samples(self, limit=None):  # pragma: no cover - not iterated here
        return iter(())


@pytest.mark.parametrize("text", [MMAU_TEXT, MMSU_TEXT, SPOKEN_MQA_TEXT], ids=["mmau", "mmsu", "spoken-mqa"])
@pytest.mark.parametrize("frames", [16000 * 7, 16000 * 50, 16000 * 61], ids=["7s", "50s", "61s"])
def test_one_turn_prompt_equals_the_clients(tmp_path: Path, text: str, frames: int) -> None:
    ref = clip(tmp_path / "q.wav", frames)
    sample = Sample(id="x", task="plain", conversation=[Turn(role="user", audio=ref, text=text)])
    request = _Plain().build_request(sample, 0, [])
    card = get_card("step-audio-r1.5")
    expected = client_prompt(client_messages(text, len(client_piece_frames(frames, 16000))))
    assert render_chat(card, request.messages) == expected
    assert expected.startswith("<|BOT|>human\n" + text + "<audio_patch>")  # text first, as the client


def test_two_turn_prompt_with_audio_equals_the_clients(tmp_path: Path) -> None:
    first, second = clip(tmp_path / "a.wav", 16000 * 30), clip(tmp_path / "b.wav", 16000 * 4)
    sample = Sample(
        id="x",
        task="plain",
        conversation=[
            Turn(role="user", audio=first, text="What is said?"),
            Turn(role="user", audio=second, text="And now?"),
        ],
    )
    request = _Plain().build_request(sample, 1, [ModelOutput(text="Hello there.")])
    expected = client_prompt(client_messages("And now?", 1, history=[("What is said?", 2, "Hello there.")]))
    for name in ("step-audio-r1", "step-audio-r1.1", "step-audio-r1.5"):
        assert render_chat(get_card(name), request.messages) == expected


# -- the budget belongs to the model --------------------------------------------------------------
def test_precedence_command_line_then_card_then_task_then_defaults() -> None:
    task = GenerationParams(max_tokens=512, temperature=0.0)  # what MMAU/Spoken-MQA set
    card = {"max_tokens": 32000, "temperature": 0.7, "stop": ["<|EOT|>"]}
    params, sources = resolve_generation(task, card, {"max_tokens": None}, seed=3)
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed) == (
        32000, 0.7, 1.0, ["<|EOT|>"], 3,
    )  # fmt: skip
    assert {k: v["source"] for k, v in sources.items()} == {
        "max_tokens": "card", "temperature": "card", "top_p": "default", "stop": "card", "seed": "run",
    }  # fmt: skip
    params, sources = resolve_generation(task, card, {"max_tokens": 64, "top_p": 0.5}, seed=0)
    assert (params.max_tokens, params.top_p, sources["max_tokens"]["source"]) == (64, 0.5, "cli")
    params, sources = resolve_generation(task, {}, {}, seed=0)  # no card: the task's, then defaults
    assert (params.max_tokens, sources["max_tokens"]["source"], sources["top_p"]["source"]) == (
        512,
        "task",
        "default",
    )


def test_card_request_carries_the_official_settings() -> None:
    adapter = load_model("step-audio-r1.5", base_url=URL)
    card = adapter.describe()["generation_defaults"]
    params, _ = resolve_generation(GenerationParams(max_tokens=512, temperature=0.0), card, {}, seed=0)
    body = adapter.build_payload(
        ChatRequest(messages=[Message(role="user", content=[{"type": "text", "text": "hi"}])], params=params)
    )
    assert (body["max_tokens"], body["temperature"], body["repetition_penalty"]) == (32000, 0.7, 1.0)
    assert (
        body["stop"] == ["<|EOT|>"]
        and body["stop_token_ids"] == [151665]
        and body["skip_special_tokens"] is False
    )
