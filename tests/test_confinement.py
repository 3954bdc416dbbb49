"""Paths named by data stay inside their folders (``evalkit.confine``), driven through the CLI.

The canaries: a text secret beside the data folder named as ``../../secret.txt``, the same kind
of secret by absolute path, a symlink inside the data folder pointing at it, and a WAV outside
the folder. None of their bytes (raw or base64) may appear in any file of the run directory,
of a report rebuilt from a tampered ``responses.jsonl``, or of a leaderboard site, and none may
reach the model server; ``--allow-path`` lets the outside WAV through, and only it. Also here:
duplicate sample ids, a non-UTF-8 samples file and two samples files of one name.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.confine import PathEscapeError, confine
from evalkit.errors import EvalkitError
from evalkit.leaderboard.assets import local_refs
from evalkit.tasks.base import fingerprint, resolve_tasks
from evalkit.testing.openai_server import OpenAIServer

pytest.importorskip("aiohttp")

SECRET = b"CANARY-7f3a9c-do-not-leak root:$6$salt$hash:19000:0:99999:7:::\n"
SECRET_ABS = b"CANARY-ABSOLUTE-51e0d2 id_rsa private key material\n"
#: the samples whose audio path escapes the data folder (``make_layout``)
ESCAPES = ("rel", "abs", "link", "outwav")


def _tone(path: Path, freq: float, seconds: float = 0.3) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t), 16000, subtype="PCM_16")
    return path.read_bytes()


@dataclass
class Layout:
    """``root/secret.txt``, ``root/secret-abs.txt``, ``root/outside/tone.wav`` and the data folder
    ``root/a/data/`` holding ``samples.jsonl``, ``clips/ok.wav`` and ``clips/link.wav`` -> secret."""

    root: Path
    samples: Path
    outside: Path
    outside_wav: bytes

    def canaries(self) -> list[bytes]:
        """Byte strings that must never appear: the secrets and the outside WAV, raw and base64
        (whole-file base64, as a data URI or an ``input_audio`` part would carry them)."""
        wav_head = self.outside_wav[:300]
        out = [SECRET.strip(), SECRET_ABS.strip(), self.outside_wav[44:344]]
        for blob in (SECRET, SECRET_ABS, wav_head):
            out.append(base64.b64encode(blob)[:-4])
        return out


def make_layout(root: Path) -> Layout:
    data = root / "a" / "data"
    (root / "secret.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "secret.txt").write_bytes(SECRET)
    (root / "secret-abs.txt").write_bytes(SECRET_ABS)
    outside_wav = _tone(root / "outside" / "tone.wav", 987.0)
    _tone(data / "clips" / "ok.wav", 440.0)
    (data / "clips" / "link.wav").symlink_to(root / "secret.txt")
    audio = {
        "ok": "clips/ok.wav",
        "rel": "../../secret.txt",
        "abs": str(root / "secret-abs.txt"),
        "link": "clips/link.wav",
        "outwav": "../../outside/tone.wav",
    }
    lines = []
    for sid, path in audio.items():
        turn = {"role": "user", "text": f"Question {sid}: what is 2 + 3?", "audio": {"path": path}}
        lines.append(
            json.dumps({"id": sid, "task": "t", "conversation": [turn], "reference": {"answer": "5"}})
        )
    samples = data / "samples.jsonl"
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Layout(root, samples, root / "outside", outside_wav)


@pytest.fixture(scope="module")
def server():
    with OpenAIServer() as srv:
        yield srv


def _texts(server: OpenAIServer) -> list[str]:
    return [json.dumps(r.body) for r in server.requests]


def _leaks(folder: Path, canaries: list[bytes]) -> list[str]:
    """Every (file, canary) where a canary's bytes occur in a file under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {c[:20]!r}" for c in canaries if c in data]
    return found


def _run(server: OpenAIServer, tasks: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return evalkit_run(
        "--model", f"openai:{server.model}@{server.base_url}", "--tasks", tasks,
        "--no-cache", "--retries", "1", "--out", str(out), *extra,
    )  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, timeout=120
    )


