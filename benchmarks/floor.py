"""How close is a whole evaluation to the floor: a bare HTTP client sending the same requests?

The workload (generated offline into a temporary folder): ``--items`` multiple-choice items, each
a conversation of ``--turns`` user turns (1: single-turn; ``--turns 20``: the long-conversation
variant), every turn a 2 s 16 kHz clip (distinct per item and turn, so no request repeats) with
its question text, as a ``jsonl:`` samples file scored by the ``choice`` judge. One loopback
server (``evalkit.testing.lean_server``, in its own process, answering every request exactly
``--delay`` seconds after it arrived, with the right letter) serves both clients, in turn:

- **bare**: a minimal asyncio client (aiohttp, the transport evalkit's adapter uses) in its own
  process: ``--concurrency`` workers, each conversation's turns in order, every turn sending the
  whole history with each clip read from disk and base64-encoded, streamed answers read to
  ``[DONE]``. Nothing else: no cache, no records, no scoring, no report. This is the floor.
- **evalkit**: the whole ``evalkit run`` process (CLI -> run directory with summary and report),
  same concurrency, a fresh response cache, evalkit's cache folder kept across trials (as a
  user's is: the first trial hashes the clips, the later ones find their digests there).

The two alternate for ``--trials`` rounds (interleaved, so a drifting machine load hits both). For
each process: wall seconds from start to exit, the request phase's share of ideal (requests /
phase seconds / (concurrency / delay); evalkit's phase is the runner's, from the manifest's
``last_session``), CPU ms per request (whole process, and within the request phase) and peak RSS
(``ru_maxrss`` from ``os.wait4``). Medians are printed last, with evalkit wall / bare wall.

``--burn`` adds a CPU burner (a busy loop in its own process) for the whole measurement: the
machine "under load". ``--load both`` measures quiet, then burning, and prints both.

    python benchmarks/floor.py [--items 1000] [--turns 1] [--concurrency 64] [--delay 0.2]
                               [--trials 3] [--load quiet|burn|both] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LETTERS = "ABCD"
CLIP_SECONDS = 2.0
RATE = 16000


# -- the workload ----------------------------------------------------------------------------------
def write_clip(path: Path, seed: int) -> None:
    """A distinct 2 s 16 kHz 16-bit clip (a tone plus noise, so no two clips share content)."""
    import numpy as np  # here, not at the top: the measured bare child must not import it
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * RATE)) / RATE
    samples = 0.2 * np.sin(2 * np.pi * (200 + seed % 800) * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(str(path), samples.astype(np.float32), RATE, subtype="PCM_16")


def answer_letter(item: int, turn: int) -> str:
    return LETTERS[(item + turn) % len(LETTERS)]


def write_workload(folder: Path, items: int, turns: int) -> Path:
    """``items`` samples of ``turns`` user turns each (clip + question), one JSON line per sample."""
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    path = folder / "floor.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(items):
            conversation = []
            for t in range(turns):
                clip = clips / f"c{i:06d}_{t:02d}.wav"
                write_clip(clip, i * 100 + t)
                question = (
                    f"Question {i}.{t}: which sound is it? (A) a bell (B) a drum (C) a voice (D) a horn. "
                    "Reply with the letter."
                )
                conversation.append({"role": "user", "text": question, "audio": {"path": str(clip)}})
            sample = {
                "id": f"q{i:06d}",
                "task": "floor",
                "conversation": conversation,
                "reference": {
                    "answer": answer_letter(i, turns - 1),
                    "choices": ["bell", "drum", "voice", "horn"],
                },
                "meta": {"category": f"c{i % 7}"},
            }
            fh.write(json.dumps(sample) + "\n")
    return path


# -- the server ------------------------------------------------------------------------------------
QUESTION = re.compile(rb"Question (\d+)\.(\d+)")


def floor_answer(body: bytes) -> str:
    """The right reply to a request, from its raw body: the last question's number (a space never
    occurs in base64, so no clip can fake one) gives the letter."""
    found = QUESTION.findall(body)
    item, turn = (int(x) for x in found[-1]) if found else (0, 0)
    return f"The answer is ({answer_letter(item, turn)})."


def serve(delay: float) -> None:
    """The loopback server (``evalkit.testing.lean_server``: each answer exactly ``delay`` after its
    request arrived, microseconds of CPU per request, so the server is not what the clients wait
    for). Prints its URL, serves until killed."""
    from evalkit.testing.lean_server import serve_forever

    serve_forever(floor_answer, delay)


def server_hits(base_url: str) -> int:
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(base_url.removesuffix("/v1") + "/_loopback/stats", timeout=10) as response:
        return json.load(response)["hits"]


# -- the bare client ------------------------------------------------------------------------------
async def bare_client(samples: Path, base_url: str, concurrency: int) -> dict[str, Any]:
    """The floor: the same requests with nothing around them. Returns the request phase's
    seconds and CPU, and how many answers were right (a fast wrong client proves nothing)."""
    import aiohttp

    lines = samples.read_text(encoding="utf-8").splitlines()
    queue = iter(lines)
    correct = 0
    requests = 0

    async def ask(session: aiohttp.ClientSession, messages: list[dict[str, Any]]) -> str:
        body = {
            "model": "loopback",
            "messages": messages,
            "max_tokens": 1024,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text: list[str] = []
        async with session.post(f"{base_url}/chat/completions", json=body) as response:
            async for raw in response.content:
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    break
                for choice in json.loads(data).get("choices") or ():
                    text.append((choice.get("delta") or {}).get("content") or "")
        return "".join(text)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal correct, requests
        for line in queue:
            sample = json.loads(line)
            messages: list[dict[str, Any]] = []
            reply = ""
            for turn in sample["conversation"]:
                parts: list[dict[str, Any]] = [{"type": "text", "text": turn["text"]}]
                if turn.get("audio"):  # a text-only turn (harness_overhead's workload) sends its text
                    clip = base64.b64encode(Path(turn["audio"]["path"]).read_bytes()).decode("ascii")
                    parts.insert(0, {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}})
                messages.append({"role": "user", "content": parts})
                reply = await ask(session, messages)
                requests += 1
                messages.append({"role": "assistant", "content": reply})
            correct += f"({sample['reference']['answer']})" in reply

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "phase_cpu_s": cpu, "requests": requests, "correct": correct}


def bare_child(samples: Path, base_url: str, concurrency: int) -> None:
    print(json.dumps(asyncio.run(bare_client(samples, base_url, concurrency))))


# -- evalkit's whole process -----------------------------------------------------------------------
def evalkit_child(argv: list[str]) -> None:
    """``evalkit run ARGV`` as the CLI runs it, with the runner's request phase timed in CPU too
    (the one number the run directory does not record): printed as a JSON line when it ends."""
    import evalkit.runner as runner
    from evalkit.cli import main

    run = runner.Runner.run

    async def timed_run(self) -> None:
        cpu = time.process_time()
        try:
            await run(self)
        finally:  # printed as the phase ends: ``main`` leaves the process without returning
            print(json.dumps({"phase_cpu_s": time.process_time() - cpu}), flush=True)

    runner.Runner.run = timed_run
    sys.argv = ["evalkit", "run", *argv]
    main()


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, Any]:
    """Run one measured process: its last JSON line on stdout, wall seconds, and its rusage."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{cmd[2:4]} failed (exit {code}): {output[-2000:]}")
    result = next(line for line in reversed(output.splitlines()) if line.startswith("{"))
    return json.loads(result), wall, usage


