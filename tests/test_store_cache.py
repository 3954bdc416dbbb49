"""The run directory (append-only, resumable, deterministically ordered) and the response cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evalkit.cache import ResponseCache, request_key
from evalkit.errors import EvalkitError
from evalkit.records import (
    SCHEMA_VERSION,
    AudioPart,
    AudioRef,
    ChatRequest,
    ErrorInfo,
    GenerationParams,
    Message,
    ModelOutput,
    ResponseRecord,
    Sample,
    Score,
    ScoreRecord,
    TextPart,
    Turn,
    Usage,
)
from evalkit.store import RESPONSES, SAMPLES, SCORES, RunStore, read_jsonl

# -- RunStore -------------------------------------------------------------------------------------


def _resp(task: str, sample: str, index: int, turn: int, text: str = "ok") -> ResponseRecord:
    return ResponseRecord(
        task=task,
        sample_id=sample,
        sample_index=index,
        turn=turn,
        request_hash=f"{task}-{sample}-{turn}",
        output=ModelOutput(text=text),
    )


def _score(task: str, sample: str, index: int, judge: str, value: float = 1.0) -> ScoreRecord:
    return ScoreRecord(
        task=task, sample_id=sample, sample_index=index, score=Score(judge=judge, metrics={"accuracy": value})
    )


def test_create_makes_a_fresh_named_directory(tmp_path: Path) -> None:
    first = RunStore.create(tmp_path / "runs", "openai:my model@http://host:8000/v1", ["demo-a", "demo-b"])
    assert first.root.is_dir()
    assert first.root.parent == tmp_path / "runs"
    name = first.run_id
    assert name == first.root.name
    assert "openai-my-model_demo-a-demo-b" in name  # slugged spec without the URL, and the tasks
    assert "http" not in name
    second = RunStore.create(tmp_path / "runs", "openai:my model@http://host:8000/v1", ["demo-a", "demo-b"])
    assert second.root != first.root  # never reuses a directory
    assert second.root.is_dir()


def test_manifest_write_read_update(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    store.write_manifest({"status": "running", "seed": 3, "tasks": [{"name": "t"}]})
    version = {"schema_version": SCHEMA_VERSION}  # the writer's, always stamped
    assert store.read_manifest() == {"status": "running", "seed": 3, "tasks": [{"name": "t"}], **version}
    updated = store.update_manifest(status="completed", ended="now")
    assert updated == {"status": "completed", "seed": 3, "tasks": [{"name": "t"}], "ended": "now", **version}
    on_disk = json.loads((store.root / "manifest.json").read_text())
    assert on_disk == updated
    assert not list(store.root.glob("*.tmp"))  # atomic write leaves no temp file

    reopened = RunStore.open_existing(store.root)
    assert reopened.read_manifest() == updated


def test_open_existing_rejects_non_run_directory(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError, match="not a run directory"):
        RunStore.open_existing(tmp_path)


def test_damaged_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    (store.root / "manifest.json").write_text("{not json")
    with pytest.raises(EvalkitError, match="cannot read manifest"):
        store.read_manifest()


def test_summary_write_and_missing(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    with pytest.raises(EvalkitError, match="no summary yet"):
        store.read_summary()
    store.write_summary({"tasks": {"t": {"n": 1}}})
    assert store.read_summary() == {"tasks": {"t": {"n": 1}}, "schema_version": SCHEMA_VERSION}


def test_append_and_read_back(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    assert store.responses() == [] and store.scores() == []
    store.open_streams()
    responses = [_resp("t", "s0", 0, 0), _resp("t", "s1", 1, 0, text="two")]
    scores = [_score("t", "s0", 0, "numeric"), _score("t", "s1", 1, "numeric", 0.0)]
    for r in responses:
        store.append_response(r)
    for s in scores:
        store.append_score(s)
    # readable while the streams are still open (each line is flushed)
    assert store.responses() == responses
    store.close_streams()
    assert store.responses() == responses
    assert store.scores() == scores
    lines = (store.root / RESPONSES).read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["output"]["text"] == "two"


def test_torn_last_line_is_ignored_then_truncated_on_resume(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    good = _resp("t", "s0", 0, 0)
    torn = _resp("t", "s1", 1, 0).model_dump_json()[:25]  # killed mid-write: no newline
    path = store.root / RESPONSES
    path.write_text(good.model_dump_json(exclude_none=True) + "\n" + torn)

    assert store.responses() == [good]

    store.open_streams()  # resuming: the torn tail is cut off before appending
    assert path.read_text() == good.model_dump_json(exclude_none=True) + "\n"
    later = _resp("t", "s2", 2, 0)
    store.append_response(later)
    store.close_streams()
    assert store.responses() == [good, later]


def test_complete_last_line_without_newline_is_also_ignored(tmp_path: Path) -> None:
    # a line is only complete once its newline is written
    rec = _resp("t", "s0", 0, 0)
    path = tmp_path / "x.jsonl"
    path.write_text(rec.model_dump_json())
    assert read_jsonl(path, ResponseRecord) == []


def test_bad_middle_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text(_score("t", "s0", 0, "j").model_dump_json() + "\n{garbage}\n")
    with pytest.raises(EvalkitError, match=r"scores\.jsonl:2: not a valid ScoreRecord"):
        read_jsonl(path, ScoreRecord)


def test_finalize_order_sorts_and_keeps_latest(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["b", "a"])
    store.open_streams()
    # appended in completion order, with a failed response later retried on resume
    store.append_response(_resp("a", "a1", 1, 0))
    store.append_response(_resp("b", "b0", 0, 1))
    store.append_response(_resp("a", "a0", 0, 0))
    store.append_response(_resp("b", "b0", 0, 0, text="first try"))
    store.append_response(_resp("b", "b0", 0, 0, text="retried"))
    store.append_score(_score("a", "a0", 0, "numeric"))
    store.append_score(_score("b", "b0", 0, "numeric"))
    store.append_score(_score("a", "a0", 0, "choice"))
    store.append_score(_score("b", "b0", 0, "choice", 0.0))
    store.append_score(_score("b", "b0", 0, "choice", 1.0))  # latest wins
    store.append_score(_score("a", "a0", 0, "extra"))  # a judge not in judge_order sorts last

    store.finalize_order(task_order=["b", "a"], judge_order=["choice", "numeric"])

    responses = store.responses()
    assert [(r.task, r.sample_id, r.turn) for r in responses] == [
        ("b", "b0", 0),
        ("b", "b0", 1),
        ("a", "a0", 0),
        ("a", "a1", 0),
    ]
    assert responses[0].output.text == "retried"
    scores = store.scores()
    assert [(s.task, s.sample_id, s.score.judge) for s in scores] == [
        ("b", "b0", "choice"),
        ("b", "b0", "numeric"),
        ("a", "a0", "choice"),
        ("a", "a0", "numeric"),
        ("a", "a0", "extra"),
    ]
    assert scores[0].score.metrics == {"accuracy": 1.0}
    assert (store.root / SCORES).read_text().count("\n") == 5


def test_the_writers_index_sorts_exactly_as_an_index_pass(tmp_path: Path) -> None:
    """A session that wrote its streams from empty files hands finalize their lines' places
    (no index pass); the files come out byte for byte as a reopened store's index pass sorts
    them. A line someone else appended makes the writer's index void: the file is read instead."""

    def write(root: Path) -> RunStore:
        store = RunStore.create(root, "m", ["b", "a"])
        store.open_streams()
        for task, sample, index, text in [("a", "a1", 1, "x"), ("b", "b0", 0, "y"), ("a", "a0", 0, "z"),
                                          ("b", "b0", 0, "retried")]:  # fmt: skip
            store.append_response(_resp(task, sample, index, 0, text=text))
            store.append_score(_score(task, sample, index, "numeric"))
            said = Sample(id=sample, task=task, conversation=[Turn(role="user", text=text)])
            store.append_sample(task, index, said)
        store.close_streams()
        return store

    indexed = write(tmp_path / "indexed")
    assert indexed._responses is not None and indexed._responses.known_lines() is not None
    indexed.finalize_order(["b", "a"], ["numeric"])
    passed = write(tmp_path / "passed")
    RunStore(passed.root).finalize_order(["b", "a"], ["numeric"])  # no writer: an index pass
    for name in (RESPONSES, SCORES, SAMPLES):  # samples.jsonl: copied by the index, never parsed
        assert (indexed.root / name).read_bytes() == (passed.root / name).read_bytes()
    assert [r.output.text for r in indexed.responses()] == ["retried", "z", "x"]
    samples = [json.loads(line) for line in (indexed.root / SAMPLES).read_text().splitlines()]
    assert [(r["task"], r["sample"]["id"]) for r in samples] == [("b", "b0"), ("a", "a0"), ("a", "a1")]

    other = write(tmp_path / "other")
    with open(other.root / RESPONSES, "a", encoding="utf-8") as fh:
        fh.write(_resp("a", "a2", 2, 0, text="appended elsewhere").to_json() + "\n")
    assert other._responses is not None and other._responses.known_lines() is None
    other.finalize_order(["b", "a"], ["numeric"])
    assert [r.sample_id for r in other.responses()] == ["b0", "a0", "a1", "a2"]