def _one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- the one function ----------------------------------------------------------------------------
def test_confine_resolves_dots_absolute_paths_and_symlinks(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    data = layout.samples.parent
    assert confine("clips/ok.wav", [data], "x", base=data) == (data / "clips" / "ok.wav").resolve()
    for path in (
        "../../secret.txt",
        str(tmp_path / "secret-abs.txt"),
        "clips/link.wav",
        "clips/../../../secret.txt",
    ):
        with pytest.raises(
            PathEscapeError, match="sample 'q' field audio.path: path .* resolves to .*--allow-path"
        ):
            confine(path, [data], "sample 'q' field audio.path", base=data)
    assert confine("../../outside/tone.wav", [data, layout.outside], "x", base=data).name == "tone.wav"
    (data / "loop.wav").symlink_to(data / "loop.wav")
    with pytest.raises(PathEscapeError, match="cannot be resolved .*it was not read"):
        confine("loop.wav", [data], "x", base=data)
    # a root given through a symlink still contains its own files
    (tmp_path / "data-link").symlink_to(data, target_is_directory=True)
    assert confine(tmp_path / "data-link" / "clips" / "ok.wav", [tmp_path / "data-link"], "x").is_file()


def test_resolved_path_agrees_with_a_full_resolve(tmp_path: Path, monkeypatch) -> None:
    """The folder memo of ``resolved_path`` gives what ``Path.resolve`` gives, for dots, links to
    folders and files, missing files, relative paths (whatever the cwd) and a folder relinked."""
    from evalkit.confine import resolved_path

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.wav").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f.wav").write_bytes(b"y")
    (tmp_path / "ln").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "b" / "link.wav").symlink_to(tmp_path / "other" / "f.wav")
    cases = [
        "a/b/f.wav", "a/./b/f.wav", "a/b/../b/f.wav", "ln/b/f.wav", "ln/b/../../other/f.wav",
        "a/b/link.wav", "a/b/missing.wav", "missing/dir/x.wav", "a/b/..", "a/b/.", "a//b/f.wav",
    ]  # fmt: skip
    for where in (tmp_path, tmp_path / "a"):
        monkeypatch.chdir(where)
        for case in cases:
            for given in (case, str(tmp_path / case)):
                assert resolved_path(given) == str(Path(given).resolve()), given