def figures(kind: str, requests: int, seconds: float, phase_cpu: float, wall: float, usage, ideal: float):
    return {
        "client": kind,
        "wall_s": round(wall, 3),
        "phase_s": round(seconds, 3),
        "share_of_ideal": round(requests / seconds / ideal, 4),
        "cpu_ms_per_request": round(1000 * (usage.ru_utime + usage.ru_stime) / requests, 3),
        "phase_cpu_ms_per_request": round(1000 * phase_cpu / requests, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def measure_bare(samples: Path, url: str, args: argparse.Namespace, expected: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--bare-child",
        str(samples),
        "--url",
        url,
        "--concurrency",
        str(args.concurrency),
    ]
    result, wall, usage = run_child(cmd, child_env())
    if result["requests"] != expected or result["correct"] != args.items:
        raise SystemExit(f"bare run invalid: {result}")
    ideal = args.concurrency / args.delay
    return figures("bare", expected, result["seconds"], result["phase_cpu_s"], wall, usage, ideal)


def measure_evalkit(
    samples: Path, url: str, args: argparse.Namespace, expected: int, tmp: Path
) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    argv = [
        "--model", f"openai:loopback@{url}",
        "--tasks", f"jsonl:path={samples},judges=choice",
        "--concurrency", str(args.concurrency),
        "--out", str(out / "runs"),
        "--cache-path", str(out / "cache" / "responses.sqlite"),
        "--no-progress",
    ]  # fmt: skip
    # evalkit's own cache folder is kept across trials, as a user's is (compiled report template,
    # digests.sqlite: the first trial hashes the clips, later ones find their digests); the
    # response cache is fresh per run (--cache-path), so every request is asked
    env = {**child_env(), "EVALKIT_CACHE_DIR": str(tmp / "evalkit-cache")}
    phase, wall, usage = run_child([sys.executable, __file__, "--evalkit-child", "--", *argv], env)
    (run_dir,) = (out / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["tasks"]["jsonl-floor"]
    session = manifest["last_session"]
    accuracy = summary["judges"]["choice"]["metrics"]["accuracy"]["value"]
    if session["requests"] != expected or summary["requests"]["n_errors"] or accuracy != 1.0:
        raise SystemExit(f"evalkit run invalid: {session['requests']} requests, accuracy {accuracy}")
    ideal = args.concurrency / args.delay
    row = figures("evalkit", expected, session["seconds"], phase["phase_cpu_s"], wall, usage, ideal)
    row["run_dir_mib"] = round(sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 2**20, 2)
    row["report_mib"] = round((run_dir / "report.html").stat().st_size / 2**20, 2)
    return row


# -- load ------------------------------------------------------------------------------------------
def burn() -> None:
    """A busy loop: one core's worth of someone else's work."""
    x = 0
    while True:
        x = (x * 31 + 7) % 1_000_003


#: what an evalkit run imports, compiled once before the trials (see ``child_env``)
WARM_IMPORTS = (
    "evalkit.cli, evalkit.runner, evalkit.models.openai_chat, evalkit.tasks.samples_file, "
    "evalkit.judges.choice, evalkit.finalize, evalkit.reports.html, evalkit.reports.charts"
)


def child_env() -> dict[str, str]:
    """The measured processes' environment: bytecode caching on. A user's installed evalkit has its
    ``.pyc`` files; a machine that sets ``PYTHONDONTWRITEBYTECODE`` (this one does) would make every
    evalkit process compile its sources again (~1 s), a cost of that setting, not of the harness."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def warm_bytecode() -> None:
    subprocess.run([sys.executable, "-c", f"import {WARM_IMPORTS}"], env=child_env(), check=True)


def measure(args: argparse.Namespace, load: str) -> dict[str, Any]:
    """``--trials`` interleaved rounds (bare, then evalkit) against one server; medians."""
    from evalkit.testing.openai_server import spawn_url_process

    warm_bytecode()

    burner = None
    if load == "burn":
        burner = multiprocessing.get_context("spawn").Process(target=burn, daemon=True)
        burner.start()
    server, url = spawn_url_process([sys.executable, __file__, "--serve", "--delay", str(args.delay)])
    expected = args.items * args.turns
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="evalkit-floor-") as folder:
            tmp = Path(folder)
            samples = write_workload(tmp, args.items, args.turns)
            for trial in range(1, args.trials + 1):
                hits = server_hits(url)
                pair = [
                    measure_bare(samples, url, args, expected),
                    measure_evalkit(samples, url, args, expected, tmp),
                ]
                if server_hits(url) - hits != 2 * expected:
                    raise SystemExit("the server saw another number of requests than the clients sent")
                for row in pair:
                    row["trial"], row["load_average"] = trial, round(os.getloadavg()[0], 2)
                    print(_line(load, row), flush=True)
                rows += pair
    finally:
        server.terminate()
        server.wait(10)
        if burner is not None:
            burner.terminate()
            burner.join(10)
    return {"load": load, "trials": rows, "median": _medians(rows)}


def _medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "wall_s",
        "phase_s",
        "share_of_ideal",
        "cpu_ms_per_request",
        "phase_cpu_ms_per_request",
        "peak_rss_mib",
    )
    out: dict[str, Any] = {}
    for client in ("bare", "evalkit"):
        mine = [r for r in rows if r["client"] == client]
        out[client] = {k: round(statistics.median(r[k] for r in mine), 4) for k in keys}
    out["wall_ratio"] = round(out["evalkit"]["wall_s"] / out["bare"]["wall_s"], 3)
    return out


def _line(load: str, row: dict[str, Any]) -> str:
    extra = f"  report {row['report_mib']:.2f} MiB" if "report_mib" in row else ""
    return (
        f"[{load}] trial {row.get('trial', 'median')} {row['client']:>7}: wall {row['wall_s']:7.2f}s  "
        f"phase {row['phase_s']:6.2f}s  share of ideal {row['share_of_ideal']:.3f}  "
        f"CPU {row['cpu_ms_per_request']:6.2f} ms/req (phase {row['phase_cpu_ms_per_request']:.2f})  "
        f"peak RSS {row['peak_rss_mib']:6.1f} MiB{extra}"
        + (f"  (load average {row['load_average']:.1f})" if "load_average" in row else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="samples (conversations)")
    parser.add_argument("--turns", type=int, default=1, help="user turns per sample (20: long variant)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--load", choices=("quiet", "burn", "both"), default="quiet", help="burn: a CPU burner runs"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--evalkit-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.delay)
        return 0
    if args.bare_child is not None:
        bare_child(args.bare_child, args.url, args.concurrency)
        return 0
    if args.evalkit_child:
        evalkit_child(args.rest)
        return 0

    loads = ("quiet", "burn") if args.load == "both" else (args.load,)
    print(
        f"floor: {args.items} items x {args.turns} turn(s), 2 s 16 kHz clips, C={args.concurrency}, "
        f"D={args.delay}s (ideal {args.concurrency / args.delay:.0f} req/s), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = [measure(args, load) for load in loads]
    for result in results:
        med = result["median"]
        for client in ("bare", "evalkit"):
            print(_line(result["load"], {"client": client, **med[client]}))
        print(f"[{result['load']}] evalkit wall / bare wall: {med['wall_ratio']:.3f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"items": args.items, "turns": args.turns, "concurrency": args.concurrency,
                   "delay_s": args.delay, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                   "results": results}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
