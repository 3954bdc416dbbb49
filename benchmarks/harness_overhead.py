"""How much throughput does the harness itself cost?

A model server that takes exactly D seconds per request and has room for C requests at once can
serve at most C / D requests per second. This benchmark puts a loopback chat endpoint
(``evalkit.testing.lean_server``, in its own process so it does not share the harness's
interpreter; it answers exactly D after each request arrived, for microseconds of CPU, so its own
queue does not count against the harness) behind exactly that delay, pushes N requests through
evalkit's real pipeline (CLI config -> ``evaluate`` -> tasks -> openai adapter with streaming ->
response cache -> run store -> judge -> summary and report) with concurrency C, and reports
achieved / ideal. A ratio near 1 means the harness keeps the endpoint saturated; below 0.9 the
harness is the bottleneck. (When N is not a multiple of C the last round is partly empty, so even
a free harness stays below 1: for 1,000 requests at C=64 the ceiling is 1000 / (16 * 64) = 0.977.)

``seconds`` is the request phase (the runner from first request to last score, as recorded in the
manifest's ``last_session``); ``wall`` adds the one-off setup and finalisation (manifest, dataset
fingerprint, summary with bootstrap CIs, report.html) and is printed beside it.

Beside each run, ``floor.py``'s bare aiohttp client (nothing but the requests, in its own
process) sends the same samples through the same server: its ratio is the ceiling this machine's
loopback round trip allows any client.

On a shared 2-core machine one measurement moves by several hundredths from run to run, so the
benchmark repeats it (``--repeats``, default 3), prints every run side by side, and reports the
median last.

    python benchmarks/harness_overhead.py [--concurrency 64] [--delay 0.2] [--requests 1000]
                                          [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def write_samples(path: Path, n: int) -> None:
    """N distinct one-turn text questions (distinct so that no request hits the cache)."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            sample = {
                "id": f"q{i:06d}",
                "task": "bench",
                "conversation": [{"role": "user", "text": f"Question {i}: please reply {i}."}],
                "reference": {"answer": str(i)},
                "meta": {"category": f"c{i % 7}"},
            }
            fh.write(json.dumps(sample) + "\n")


#: the number each question asks for (``write_samples``), found in the raw request body
ASKED = re.compile(rb"please reply (\d+)\.")


def echo_answer(body: bytes) -> str:
    """The reply the numeric judge marks right: the last question's number (in the parentheses
    that the bare client of ``floor.py`` checks for)."""
    found = ASKED.findall(body)
    return f"The answer is ({found[-1].decode()})." if found else "no question found"


def start_server(delay: float):
    """This script in ``--serve`` mode, in its own process; returns it and its base URL."""
    from evalkit.testing.openai_server import spawn_url_process

    return spawn_url_process([sys.executable, __file__, "--serve", "--delay", str(delay)])


def bare_ratio(samples: Path, base_url: str, concurrency: int, ideal: float, requests: int) -> float:
    """The floor beside the harness: ``floor.py``'s bare aiohttp client (its own process, nothing
    but the requests) sending the same samples through the same server, as achieved / ideal.
    Where even it stays below a target, the machine's loopback round trip is the limit."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("floor.py")), "--bare-child", str(samples),
         "--url", base_url, "--concurrency", str(concurrency)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["requests"] != requests or result["correct"] != requests:
        raise SystemExit(f"bare client run invalid: {result}")
    return requests / result["seconds"] / ideal


def server_hits(base_url: str) -> int:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with direct.open(base_url.removesuffix("/v1") + "/_loopback/stats", timeout=10) as response:
        return json.load(response)["hits"]


def measure(concurrency: int, delay: float, requests: int) -> dict:
    from evalkit.runner import RunConfig, evaluate

    server, base_url = start_server(delay)
    try:
        with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
            root = Path(tmp)
            os.environ["EVALKIT_CACHE_DIR"] = str(root / "cache")
            samples = root / "bench.jsonl"
            write_samples(samples, requests)
            config = RunConfig(
                model=f"openai:loopback@{base_url}",
                tasks=f"jsonl:path={samples},judges=numeric",
                concurrency=concurrency,
                out_dir=str(root / "runs"),
                use_cache=True,
                cache_path=str(root / "cache" / "responses.sqlite"),
            )
            started = time.perf_counter()
            store = evaluate(config, argv=["harness_overhead"], show_progress=False)
            wall = time.perf_counter() - started
            manifest = store.read_manifest()
            summary = store.read_summary()["tasks"]["jsonl-bench"]
            hits = server_hits(base_url)
            bare = bare_ratio(samples, base_url, concurrency, concurrency / delay, requests)
    finally:
        server.terminate()
        server.wait(10)

    session = manifest["last_session"]
    if hits != requests or session["requests"] != requests or summary["requests"]["n_errors"]:
        raise SystemExit(
            f"benchmark invalid: server saw {hits} requests, runner sent {session['requests']}, "
            f"{summary['requests']['n_errors']} errors (expected {requests} clean requests)"
        )
    accuracy = summary["judges"]["numeric"]["metrics"]["accuracy"]["value"]
    if accuracy != 1.0:
        raise SystemExit(f"benchmark invalid: accuracy {accuracy} (the loopback server answers every item)")
    seconds = session["seconds"]
    achieved = requests / seconds
    ideal = concurrency / delay
    return {
        "concurrency": concurrency,
        "delay_s": delay,
        "requests": requests,
        "seconds": round(seconds, 3),
        "wall_s": round(wall, 3),
        "achieved_rps": round(achieved, 2),
        "ideal_rps": round(ideal, 2),
        "ratio": round(achieved / ideal, 4),
        "bare_ratio": round(bare, 4),
        "latency_p50_s": summary["requests"]["latency_s"]["p50"],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (C)")
    parser.add_argument("--delay", type=float, default=0.2, help="server seconds per request (D)")
    parser.add_argument("--requests", type=int, default=1000, help="requests to send")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the median is reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        from evalkit.testing.lean_server import serve_forever

        serve_forever(echo_answer, args.delay)
        return 0

    results = []
    for run in range(1, args.repeats + 1):
        result = measure(args.concurrency, args.delay, args.requests)
        results.append(result)
        print(
            f"run {run}: C={result['concurrency']}  D={result['delay_s']}s  requests={result['requests']}  "
            f"seconds={result['seconds']:.3f} (wall {result['wall_s']:.3f})  "
            f"achieved={result['achieved_rps']:.1f} req/s  ideal C/D={result['ideal_rps']:.1f} req/s  "
            f"ratio={result['ratio']:.3f}  (bare client: {result['bare_ratio']:.3f})",
            flush=True,
        )
    median = statistics.median(r["ratio"] for r in results)
    bare = statistics.median(r["bare_ratio"] for r in results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"median_ratio": median, "median_bare_ratio": bare, "runs": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"bare client ratio: {bare:.3f}")
    print(f"ratio: {median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