def test_fingerprint_never_reads_a_refused_file(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    [task] = resolve_tasks(f"jsonl:path={layout.samples},judges=numeric")
    before = task.dataset_info()["fingerprint"]
    (tmp_path / "secret.txt").write_bytes(b"changed secret")  # outside: hashed by name, never read
    (tmp_path / "secret-abs.txt").write_bytes(b"changed too")
    assert task.dataset_info()["fingerprint"] == before
    _tone(layout.samples.parent / "clips" / "ok.wav", 220.0)  # inside: its content counts
    assert task.dataset_info()["fingerprint"] != before
    assert fingerprint(task.samples()) != before  # without roots, every file is read (as before)


# -- a run --------------------------------------------------------------------------------------
def test_escaping_paths_are_input_errors_never_read_nor_sent(server: OpenAIServer, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "world")
    before = server.hits
    proc = _run(server, f"jsonl:path={layout.samples},judges=numeric", tmp_path / "runs")
    assert_ok(proc)
    run = only_run_dir(tmp_path / "runs")

    sent = _texts(server)[before:]
    assert len(sent) == 1 and "Question ok" in sent[0] and '"input_audio"' in sent[0]
    for body in sent:
        assert not any(c.decode("latin1") in body for c in layout.canaries())

    records = {r["sample_id"]: r for r in read_jsonl(run / "responses.jsonl")}
    assert records["ok"]["output"].get("error") is None
    for sid in ESCAPES:
        error = records[sid]["output"]["error"]
        assert error["kind"] == "input_path", error
        assert f"sample '{sid}' turn 0 field audio.path" in error["message"]
        assert "it was not read" in error["message"] and "--allow-path" in error["message"]
    summary = read_json(run / "summary.json")
    [task] = summary["tasks"].values()
    assert task["judges"]["numeric"]["n_model_errors"] == len(ESCAPES)
    assert task["requests"]["errors_by_kind"] == {"input_path": len(ESCAPES)}
    manifest = read_json(run / "manifest.json")
    assert manifest["config"]["allow_paths"] == []
    assert manifest["tasks"][0]["path_roots"] == [str(layout.samples.parent.resolve())]

    report = (run / "report.html").read_text(encoding="utf-8")
    assert report.count('class="input-audio"') == 1  # the one inside the data folder
    assert report.count("audio not shown") == len(ESCAPES)
    assert _leaks(run, layout.canaries()) == []

    site = tmp_path / "site"
    assert_ok(_cli("leaderboard", "build", str(run), "--out", str(site)))
    assert (site / "runs" / run.name / "report.html").is_file()
    assert _leaks(site, layout.canaries()) == []


def test_allow_path_lets_the_outside_wav_through_and_only_it(server: OpenAIServer, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "world")
    before = server.hits
    proc = _run(
        server,
        f"jsonl:path={layout.samples},judges=numeric",
        tmp_path / "runs",
        "--allow-path",
        str(layout.outside),
    )
    assert_ok(proc)
    run = only_run_dir(tmp_path / "runs")
    sent = _texts(server)[before:]
    assert sorted(s.split("Question ")[1].split(":")[0] for s in sent) == ["ok", "outwav"]
    assert all('"input_audio"' in s for s in sent)
    records = {r["sample_id"]: r for r in read_jsonl(run / "responses.jsonl")}
    assert {sid for sid, r in records.items() if r["output"].get("error")} == {"rel", "abs", "link"}
    manifest = read_json(run / "manifest.json")
    assert manifest["config"]["allow_paths"] == [str(layout.outside.absolute())]
    assert str(layout.outside.resolve()) in manifest["tasks"][0]["path_roots"]
    report = (run / "report.html").read_text(encoding="utf-8")
    assert report.count('class="input-audio"') == 2  # the allowed WAV is shown, re-encoded
    secrets = [c for c in layout.canaries() if b"CANARY" in c or b"Q0FOQVJZ" in c]
    assert _leaks(run, secrets) == []


def test_report_of_a_tampered_run_embeds_only_confined_audio(server: OpenAIServer, tmp_path: Path) -> None:
    """``evalkit report`` reads paths from responses.jsonl: they are confined like a run's."""
    layout = make_layout(tmp_path / "world")
    assert_ok(_run(server, f"jsonl:path={layout.samples},judges=numeric", tmp_path / "runs"))
    run = only_run_dir(tmp_path / "runs")
    (run / "audio").mkdir(exist_ok=True)
    (run / "audio" / "fake.wav").write_bytes(SECRET_ABS)  # inside the run, but not audio
    lines = read_jsonl(run / "responses.jsonl")
    evil: dict[str, Any] = {
        "rel": (str(tmp_path / "world" / "secret.txt"), "../../world/secret.txt"),
        "abs": ("/etc/passwd", "audio/fake.wav"),
        "link": (
            str(layout.samples.parent / "clips" / "link.wav"),
            str(tmp_path / "world" / "outside" / "tone.wav"),
        ),
    }
    for line in lines:
        if line["sample_id"] in evil:
            line["input"]["audio_path"], out_path = evil[line["sample_id"]]
            line["output"] = {"text": "The answer is 5.", "audio": {"path": out_path}}
    (run / "responses.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    assert_ok(_cli("report", str(run)))
    report = (run / "report.html").read_text(encoding="utf-8")
    assert report.count('class="input-audio"') == 1 and 'class="output-audio"' not in report
    assert "does not decode as audio" in report and "outside the run directory" in report
    leaks = _leaks(run, layout.canaries())  # the planted fake.wav holds a secret; nothing else may
    assert leaks and all(leak.startswith("audio/fake.wav") for leak in leaks), leaks


def test_leaderboard_copies_only_audio_inside_the_run(server: OpenAIServer, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "world")
    assert_ok(_run(server, f"jsonl:path={layout.samples},judges=numeric", tmp_path / "runs"))
    run = only_run_dir(tmp_path / "runs")
    (run / "audio").mkdir(exist_ok=True)
    (run / "audio" / "fake.wav").write_bytes(SECRET_ABS)
    (run / "audio" / "link.wav").symlink_to(tmp_path / "world" / "secret.txt")
    _tone(run / "audio" / "real.flac", 330.0)
    links = [
        f'<audio controls src="{os.path.relpath(tmp_path / "world" / "secret.txt", run)}"></audio>',
        f'<a href="{tmp_path / "world" / "secret-abs.txt"}">x</a>',
        '<audio controls src="audio/link.wav"></audio>',
        '<audio controls src="audio/fake.wav"></audio>',
        '<audio controls src="../../world/outside/tone.wav"></audio>',
        '<audio controls class="kept" src="audio/real.flac"></audio>',
    ]
    report = run / "report.html"
    report.write_text(report.read_text(encoding="utf-8").replace("</body>", "".join(links) + "</body>"))
    site = tmp_path / "site"
    assert_ok(_cli("leaderboard", "build", str(run), "--out", str(site)))
    copy = site / "runs" / run.name
    assert _leaks(site, layout.canaries()) == []
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert 'class="kept" src="audio/real.flac.wav"' in html
    samples, rate = sf.read(copy / "audio" / "real.flac.wav")
    assert rate == 16000 and len(samples) == 4800
    # every other link removed, but the run's one input clip: the report links it in the data
    # folder the manifest recorded, and the site carries it once, by content, into inputs/
    refs = set(local_refs(html).values())
    (carried,) = refs - {"audio/real.flac.wav"}
    assert (
        carried.startswith("../../inputs/")
        and (copy / carried).resolve().parent == (site / "inputs").resolve()
    )
    assert sf.read(copy / carried)[1] == 16000
    assert [p.name for p in (site / "inputs").iterdir()] == [Path(carried).name]
    # the four planted audio links (a secret, a symlink out, a non-audio file, a clip outside
    # every recorded root) become notes; the planted <a> loses its href
    assert html.count("audio not copied into the site") == 4
    assert sorted(p.name for p in (copy / "audio").iterdir()) == ["real.flac.wav"]
    assert not (copy / "linked").exists()


# -- sample ids, encodings, task names ---------------------------------------------------------------
def test_duplicate_sample_ids_are_one_line_before_any_request(server: OpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "dups.jsonl"
    rows = [{"id": sid, "task": "t", "conversation": [{"role": "user", "text": "1 + 1?"}]} for sid in "abca"]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    before = server.hits
    proc = _run(server, f"jsonl:path={path},judges=numeric", tmp_path / "runs")
    _one_error_line(proc, str(path), "line 4", "sample id 'a'", "fix:")
    assert server.hits == before and not (tmp_path / "runs").exists()


def test_non_utf8_samples_file_is_one_line(server: OpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"id": "a", "task": "t", "conversation": [{"role": "user", "text": "hi"}]})
    path.write_bytes(
        good.encode() + b"\n" + good.replace('"a"', '"b"').replace("hi", "caf\xe9").encode("latin1")
    )
    before = server.hits
    proc = _run(server, f"jsonl:path={path},judges=numeric", tmp_path / "runs")
    _one_error_line(proc, f"{path}: line 2 is not UTF-8", "byte 0xe9", "fix: re-save the file as UTF-8")
    assert server.hits == before


def _write(path: Path, sid: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "id": sid,
        "task": "t",
        "conversation": [{"role": "user", "text": "2 + 2?"}],
        "reference": {"answer": "4"},
    }
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def test_two_samples_files_of_one_name_get_names_from_their_folders(tmp_path: Path) -> None:
    a = _write(tmp_path / "x" / "a" / "samples.jsonl", "a1")
    b = _write(tmp_path / "y" / "b" / "samples.jsonl", "b1")
    c = _write(tmp_path / "z" / "a" / "samples.jsonl", "c1")
    one = resolve_tasks(f"jsonl:path={a},judges=numeric")
    assert [t.name for t in one] == ["jsonl-samples"]  # alone: the name it always had
    two = resolve_tasks(f"jsonl:path={a},judges=numeric,jsonl:path={b},judges=numeric")
    assert [t.name for t in two] == ["jsonl-a-samples", "jsonl-b-samples"]
    assert [s.task for t in two for s in t.samples()] == ["jsonl-a-samples", "jsonl-b-samples"]
    three = resolve_tasks(",".join(f"jsonl:path={p},judges=numeric" for p in (a, b, c)))
    assert [t.name for t in three] == ["jsonl-x-a-samples", "jsonl-y-b-samples", "jsonl-z-a-samples"]
    same = resolve_tasks(f"jsonl:path={a},judges=numeric,jsonl:path={a},judges=numeric")
    assert len(same) == 1  # the same task named twice runs once
    named = resolve_tasks(f"jsonl:path={a},judges=numeric,name=mine,jsonl:path={b},judges=numeric")
    assert [t.name for t in named] == ["mine", "jsonl-samples"]
    with pytest.raises(EvalkitError, match="all named 'jsonl-samples' .* name=NAME"):
        resolve_tasks(f"jsonl:path={a},judges=numeric,jsonl:path={a},judges=exact")
    with pytest.raises(EvalkitError, match="would both be named 'jsonl-a-samples'"):
        resolve_tasks(
            f"jsonl:path={a},judges=numeric,jsonl:path={b},judges=numeric,"
            f"jsonl:path={c},judges=numeric,name=jsonl-a-samples"
        )
    with pytest.raises(EvalkitError, match="2 different tasks are all named 'mine'"):
        resolve_tasks(f"jsonl:path={a},judges=numeric,name=mine,jsonl:path={b},judges=numeric,name=mine")


def test_two_samples_files_of_one_name_both_run(server: OpenAIServer, tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "samples.jsonl", "a1")
    b = _write(tmp_path / "b" / "samples.jsonl", "b1")
    proc = _run(server, f"jsonl:path={a},judges=numeric,jsonl:path={b},judges=numeric", tmp_path / "runs")
    assert_ok(proc)
    summary = read_json(only_run_dir(tmp_path / "runs") / "summary.json")
    assert {name: t["judges"]["numeric"]["n"] for name, t in summary["tasks"].items()} == {
        "jsonl-a-samples": 1,
        "jsonl-b-samples": 1,
    }


def test_a_benchmark_row_naming_a_file_outside_its_data_folder_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    layout = make_layout(tmp_path)
    data = tmp_path / "mmau"
    _tone(data / "audios" / "ok.wav", 440.0)
    rows = [
        {"id": rid, "question": "What is heard?", "choices": ["a bell", "a dog"], "answer": "a bell",
         "audio_id": audio, "task": "sound", "split": "test-mini"}
        for rid, audio in (("ok", "./audios/ok.wav"), ("evil", "../secret.txt"))
    ]  # fmt: skip
    (data / "mmau-test-mini.json").write_text(json.dumps(rows), encoding="utf-8")
    [task] = resolve_tasks(f"mmau-mini:data={data}")
    assert task.describe()["path_roots"] == [str(data.resolve())]
    ok, evil = task.samples()
    assert task.confine_sample(ok).conversation[0].audio.path == str((data / "audios" / "ok.wav").resolve())
    with pytest.raises(PathEscapeError, match="sample 'evil' turn 0 field audio.path"):
        task.confine_sample(evil)
    [allowed] = resolve_tasks(f"mmau-mini:data={data}", allow_paths=[layout.root])
    assert (
        allowed.confine_sample(list(allowed.samples())[1]).conversation[0].audio.path.endswith("secret.txt")
    )
