"""The request path's own costs (issue 18): WAV clips sent as they are when they already are the
wire format, connections reused after a streamed answer, stream lines written in timed batches,
the proxy looked up once. Each against real files, a real loopback server and a real event loop."""

from __future__ import annotations

import asyncio
import base64
import errno
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalkit.audio import load, pcm16_wav_as_is, wav_header
from evalkit.models.base import load_model
from evalkit.models.chat_http import env_proxy
from evalkit.models.openai_chat import ENCODED, audio_chunks_base64
from evalkit.records import AudioRef, ChatRequest, Message, TextPart
from evalkit.store import FLUSH_INTERVAL_S, JsonlAppender
from evalkit.testing.openai_server import OpenAIServer


def _wav(path: Path, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> Path:
    t = np.arange(rate // 4) / rate
    tone = 0.3 * np.sin(2 * np.pi * 330 * t)
    sf.write(str(path), np.stack([tone] * channels, axis=1).astype(np.float32), rate, subtype=subtype)
    return path


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
def test_the_wav_header_parser_agrees_with_libsndfile(tmp_path: Path, subtype: str, channels: int) -> None:
    path = _wav(tmp_path / "a.wav", 22050, channels, subtype)
    header, info = wav_header(path.read_bytes()), sf.info(str(path))
    assert header is not None
    assert (header.channels, header.samplerate, header.frames) == (
        info.channels,
        info.samplerate,
        info.frames,
    )
    assert (header.format_tag == 1 and header.bits == 16) is (subtype == "PCM_16")


def test_not_a_plain_wav_has_no_header(tmp_path: Path) -> None:
    flac = tmp_path / "a.flac"
    sf.write(str(flac), np.zeros(1000, dtype=np.float32), 16000, format="FLAC")
    assert wav_header(flac.read_bytes()) is None and wav_header(b"RIFF") is None
    whole = _wav(tmp_path / "b.wav").read_bytes()
    assert pcm16_wav_as_is(whole, 16000, True) is not None
    assert pcm16_wav_as_is(whole[:-100], 16000, True) is None  # a cut data chunk is decoded (or refused)


def test_a_clip_already_in_the_wire_format_is_sent_byte_for_byte(tmp_path: Path) -> None:
    clip = _wav(tmp_path / "mono16k.wav")
    (sent,) = audio_chunks_base64(AudioRef(path=str(clip)), 16000, None)
    assert base64.b64decode(sent) == clip.read_bytes()


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"), [(24000, 1, "PCM_16"), (16000, 2, "PCM_16"), (16000, 1, "PCM_24")]
)
def test_other_clips_are_still_decoded_and_reencoded(
    tmp_path: Path, rate: int, channels: int, subtype: str
) -> None:
    clip = _wav(tmp_path / "other.wav", rate, channels, subtype)
    (sent,) = audio_chunks_base64(AudioRef(path=str(clip)), 16000, None)
    samples, got_rate = sf.read(io.BytesIO(base64.b64decode(sent)), dtype="float32")
    expected, _ = load(AudioRef(path=str(clip)), sample_rate=16000)
    assert got_rate == 16000 and samples.ndim == 1 and np.allclose(samples, expected, atol=1 / 16384)


def test_a_streamed_answer_leaves_its_connection_for_the_next_request() -> None:
    ports: list[int] = []

    class PortServer(OpenAIServer):
        async def _chat(self, request):
            ports.append(request.transport.get_extra_info("peername")[1])
            return await super()._chat(request)

    with PortServer() as server:
        adapter = load_model(f"openai:{server.model}@{server.base_url}")
        request = ChatRequest(messages=[Message(role="user", content=[TextPart(text="Say 3")])])

        async def three() -> list[str]:
            try:
                return [(await adapter.generate(request)).text for _ in range(3)]
            finally:
                await adapter.aclose()

        assert asyncio.run(three()) == ["The answer is 3."] * 3
    assert len(ports) == 3 and len(set(ports)) == 1  # one connection, kept alive


def test_stream_lines_reach_the_file_within_the_flush_window(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"

    async def write() -> tuple[int, int]:
        appender = JsonlAppender(path)
        for i in range(5):
            appender.append(TextPart(text=f"line {i}"))
        at_once = path.read_text().count("\n")
        await asyncio.sleep(FLUSH_INTERVAL_S * 3)
        later = path.read_text().count("\n")
        appender.close()
        return at_once, later

    at_once, later = asyncio.run(write())
    assert at_once == 0 and later == 5  # one write for the window, not one per line
    outside = JsonlAppender(path)
    outside.append(TextPart(text="no loop"))  # outside an event loop: written at once
    assert path.read_text().count("\n") == 6
    outside.close()


def test_a_failed_timed_flush_is_raised_by_the_next_append(tmp_path: Path) -> None:
    appender = JsonlAppender(tmp_path / "full.jsonl")

    def disk_full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def write() -> None:
        appender.append(TextPart(text="first"))
        appender.flush = disk_full  # the timer's flush finds the disk full
        await asyncio.sleep(FLUSH_INTERVAL_S * 3)
        appender.append(TextPart(text="second"))

    with pytest.raises(OSError) as caught:
        asyncio.run(write())
    assert caught.value.errno == errno.ENOSPC
    appender.close()


def test_the_proxy_is_the_environment_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert env_proxy("http://127.0.0.1:8000/v1") is None
    assert env_proxy("http://models.example/v1") == "http://proxy.invalid:3128"
    monkeypatch.delenv("HTTP_PROXY")
    assert env_proxy("http://models.example/v1") is None


def test_the_closed_form_wilson_interval_is_scipy_s() -> None:
    """``wilson_ci`` no longer imports scipy.stats (~1 s at every run's end); same numbers."""
    from scipy.stats import binomtest

    from evalkit.stats import wilson_ci

    for n in (*range(1, 40), 999, 10_000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for level in (0.9, 0.95, 0.99):
                expected = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
                low, high = wilson_ci(k, n, level)
                assert abs(low - expected.low) < 1e-12 and abs(high - expected.high) < 1e-12


def test_a_body_with_spliced_base64_is_the_json_the_encoder_writes() -> None:
    """``json_body`` copies base64 audio in unscanned (the encoder's scan of it was ~2.5-4.4 ms
    per request); the bytes must be exactly ``json.dumps``'s, also when the text collides."""
    import json

    from evalkit.models.chat_http import JsonSafe, json_body

    clip = JsonSafe(base64.b64encode(bytes(range(256)) * 40).decode("ascii"))
    for text in ('héllo "quoted"\n\t', "\ue0000\ue001 looks like a stand-in"):
        part = {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}}
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": [part, {"type": "text", "text": text}]}],
        }
        assert json_body(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def test_the_request_phase_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """Every request of a run is freed by reference counting, never left for the garbage
    collector: a cycle per request (json_body's recursive closure was one) kept each ~90 kB body
    alive until a collection and made the collector run and walk them (issue 18). Measured over a
    real run's request phase against the loopback server: 40 requests, none of their objects in
    cycles, and none alive once the run is over."""
    import gc
    import json

    import evalkit.runner as runner
    from evalkit.runner import RunConfig, evaluate

    samples = tmp_path / "s.jsonl"
    with open(samples, "w", encoding="utf-8") as fh:
        for i in range(40):
            clip = _wav(tmp_path / f"c{i}.wav")
            turn = {"role": "user", "text": f"Say {i}", "audio": {"path": str(clip)}}
            sample = {"id": f"s{i}", "task": "s", "conversation": [turn], "reference": {"answer": i}}
            fh.write(json.dumps(sample) + "\n")
    garbage: list[str] = []
    original = runner.Runner.run
    encodings_before = len(ENCODED)  # other tests' clips this process still holds

    async def run_saving_garbage(self) -> None:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await original(self)
            gc.collect()
            garbage.extend(type(o).__name__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    with OpenAIServer() as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.Runner, "run", run_saving_garbage)
        config = RunConfig(
            model=f"openai:{server.model}@{server.base_url}",
            tasks=f"jsonl:path={samples},judges=numeric",
            concurrency=8,
            out_dir=str(tmp_path / "runs"),
            cache_path=str(tmp_path / "cache.sqlite"),
        )
        store = evaluate(config, show_progress=False)
        assert server.hits == 40
    summary = json.loads((store.root / "summary.json").read_text(encoding="utf-8"))
    assert summary["tasks"]["jsonl-s"]["judges"]["numeric"]["metrics"]["accuracy"]["value"] == 1.0
    # what is left is a few classes made once (and their tuples), never a request's objects
    assert set(garbage) <= {"type", "tuple"} and len(garbage) < 40, garbage
    # and every sample is freed with its clips' encodings once answered (a memo that kept its own
    # key, the sample, alive held each clip's base64 for the whole run: +85 MiB per 1000 clips)
    del store
    assert len(ENCODED) <= encodings_before
