"""Does evalkit scale out, and does its memory stay flat as a dataset grows?

(a) Throughput over 1, 2 and 4 endpoints. Each endpoint is a loopback OpenAI-compatible server in
its own process (so it does not share the harness's interpreter) that serves at most ``--capacity``
requests at once, each taking ``--delay`` seconds: a fixed-size GPU server in miniature, able to do
``capacity / delay`` requests per second however many are sent to it. (The stock loopback server
answers any number of requests at once, so a single one would never be the bottleneck; this script
runs it with a slot limit in front, see ``serve``.) The harness gets all endpoints through the
multi-endpoint option (``model_options={"base_url": [url1, url2, ...]}``, the CLI's repeated
``--base-url``) with twice as many samples in flight as all endpoints can serve, so the endpoints
are the bottleneck. Reported: throughput, speedup over one endpoint, and ratio to ideal =
speedup / endpoints (1.0: perfect linear scaling).

(b) Peak memory for 1k vs 10k samples: the harness runs a ``jsonl:`` task (generated text-only
samples) against a zero-delay loopback server, each size in a fresh subprocess, and the peak RSS of
that subprocess (``ru_maxrss`` from ``os.wait4``) is compared. Samples are streamed and records are
appended to disk as they are made, so the generation phase must not grow with N; the child also
reports its peak at the moment generation ended (before ``finalize``), so that the run's end
(ordering the streams, summary, report.html) is shown apart. The run's end streams too: the
summary and the report read the record files line by line and keep compact numbers (plus the
records of the samples the report's browser shows), so the whole-run peak must stay flat as well.

    python benchmarks/scale.py [--delay 0.1] [--capacity 4] [--requests 400] [--sizes 1000 10000]
                               [--json benchmarks/results/scale.json] [--only memory|throughput]

``--only`` runs one part and keeps the other part's numbers from the existing JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness_overhead import write_samples  # same folder: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent


# -- the endpoint --------------------------------------------------------------------------------
def serve(delay: float, capacity: int) -> None:
    """A loopback server that serves ``capacity`` requests at a time, each held ``delay`` seconds
    (queued requests wait for a slot, as on a saturated GPU server). Prints its base URL, then
    serves until killed."""
    from evalkit.testing.openai_server import OpenAIServer

    class SlotServer(OpenAIServer):
        async def _chat(self, request):
            async with self._slots:
                await asyncio.sleep(delay)
                return await super()._chat(request)

    server = SlotServer(delay=0.0)

    async def main() -> None:
        server._slots = asyncio.Semaphore(capacity)
        print(await server.start_async(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_endpoint(delay: float, capacity: int) -> tuple[subprocess.Popen, str]:
    from evalkit.testing.openai_server import spawn_url_process

    cmd = [sys.executable, __file__, "--serve", "--delay", str(delay), "--capacity", str(capacity)]
    return spawn_url_process(cmd)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


def check_clean(store, requests: int) -> dict[str, Any]:
    """The run must have answered every sample right: a fast run that failed proves nothing."""
    manifest = store.read_manifest()
    summary = store.read_summary()["tasks"]["jsonl-bench"]
    session = manifest["last_session"]
    accuracy = summary["judges"]["numeric"]["metrics"]["accuracy"]["value"]
    if session["requests"] != requests or summary["requests"]["n_errors"] or accuracy != 1.0:
        raise SystemExit(
            f"benchmark invalid: {session['requests']} requests, {summary['requests']['n_errors']} errors, "
            f"accuracy {accuracy} (expected {requests} clean, correct requests)"
        )
    return manifest


# -- (a) throughput --------------------------------------------------------------------------------
def measure_endpoints(endpoints: int, delay: float, capacity: int, requests: int) -> dict[str, Any]:
    from evalkit.runner import RunConfig, evaluate

    started = [start_endpoint(delay, capacity) for _ in range(endpoints)]
    procs, urls = [p for p, _ in started], [u for _, u in started]
    try:
        with tempfile.TemporaryDirectory(prefix="evalkit-scale-") as tmp:
            root = Path(tmp)
            samples = root / "bench.jsonl"
            write_samples(samples, requests)
            config = RunConfig(
                model="openai:loopback",
                model_options={"base_url": urls},
                tasks=f"jsonl:path={samples},judges=numeric",
                concurrency=2 * capacity * endpoints,
                out_dir=str(root / "runs"),
                use_cache=False,
            )
            store = evaluate(config, argv=["scale", "throughput"], show_progress=False)
            manifest = check_clean(store, requests)
    finally:
        stop(procs)
    seconds = manifest["last_session"]["seconds"]
    return {
        "endpoints": endpoints,
        "requests": requests,
        "seconds": round(seconds, 3),
        "achieved_rps": round(requests / seconds, 2),
        "ideal_rps": round(endpoints * capacity / delay, 2),
    }


# -- (b) memory ---------------------------------------------------------------------------------------
def memory_child(n: int, base_url: str, out: Path) -> None:
    """Runs in its own process: one evaluation of N samples; prints JSON with the peak RSS reached
    by the end of generation (the rest of the process's peak is finalize's)."""
    import evalkit.finalize as finishing
    from evalkit.runner import RunConfig, evaluate

    at_generation_end: dict[str, int] = {}
    finalize = finishing.finalize

    def measured_finalize(store):
        at_generation_end["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # the high-water mark can be set by a start-up transient; what is held now is also shown
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        at_generation_end["rss_kib"] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
        return finalize(store)

    finishing.finalize = measured_finalize  # the runner imports finalize from its module when it ends
    samples = out / "bench.jsonl"
    write_samples(samples, n)
    config = RunConfig(
        model=f"openai:loopback@{base_url}",
        tasks=f"jsonl:path={samples},judges=numeric",
        concurrency=16,
        out_dir=str(out / "runs"),
        use_cache=True,
        cache_path=str(out / "cache.sqlite"),
    )
    started = time.perf_counter()
    store = evaluate(config, argv=["scale", "memory"], show_progress=False)
    wall = time.perf_counter() - started
    check_clean(store, n)
    print(
        json.dumps({**{f"generation_{k}": v for k, v in at_generation_end.items()}, "wall_s": round(wall, 3)})
    )


def measure_memory(n: int, base_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="evalkit-scale-mem-") as tmp:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--url", base_url, "--out", tmp]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "EVALKIT_CACHE_DIR": tmp}
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"memory run of {n} samples failed (exit {proc.returncode})")
        child = json.loads(output.strip().splitlines()[-1])
    return {
        "samples": n,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "generation_peak_rss_mib": round(child["generation_maxrss_kib"] / 1024, 1),
        "rss_at_generation_end_mib": round(child["generation_rss_kib"] / 1024, 1),
        "wall_s": child["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="endpoint seconds per request")
    parser.add_argument("--capacity", type=int, default=4, help="requests an endpoint serves at once")
    parser.add_argument("--requests", type=int, default=400, help="requests per throughput run")
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="memory run sizes")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument(
        "--only",
        choices=("throughput", "memory"),
        default=None,
        help="run one part; the other part's numbers are kept from the existing --json file",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.delay, args.capacity)
        return 0
    if args.memory_child is not None:
        memory_child(args.memory_child, args.url, args.out)
        return 0

    previous = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
    if args.only == "memory":
        if "throughput" not in previous:
            raise SystemExit(f"--only memory keeps the throughput part of {args.json}, which has none")
        kept = previous["throughput"]
        args.delay, args.capacity, throughput = kept["delay_s"], kept["capacity"], kept["runs"]
        args.requests = throughput[0].get("requests", args.requests)
    else:
        throughput = [measure_endpoints(k, args.delay, args.capacity, args.requests) for k in args.endpoints]
        base = throughput[0]["achieved_rps"] / throughput[0]["endpoints"]
        for row in throughput:
            row["speedup"] = round(row["achieved_rps"] / throughput[0]["achieved_rps"], 3)
            row["ratio_to_ideal"] = round(row["achieved_rps"] / (base * row["endpoints"]), 3)
            row["ratio_to_endpoint_capacity"] = round(row["achieved_rps"] / row["ideal_rps"], 3)

    if args.only == "throughput":
        if "memory" not in previous:
            raise SystemExit(f"--only throughput keeps the memory part of {args.json}, which has none")
        memory, ratios = previous["memory"]["runs"], previous["memory"]["ratio"]
        small, large = memory[0], memory[-1]
    else:
        from evalkit.testing.openai_server import start_subprocess

        server, url = start_subprocess(delay=0.0)
        try:
            memory = [measure_memory(n, url) for n in args.sizes]
        finally:
            stop([server])
        small, large = memory[0], memory[-1]
        ratios = {
            "peak_rss": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
            "generation_peak_rss": round(
                large["generation_peak_rss_mib"] / small["generation_peak_rss_mib"], 3
            ),
            "rss_at_generation_end": round(
                large["rss_at_generation_end_mib"] / small["rss_at_generation_end_mib"], 3
            ),
        }

    print(
        f"(a) throughput: {args.requests} requests, each endpoint {args.capacity} at once x {args.delay}s "
        f"(ideal {args.capacity / args.delay:.0f} req/s per endpoint)"
    )
    print(f"{'endpoints':>9} {'req/s':>8} {'ideal':>8} {'speedup':>8} {'ratio to ideal':>15}")
    for row in throughput:
        print(
            f"{row['endpoints']:>9} {row['achieved_rps']:>8.1f} {row['ideal_rps']:>8.1f} "
            f"{row['speedup']:>8.2f} {row['ratio_to_ideal']:>15.3f}"
        )
    print("(b) peak memory (RSS of a fresh process per size)")
    print(
        f"{'samples':>9} {'whole run MiB':>14} {'generation MiB':>15} {'held at its end':>16} {'wall s':>8}"
    )
    for row in memory:
        print(
            f"{row['samples']:>9} {row['peak_rss_mib']:>14.1f} {row['generation_peak_rss_mib']:>15.1f} "
            f"{row['rss_at_generation_end_mib']:>16.1f} {row['wall_s']:>8.2f}"
        )
    print(
        f"ratio {large['samples']}/{small['samples']}: whole run {ratios['peak_rss']:.3f}, "
        f"generation {ratios['generation_peak_rss']:.3f}, held at generation end "
        f"{ratios['rss_at_generation_end']:.3f}"
    )
    payload = {
        "throughput": {"delay_s": args.delay, "capacity": args.capacity, "runs": throughput},
        "memory": {"runs": memory, "ratio": ratios},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