def test_finalize_order_is_idempotent(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    store.open_streams()
    store.append_response(_resp("t", "s1", 1, 0))
    store.append_response(_resp("t", "s0", 0, 0))
    store.finalize_order(["t"], [])
    once = (store.root / RESPONSES).read_bytes()
    store.finalize_order(["t"], [])
    assert (store.root / RESPONSES).read_bytes() == once


def test_save_output_audio_writes_file_and_relative_path(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    output = ModelOutput(text="hi", audio=AudioRef(data=b"RIFFaudio", sample_rate=24000))
    saved = store.save_output_audio("demo task", "sample/1", 2, output)
    assert saved.audio is not None
    assert saved.audio.data is None
    rel = Path(saved.audio.path)
    assert not rel.is_absolute()
    assert rel.parts[0] == "audio"
    assert rel == Path("audio/demo-task/sample-1_t2.wav")
    assert (store.root / rel).read_bytes() == b"RIFFaudio"
    assert saved.audio.sample_rate == 24000
    assert saved.text == "hi"
    assert output.audio.data == b"RIFFaudio"  # the input record is not changed


def test_save_output_audio_without_audio_is_a_no_op(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "m", ["t"])
    output = ModelOutput(text="hi")
    assert store.save_output_audio("t", "s", 0, output) is output
    assert not (store.root / "audio").exists()


# -- ResponseCache --------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path):
    c = ResponseCache(tmp_path / "cache" / "responses.sqlite")
    yield c
    c.close()


def test_cache_miss_then_round_trip(cache: ResponseCache) -> None:
    assert cache.get("nope") is None
    assert len(cache) == 0
    output = ModelOutput(text="12", reasoning="7+5", usage=Usage(prompt_tokens=3), model="m")
    cache.put("k1", "openai:m@http://x/v1", output)
    assert cache.get("k1") == output
    assert len(cache) == 1
    assert cache.stats()["entries"] == 1


def test_cache_put_replaces(cache: ResponseCache) -> None:
    cache.put("k", "spec", ModelOutput(text="old"))
    cache.put("k", "spec", ModelOutput(text="new"))
    assert cache.get("k").text == "new"
    assert len(cache) == 1


def test_cache_does_not_store_errors(cache: ResponseCache) -> None:
    cache.put("k", "spec", ModelOutput(error=ErrorInfo(kind="timeout", message="slow")))
    assert cache.get("k") is None
    assert len(cache) == 0


def test_cache_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = ResponseCache(path)
    first.put("k", "spec", ModelOutput(text="kept"))
    first.close()
    second = ResponseCache(path)
    try:
        assert second.get("k") == ModelOutput(text="kept")
    finally:
        second.close()


def test_a_new_scope_is_answered_from_this_process_s_own_puts(tmp_path: Path) -> None:
    """A declared new scope (a run created now) never queries for a miss, still finds what this
    process put in it, pending or committed; other scopes are looked up as before."""
    path = tmp_path / "c.sqlite"
    key = lambda i: hashlib.sha256(f"req{i}".encode()).hexdigest()  # noqa: E731
    old = ResponseCache(path)
    old.put(key(1), "spec", ModelOutput(text="old run's"), run_id="a", scope="run=a")
    old.put(key(2), "spec", ModelOutput(text="pinned"), run_id="a", scope="revision=v1")
    old.close()
    cache = ResponseCache(path)
    try:
        cache.declare_new_scope("run=b")
        queries: list[str] = []
        cache._db.set_trace_callback(queries.append)
        assert cache.get_entry(key(1), scope="run=b") is None  # the old run's row is not this scope's
        assert queries == []
        cache.put(key(3), "spec", ModelOutput(text="mine"), run_id="b", scope="run=b")
        assert cache.get_entry(key(3), scope="run=b").output.text == "mine"  # pending
        cache.flush()
        assert cache.get_entry(key(3), scope="run=b").output.text == "mine"  # committed: queried
        assert cache.get_entry(key(2), scope="revision=v1").output.text == "pinned"
        assert cache.get_entry(key(1), scope="run=a").output.text == "old run's"
    finally:
        cache.close()


def test_cache_stores_audio_as_blob(cache: ResponseCache) -> None:
    data = b"RIFF-spoken-answer"
    cache.put("k", "spec", ModelOutput(text="hi", audio=AudioRef(data=data, sample_rate=24000)))
    got = cache.get("k")
    assert got is not None and got.audio is not None
    assert got.audio.data is None
    blob = Path(got.audio.path)
    assert blob.parent == cache.path.parent / "blobs"
    assert blob.name == hashlib.sha256(data).hexdigest() + ".wav"
    assert blob.read_bytes() == data
    assert got.audio.sample_rate == 24000
    # the row itself does not hold the audio bytes
    cache.flush()
    row = cache._db.execute("SELECT output FROM responses WHERE key = 'k'").fetchone()[0]
    assert "data" not in json.loads(row)["audio"]

    blob.unlink()  # a cleaned-away blob is a miss, not a dangling path
    assert cache.get("k") is None


def _req(audio_path: Path, text: str = "q", **params) -> ChatRequest:
    return ChatRequest(
        messages=[
            Message(
                role="user", content=[AudioPart(audio=AudioRef(path=str(audio_path))), TextPart(text=text)]
            )
        ],
        params=GenerationParams(**params),
    )


def test_request_key(tmp_path: Path) -> None:
    a = tmp_path / "a.wav"
    b = tmp_path / "copy-of-a.wav"
    c = tmp_path / "c.wav"
    a.write_bytes(b"same sound")
    b.write_bytes(b"same sound")
    c.write_bytes(b"other sound")
    spec = "openai:m@http://127.0.0.1:8000/v1"

    key = request_key(spec, _req(a))
    assert len(key) == 64 and int(key, 16) >= 0  # sha256 hex
    assert request_key(spec, _req(a)) == key  # stable
    assert request_key(spec, _req(b)) == key  # same content, different path
    assert request_key(spec, _req(c)) != key  # different audio
    assert request_key(spec, _req(a, text="other")) != key
    assert request_key(spec, _req(a, temperature=0.5)) != key
    assert request_key(spec, _req(a, seed=1)) != key
    assert request_key(spec, _req(a, max_tokens=7)) != key
    assert request_key(spec, _req(a, extra={"skip_special_tokens": False})) != key
    assert request_key("openai:other@http://127.0.0.1:8000/v1", _req(a)) != key


def test_cascade_cache_identity_follows_asr_decoding() -> None:
    """Whisper's precision changes transcripts, hence answers: it must change the cache key too,
    even though it is not part of the spec a user writes."""
    from evalkit.models.base import load_model

    adapter = load_model("cascade:llm=openai:m@http://127.0.0.1:9/v1,tts=none")
    identity = adapter.cache_identity
    assert identity.startswith(adapter.spec) and "float32/beam5" in identity
    adapter.transcriber.compute_type = "int8"
    assert adapter.cache_identity != identity


# -- one writer per run directory -----------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    import os

    from evalkit.store import RunLocked

    root = tmp_path / "run"
    root.mkdir()
    first, second = RunStore(root), RunStore(root)
    first.acquire_lock()
    with pytest.raises(RunLocked, match=f"in use by pid {os.getpid()} on "):
        second.acquire_lock()
    first.release_lock()
    with second.locked():
        assert json.loads((root / ".lock.owner").read_text())["pid"] == os.getpid()
    assert not (root / ".lock.owner").exists()
    first.release_lock()  # releasing what one does not hold is a no-op


def test_concurrent_atomic_writes_use_their_own_temporary_files(tmp_path: Path) -> None:
    """Two writers of one file each rename their own temporary: before, they shared ``.tmp`` and
    one crashed on the other's rename."""
    import threading

    from evalkit.store import atomic_write_text, temp_path

    target = tmp_path / "summary.json"
    assert temp_path(target) != target and temp_path(target).name.startswith("summary.json.")
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            for i in range(100):
                atomic_write_text(target, f"{tag}{i}\n")
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in {"a99\n", "b99\n"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# -- cache scopes -----------------------------------------------------------------------------------
def test_cache_entries_are_scoped_and_record_their_run(tmp_path: Path) -> None:
    import sqlite3

    from evalkit.cache import cache_scope, scoped_key

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # a cache file made before scopes existed
    old.execute(
        "CREATE TABLE responses (key TEXT PRIMARY KEY, model_spec TEXT NOT NULL, "
        "output TEXT NOT NULL, created REAL NOT NULL)"
    )
    old.commit()
    old.close()
    cache = ResponseCache(path)
    unpinned, pinned = cache_scope(None, "run-a"), cache_scope("v1", "run-a")
    assert unpinned == "run=run-a" and pinned == "revision=v1" and cache_scope("v1", "run-b") == pinned
    assert scoped_key("h", unpinned) != scoped_key("h", cache_scope(None, "run-b"))
    cache.put(scoped_key("h", pinned), "spec", ModelOutput(text="x"), run_id="run-a", scope=pinned)
    entry = cache.get_entry(scoped_key("h", pinned))
    assert entry is not None and entry.output.text == "x" and entry.run_id == "run-a"
    assert cache.get_entry(scoped_key("h", unpinned)) is None
    assert cache.info()["models"] == [{"model": "spec", "scope": "pinned", "entries": 1}]
    cache.close()


def test_model_folder_revision_pins_local_folders_only(tmp_path: Path) -> None:
    from evalkit.cache import model_folder_revision

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = model_folder_revision(str(folder))
    assert first is not None and first.startswith("digest=")
    (folder / "config.json").write_text('{"changed": true}')
    assert model_folder_revision(str(folder)) not in (None, first)
    snapshot = tmp_path / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    assert model_folder_revision(str(snapshot)) == "commit=" + "a" * 40
    assert model_folder_revision("Qwen/Qwen2-Audio-7B-Instruct") is None  # a hub id can move
