"""Each input clip hashed and encoded once per run (``evalkit.clips``), with cache keys unchanged.

Before, every turn of a conversation re-read, re-hashed and re-encoded every clip so far (turn k:
k clips), and the fingerprint and samples.jsonl read each clip again (issue 18). These tests count
the reads and encodings of a real run against the loopback server."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from evalkit import clips
from evalkit.models import openai_chat
from evalkit.runner import RunConfig, evaluate
from evalkit.testing.openai_server import OpenAIServer

TURNS = 4
SAMPLES = 3


def _clip(path: Path, freq: float) -> Path:
    t = np.arange(8000) / 16000
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def _conversations(folder: Path) -> Path:
    """SAMPLES conversations of TURNS spoken user turns, every clip distinct."""
    rows = []
    for i in range(SAMPLES):
        turns = []
        for t in range(TURNS):
            clip = _clip(folder / f"c{i}_{t}.wav", 200 + 50 * (i * TURNS + t))
            turns.append({"role": "user", "text": f"Turn {t}: repeat {i}.", "audio": {"path": clip.name}})
        rows.append({"id": f"s{i}", "task": "conv", "conversation": turns, "reference": {"answer": str(i)}})
    path = folder / "conv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_file_is_hashed_once_while_unchanged(tmp_path: Path) -> None:
    digests = clips.FileDigests()
    clip = _clip(tmp_path / "a.wav", 300)
    expected = hashlib.sha256(clip.read_bytes()).hexdigest()
    assert [digests.digest(clip) for _ in range(5)] == [expected] * 5 and digests.reads == 1
    _clip(clip, 400)  # same size, new content and mtime
    os.utime(clip, ns=(1, 1))
    assert digests.digest(clip) == hashlib.sha256(clip.read_bytes()).hexdigest() and digests.reads == 2


def test_a_settled_file_s_digest_is_kept_across_processes(tmp_path: Path) -> None:
    """``DigestIndex``: a later process (a fresh ``FileDigests`` on the same index) stats a settled
    clip instead of reading it; a clip rewritten since (new mtime) and one modified just now (not
    settled: maybe still being written) are read and hashed."""
    index = tmp_path / "cache" / clips.DIGEST_INDEX
    old, new = _clip(tmp_path / "old.wav", 300), _clip(tmp_path / "new.wav", 500)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(old, ns=(an_hour_ago, an_hour_ago))
    truth = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (old, new)}
    first = clips.FileDigests()
    first.use_index(index)
    assert [first.digest(p) for p in (old, new)] == [truth[old], truth[new]] and first.reads == 2
    first.clear()  # closes the index, flushing what it holds
    second = clips.FileDigests()
    second.use_index(index)
    assert [second.digest(p) for p in (old, new)] == [truth[old], truth[new]]
    assert second.reads == 1  # only the unsettled one was read again
    _clip(old, 700)  # rewritten: same size, new content and mtime
    os.utime(old, ns=(an_hour_ago + 10**9, an_hour_ago + 10**9))
    third = clips.FileDigests()
    third.use_index(index)
    assert third.digest(old) == hashlib.sha256(old.read_bytes()).hexdigest() != truth[old]
    assert third.reads == 1
    second.clear()
    third.clear()


def test_a_read_only_cache_folder_keeps_digests_in_the_process_only(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    digests = clips.FileDigests()
    digests.use_index(blocked / clips.DIGEST_INDEX)  # cannot be made: no index, no error
    clip = _clip(tmp_path / "a.wav", 300)
    assert digests.digest(clip) == hashlib.sha256(clip.read_bytes()).hexdigest()
    digests.flush_index()


def test_a_failing_index_is_dropped_never_failing_the_digest(tmp_path: Path, monkeypatch) -> None:
    """A full disk (any SQLite error) while the index writes drops the index for the process: the
    digest is still given, and the flush at a run's end raises nothing (the run's own disk-full
    path reports what matters)."""
    import sqlite3

    def full(self) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(clips.DigestIndex, "flush", full)
    monkeypatch.setattr(clips, "INDEX_BATCH", 1)
    clip = _clip(tmp_path / "a.wav", 300)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(clip, ns=(an_hour_ago, an_hour_ago))
    digests = clips.FileDigests()
    digests.use_index(tmp_path / clips.DIGEST_INDEX)
    assert digests.digest(clip) == hashlib.sha256(clip.read_bytes()).hexdigest()
    digests.flush_index()
    assert digests._index is None
    digests.clear()


def test_an_object_memo_lives_as_long_as_its_object() -> None:
    memo = clips.ObjectMemo()

    class Thing:
        pass

    thing = Thing()
    made = [memo.get(thing, "k", lambda: [1]) for _ in range(3)]
    assert made[0] is made[1] is made[2] and memo.made == 1 and len(memo) == 1
    del thing, made
    gc.collect()
    assert len(memo) == 0


def test_a_conversation_run_reads_and_encodes_each_clip_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    samples = _conversations(data)
    clips.DIGESTS.clear()
    encoded_before = openai_chat.ENCODED.made
    with OpenAIServer() as server:
        config = RunConfig(
            model=f"openai:loopback@{server.base_url}",
            tasks=f"jsonl:path={samples},judges=numeric",
            out_dir=str(tmp_path / "runs"),
            concurrency=2,
            cache_path=str(tmp_path / "cache.sqlite"),
            model_revision="pinned",  # shared across runs: the second run must find every key
        )
        store = evaluate(config, argv=["test"], show_progress=False)
        sent = [r.body for r in server.requests]
        n_clips = SAMPLES * TURNS
        # the fingerprint, samples.jsonl and every turn's cache key asked for 3 + k digests
        assert clips.DIGESTS.reads == n_clips
        # each turn sends every clip so far (1 + 2 + ... + TURNS per sample), each encoded once
        parts = [
            p for b in sent for m in b["messages"] if isinstance(m["content"], list) for p in m["content"]
        ]
        assert sum(p["type"] == "input_audio" for p in parts) == SAMPLES * TURNS * (TURNS + 1) // 2
        assert openai_chat.ENCODED.made - encoded_before == n_clips
        hits = server.hits
        again = evaluate(config, argv=["test"], show_progress=False)
        assert server.hits == hits  # identical requests, identical keys: all served by the cache
    first = [json.loads(x)["request_hash"] for x in (store.root / "responses.jsonl").read_text().splitlines()]
    second = [
        json.loads(x)["request_hash"] for x in (again.root / "responses.jsonl").read_text().splitlines()
    ]
    assert first == second and len(set(first)) == n_clips
    session = again.read_manifest()["last_session"]
    assert session["requests"] == 0 and session["cache_hits"] == n_clips
