"""Dataset sources, prompt templates and --data: the plumbing every benchmark shares."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import pytest
import soundfile as sf

from evalkit.cli import with_data_option
from evalkit.errors import EvalkitError
from evalkit.records import AudioRef
from evalkit.tasks.prompts import render_prompt, template_digest, template_text
from evalkit.tasks.sources import audio_ref, load_hub, load_local, load_rows

ROWS = [
    {"id": "a", "question": "q1", "audio_path": "clips/a.wav"},
    {"id": "b", "question": "q2", "audio_path": "clips/b.wav"},
]


def _tone(path: Path, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t), 16000)


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet"])
def test_local_files_of_every_kind_give_the_same_rows(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"data.{kind}"
    if kind == "json":
        path.write_text(json.dumps(ROWS))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    source = load_local(path)
    assert source.rows == ROWS
    assert source.base == tmp_path


def test_folder_picks_the_split_file_and_resolves_relative_audio(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "dev.jsonl").write_text(json.dumps({**ROWS[0], "id": "dev"}))
    _tone(tmp_path / "clips" / "a.wav")
    source = load_rows("org/bench", tmp_path, None, "test")
    assert [r["id"] for r in source.rows] == ["a", "b"]
    assert source.info["id"] == "org/bench" and source.info["revision"] == "local"
    ref = audio_ref(source.rows[0]["audio_path"], source.base, "row a")
    assert ref.path == str(tmp_path / "clips" / "a.wav") and len(ref.read_bytes()) > 1000


def test_saved_hf_dataset_with_an_audio_column_is_read_without_decoding(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    _tone(tmp_path / "x.wav", 330.0)
    ds = datasets.Dataset.from_dict({"id": ["x"], "audio": [str(tmp_path / "x.wav")]}).cast_column(
        "audio", datasets.Audio()
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    source = load_local(tmp_path / "saved")
    cell = source.rows[0]["audio"]
    ref = audio_ref(cell, source.base, "row x")
    assert ref.digest() == AudioRef(path=str(tmp_path / "x.wav")).digest()


def test_missing_and_unreadable_inputs_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError, match=r"nope: dataset path not found; fix --data"):
        load_local(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalkitError, match="no .json/.jsonl/.parquet/.csv file found"):
        load_local(tmp_path / "empty")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{not json\n')
    with pytest.raises(EvalkitError, match=r"bad.jsonl: cannot read as a dataset"):
        load_local(tmp_path / "bad.jsonl")
    with pytest.raises(EvalkitError, match="row 7: no audio"):
        audio_ref({"bytes": None, "path": None}, None, "row 7")


def test_unreachable_hub_fails_fast_with_the_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(EvalkitError, match=r"unreachable.*offline, give --data PATH"):
        load_hub("org/bench", None, "test")


def test_dataset_fingerprint_covers_fields_and_the_audio_bytes_behind_paths(tmp_path: Path) -> None:
    """A benchmark's fingerprint must change when a clip's bytes change, even though the rows only
    name its path, and when any scored field changes; rebuilding the same data gives the same value."""
    from test_mmau import write_layout

    from evalkit.tasks.base import resolve_tasks

    data = write_layout(tmp_path / "mmau", "mmau-test-mini.json", "test-mini-audios")

    def fingerprint_of() -> str:
        [task] = resolve_tasks(f"mmau-mini:data={data}")
        return task.dataset_info()["fingerprint"]

    base = fingerprint_of()
    assert base == fingerprint_of()
    _tone(data / "test-mini-audios" / "s-1.wav", freq=999.0)
    changed_audio = fingerprint_of()
    assert changed_audio != base
    rows = json.loads((data / "mmau-test-mini.json").read_text())
    rows[0]["answer"] = rows[0]["choices"][1]
    (data / "mmau-test-mini.json").write_text(json.dumps(rows))
    assert fingerprint_of() not in (base, changed_audio)


def test_templates_render_strictly_and_are_fingerprinted() -> None:
    names = sorted(p.name for p in (Path(__file__).parents[1] / "tasks" / "templates").glob("*.j2"))
    assert names, "the benchmark prompt templates ship in tasks/templates"
    for name in names:
        assert template_digest(name) == __import__("hashlib").sha256(template_text(name).encode()).hexdigest()
    with pytest.raises(jinja2.UndefinedError):
        render_prompt(names[0])  # every template needs its fields: a missing one is an error


def test_data_option_goes_into_the_task_spec() -> None:
    assert with_data_option("mmau-mini", "/d/x") == "mmau-mini:data=/d/x"
    assert with_data_option("mmau-mini:mode=strict", "/d/x") == "mmau-mini:mode=strict,data=/d/x"
    with pytest.raises(EvalkitError, match="exactly one task"):
        with_data_option("mmau-mini,mmsu-bench", "/d")
    with pytest.raises(EvalkitError, match="cannot go in a task spec"):
        with_data_option("mmau-mini", "/d/a,b")
