"""The command line as users meet it (real subprocesses), and the demo task's generated data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile as sf

from evalkit.records import AudioRef
from evalkit.tasks.base import fingerprint

EVALKIT = shutil.which("evalkit", path=str(Path(sys.executable).parent)) or "evalkit"


def evalkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVALKIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for fragment in fragments:
        assert fragment in line
    return line


def test_help_succeeds() -> None:
    proc = evalkit("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "list", "report"):
        assert command in proc.stdout
    assert "Evaluate audio language models" in proc.stdout


def test_help_imports_no_heavy_modules() -> None:
    code = textwrap.dedent(
        """
        import sys
        import evalkit.cli

        try:
            evalkit.cli.app(["--help"])
        except SystemExit as exc:
            print("exit", exc.code)
        for name in ("torch", "transformers", "faster_whisper", "openai"):
            print(name, name in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert report["exit"] == "0"
    assert report["torch"] == "False"
    assert report["transformers"] == "False"
    assert report["faster_whisper"] == "False"
    assert report["openai"] in ("True", "False")  # reported for information


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (
            "tasks",
            ["demo", "demo-choice", "jsonl", "mmau-mini", "mmsu-bench", "spoken-mqa", "audio-multichallenge"],
        ),
        ("models", ["cascade", "hf", "openai"]),
        ("judges", ["choice", "numeric", "mmau-string-match", "mmsu-official", "math-verify", "amc-rubric"]),
    ],
)
def test_list(kind: str, names: list[str]) -> None:
    proc = evalkit("list", kind)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert set(names) <= set(listed) and listed == sorted(listed)
    for line in proc.stdout.splitlines():
        assert len(line.split(maxsplit=1)) == 2  # every name has a description


def test_list_bogus_kind() -> None:
    assert_one_error_line(evalkit("list", "bogus"), "'bogus'", "models, tasks, judges")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "cascade", "--tasks", "nope"], ["unknown task 'nope'", "demo-arithmetic"]),
        (["--model", "nope:x", "--tasks", "demo"], ["unknown model 'nope'", "openai", "step-audio-r1.5"]),
        (["--model", "openai:m@notaurl", "--tasks", "demo"], ["bad base URL 'notaurl'", "openai:m@notaurl"]),
    ],
    ids=["unknown-task", "unknown-model", "bad-url"],
)
def test_run_user_errors_are_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    proc = evalkit("run", *args, "--out", str(tmp_path / "runs"), "--no-progress", cwd=tmp_path)
    assert_one_error_line(proc, *fragments)
    assert not (tmp_path / "runs").exists()  # nothing written for a rejected command


def test_report_of_missing_directory() -> None:
    assert_one_error_line(evalkit("report", "/nonexistent"), "/nonexistent", "not a run directory")


# -- demo data ------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_demo_arithmetic_samples_and_fingerprint() -> None:
    from evalkit.tasks.demo import DemoArithmetic

    task = DemoArithmetic()
    samples = list(task.samples())
    assert len(samples) == 8
    assert task.count() == 8
    assert [s.id for s in samples] == [f"arith-{i:02d}" for i in range(8)]
    assert samples[0].reference == {"answer": "12"}
    assert samples[0].conversation[0].transcript == "What is seven plus five?"
    assert samples[0].conversation[0].text is None  # the question is only spoken
    assert {s.meta["voice"] for s in samples} == {"en-us", "en-us+f3"}
    for sample in samples:
        assert sample.task == "demo-arithmetic"
        assert len(sample.conversation) == 1
        audio = sample.conversation[0].audio
        assert isinstance(audio, AudioRef)
        path = Path(audio.path)
        assert path.is_file()
        info = sf.info(str(path))
        assert info.samplerate == 16000
        assert info.channels == 1
        assert 0.5 < info.duration < 15

    assert list(task.samples(limit=3)) == samples[:3]

    info = task.dataset_info()
    again = DemoArithmetic().dataset_info()
    assert info["fingerprint"] == again["fingerprint"]
    assert len(info["fingerprint"]) == 64
    assert info["count"] == 8
    assert info["id"] == "evalkit/demo-arithmetic"
    # the fingerprint covers the content: changing one reference changes it
    changed = [samples[0].model_copy(update={"reference": {"answer": "13"}}), *samples[1:]]
    assert fingerprint(changed) != info["fingerprint"]
    assert fingerprint(samples) == info["fingerprint"]


def test_the_invoked_command_alone_parses_helps_and_fails_as_in_the_whole_app() -> None:
    """``cli.invoked_app`` builds only the command a process names; each top-level command's help
    and a bad option must read exactly as they do from the whole app, and anything that is not a
    top-level command (a group, a typo, nothing) gets the whole app."""
    from typer.main import get_command_name
    from typer.testing import CliRunner

    from evalkit.cli import app, invoked_app

    runner = CliRunner()
    names = [info.name or get_command_name(info.callback.__name__) for info in app.registered_commands]
    assert {"run", "list", "report", "score", "compare"} <= set(names)
    for name in names:
        for args in ([name, "--help"], [name, "--no-such-option"]):
            alone, whole = runner.invoke(invoked_app(args), args), runner.invoke(app, args)
            assert invoked_app(args) is not app
            assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args
    for args in (["cache", "--help"], ["rnu"], [], ["--help"]):
        assert invoked_app(args) is app


@pytest.mark.parametrize(
    ("code", "status", "said"), [(3, 3, ""), (None, 0, ""), ("went wrong", 1, "went wrong")]
)
def test_leaving_skips_only_the_teardown(tmp_path: Path, code: object, status: int, said: str) -> None:
    """``cli._leave`` ends the process without the interpreter's teardown, but as it would have:
    a non-daemon thread finishes, atexit handlers run, buffered stdout is written, the status is
    the SystemExit's."""
    script = textwrap.dedent(
        f"""
        import atexit, sys, threading, time
        from pathlib import Path
        from evalkit.cli import _leave
        atexit.register(lambda: Path({str(tmp_path / "atexit")!r}).write_text("ran"))
        def late():
            time.sleep(0.2)
            Path({str(tmp_path / "thread")!r}).write_text("done")
        threading.Thread(target=late).start()
        sys.stdout.write("buffered, never flushed by hand")
        _leave({code!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "buffered, never flushed by hand"
    assert proc.stderr.strip() == said
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_only_the_evalkit_process_itself_tunes_the_collector() -> None:
    """``own_process.freeze_live_objects`` and ``collect_less`` are no-ops in a caller's Python
    session, and freeze what is alive / raise the young generation's threshold once ``cli.main``
    has claimed the process (a fresh interpreter, so this test session's collector is left alone)."""
    script = textwrap.dedent(
        """
        import gc
        from evalkit.own_process import claim, collect_less, freeze_live_objects
        before, threshold = gc.get_freeze_count(), gc.get_threshold()
        freeze_live_objects()
        collect_less()
        assert gc.get_freeze_count() == before, "froze objects of a process evalkit does not own"
        assert gc.get_threshold() == threshold, "tuned the collector of a process evalkit does not own"
        claim()
        freeze_live_objects()
        collect_less()
        assert gc.get_freeze_count() > before + 1000, gc.get_freeze_count()
        assert gc.get_threshold() == (20_000, *threshold[1:]), gc.get_threshold()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
