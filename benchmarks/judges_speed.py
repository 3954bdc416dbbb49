"""How fast are the speech judges on one CPU core?

The speech judges (prosody, emotion, voice, naturalness; and ASR consistency, which is reported
apart because it runs a recogniser) score every spoken reply of a run, so their speed bounds how
much model audio a machine can judge. Target: the CPU judges together at 20x real time or better
on one core, so judging never dominates a run.

The benchmark renders about ``--minutes`` of espeak-ng speech once (cached under
``<cache>/benchmarks/judges_speed/``), groups it into 4-turn conversations of model replies, and
runs each judge, looked up by name in the registry, over all of it in this process with one thread
(``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` are set before numpy/torch load, and
``torch.set_num_threads(1)``). Each judge first scores one conversation untimed so model loading
is not counted (its load time is printed apart). It prints, per judge: seconds, real-time factor
(audio seconds / processing seconds), errors; then the combined factor of the CPU judges without
ASR (audio / the sum of their seconds: they all run on every reply) against the target. A judge
that is not registered is printed as missing, and the combined factor is then marked incomplete.

Then, for the batchable model judges (``asr``, ``naturalness``), per-item vs batched throughput
in the same run: the same conversations scored with ``score`` one at a time, then with
``score_batch`` in batches of ``--batch`` conversations (what the runner's micro-batcher does),
with the ratio. On this CPU tier (one thread) batching mostly saves per-call overhead; the GPU
numbers, where batching is meant to pay, need a GPU machine (judges pick cuda by themselves):

    python benchmarks/judges_speed.py --minutes 10 --threads 8 --json benchmarks/results/judges_gpu.json

    python benchmarks/judges_speed.py [--minutes 10] [--batch 8] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch / onnxruntime are imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

CPU_JUDGES = ("prosody", "emotion", "voice", "naturalness")
#: the judges that share one acoustic analysis per clip (``speech_features.analyse``): the 20x target
SHARED_JUDGES = ("prosody", "emotion", "voice")
ASR_JUDGE = "asr"
BATCHED_JUDGES = ("asr", "naturalness")
TARGET_RTF = 20.0
VERSION = "v1"
TURNS_PER_CONVERSATION = 4
#: (voice, words per minute): varied so the clips are not one repeated sound
VOICES = [("en-us", 150), ("en-us", 170), ("en-gb", 160), ("en-us+f3", 150)]


def sentences() -> list[str]:
    """Every reply and question of the demo-speech conversations: natural assistant sentences."""
    from evalkit.tasks.demo_speech import CONVERSATIONS

    return [text for _, turns in CONVERSATIONS for pair in turns for text in pair]


def build_corpus(minutes: float) -> tuple[list[Path], float]:
    """Render (once) clips until their total reaches ``minutes``; returns the clip files and seconds."""
    import soundfile as sf

    from evalkit.audio import wav_bytes
    from evalkit.paths import cache_dir
    from evalkit.tasks.demo_speech import RATE_HZ, speak

    folder = cache_dir() / "benchmarks" / "judges_speed" / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    texts = sentences()
    clips: list[Path] = []
    total = 0.0
    i = 0
    while total < minutes * 60:
        path = folder / f"clip{i:04d}.wav"
        if not path.exists():
            voice, wpm = VOICES[(i // TURNS_PER_CONVERSATION) % len(VOICES)]
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(wav_bytes(speak(texts[i % len(texts)], voice, wpm), RATE_HZ))
            tmp.replace(path)
        clips.append(path)
        total += sf.info(str(path)).duration
        i += 1
    while len(clips) % TURNS_PER_CONVERSATION:  # whole conversations only
        clips.pop()
    return clips, sum(sf.info(str(p)).duration for p in clips)


def conversations(clips: list[Path]) -> list[tuple]:
    """(sample, outputs) pairs: each a 4-turn conversation whose model replies are the clips."""
    from evalkit.records import AudioRef, ModelOutput, Sample, Turn

    texts = sentences()
    pairs = []
    for start in range(0, len(clips), TURNS_PER_CONVERSATION):
        group = clips[start : start + TURNS_PER_CONVERSATION]
        sample = Sample(
            id=f"conv{start // TURNS_PER_CONVERSATION:03d}",
            task="judges-speed",
            conversation=[Turn(role="user", text="Tell me more.", transcript="Tell me more.") for _ in group],
        )
        outputs = [
            ModelOutput(text=texts[(start + k) % len(texts)], audio=AudioRef(path=str(p), sample_rate=16000))
            for k, p in enumerate(group)
        ]
        pairs.append((sample, outputs))
    return pairs


def measure(name: str, work: list[tuple], audio_s: float) -> dict:
    """One judge over every conversation; a judge error is counted, never hidden."""
    from evalkit.errors import UnknownNameError
    from evalkit.judges.base import load_judge

    try:
        judge = load_judge(name)
    except UnknownNameError:
        return {"judge": name, "status": "missing"}
    started = time.perf_counter()
    warm = judge.score(*work[0])  # loads the models; not timed with the rest
    load_s = time.perf_counter() - started
    errors = [warm.error.message] if warm.error else []
    started = time.perf_counter()
    for sample, outputs in work:
        score = judge.score(sample, outputs)
        if score.error is not None:
            errors.append(score.error.message)
    seconds = time.perf_counter() - started
    return {
        "judge": name,
        "status": "ok" if not errors else "errors",
        "seconds": round(seconds, 2),
        "load_s": round(load_s, 2),
        "rtf": round(audio_s / seconds, 2),
        "n_errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def measure_shared(work: list[tuple], audio_s: float) -> dict:
    """prosody + emotion + voice two ways over the same conversations: "separate", each judge
    starting from an empty analysis cache (what it cost before the shared analysis: every judge
    analysed every clip again), and "shared", the three in sequence on one cache (each clip is
    analysed once, by the first judge that meets it)."""
    from evalkit.judges import speech_features

    separate = {}
    for name in SHARED_JUDGES:
        speech_features.clear_analysis_cache()
        separate[name] = measure(name, work, audio_s)
    speech_features.clear_analysis_cache()
    shared = {name: measure(name, work, audio_s) for name in SHARED_JUDGES}

    def combined(rows: dict) -> float | None:
        if any(r["status"] == "missing" for r in rows.values()):
            return None
        return round(audio_s / sum(r["seconds"] for r in rows.values()), 2)

    return {
        "separate": separate,
        "shared": shared,
        "separate_rtf": combined(separate),
        "shared_rtf": combined(shared),
    }


def print_shared(result: dict) -> None:
    """The side-by-side table of ``measure_shared`` and the verdict against the target."""
    print(f"\n{'judge':<12} {'separate s':>11} {'x rt':>7} {'shared s':>9} {'x rt':>7}   (one core)")
    for name in SHARED_JUDGES:
        old, new = result["separate"][name], result["shared"][name]
        if "missing" in (old["status"], new["status"]):
            print(f"{name:<12} {'missing (not registered)':>38}")
            continue
        print(
            f"{name:<12} {old['seconds']:>11.2f} {old['rtf']:>7.1f} {new['seconds']:>9.2f} {new['rtf']:>7.1f}"
        )
        for row in (old, new):
            if row["first_error"]:
                print(f"{'':<12} first error: {row['first_error'][:200]}")
    if result["shared_rtf"] is None:
        print("prosody+emotion+voice: incomplete (a judge is missing)")
        return
    verdict = "meets" if result["shared_rtf"] >= TARGET_RTF else "misses"
    print(
        f"prosody+emotion+voice: {result['separate_rtf']:.1f}x real time separate, "
        f"{result['shared_rtf']:.1f}x shared; shared {verdict} the {TARGET_RTF:.0f}x target"
    )


def measure_batching(name: str, work: list[tuple], audio_s: float, batch: int) -> dict:
    """Per-item ``score`` vs ``score_batch`` over the same conversations, after a warm-up of each;
    also checks that the two give the same metrics (exact for ASR; 1e-4 for MOS)."""
    from evalkit.judges.base import load_judge

    judge = load_judge(name)
    judge.score(*work[0])
    judge.score_batch(work[:batch])  # warm both paths (model load, allocator)
    started = time.perf_counter()
    single = [judge.score(*item) for item in work]
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = [s for i in range(0, len(work), batch) for s in judge.score_batch(work[i : i + batch])]
    batch_s = time.perf_counter() - started
    tolerance = 0.0 if name == ASR_JUDGE else 1e-4
    worst = max(
        (
            abs(a - b)
            for one, many in zip(single, batched, strict=True)
            for key, a in one.metrics.items()
            if (b := many.metrics.get(key)) is not None and a is not None and not math.isnan(a)
        ),
        default=0.0,
    )
    return {
        "judge": name,
        "device": judge.describe().get("device", judge.describe().get("distillmos_device")),
        "batch": batch,
        "per_item_s": round(single_s, 2),
        "batched_s": round(batch_s, 2),
        "per_item_rtf": round(audio_s / single_s, 2),
        "batched_rtf": round(audio_s / batch_s, 2),
        "speedup": round(single_s / batch_s, 3),
        "max_metric_diff": worst,
        "equal_within_tolerance": worst <= tolerance,
        "errors": sum(s.error is not None for s in single) + sum(s.error is not None for s in batched),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of speech to judge")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--batch", type=int, default=8, help="conversations per batched call")
    parser.add_argument("--threads", type=int, default=1, help="torch / CTranslate2 / ONNX threads")
    parser.add_argument("--skip-per-judge", action="store_true", help="only the batching comparison")
    parser.add_argument(
        "--shared-only", action="store_true", help="only prosody+emotion+voice, separate vs shared analysis"
    )
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    clips, audio_s = build_corpus(args.minutes)
    work = conversations(clips)
    print(
        f"{len(clips)} clips, {audio_s / 60:.1f} min of speech, {len(work)} conversations, "
        f"{args.threads} thread(s)"
    )

    shared = measure_shared(work, audio_s)
    print_shared(shared)
    if args.shared_only:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            result = {"audio_s": round(audio_s, 1), "shared_analysis": shared}
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    rows = [] if args.skip_per_judge else [measure(name, work, audio_s) for name in (*CPU_JUDGES, ASR_JUDGE)]
    if rows:
        print(f"\n{'judge':<12} {'seconds':>9} {'x real time':>12} {'load s':>8} {'errors':>7}")
    for row in rows:
        if row["status"] == "missing":
            print(f"{row['judge']:<12} {'missing (not registered)':>38}")
            continue
        print(
            f"{row['judge']:<12} {row['seconds']:>9.1f} {row['rtf']:>12.1f} "
            f"{row['load_s']:>8.1f} {row['n_errors']:>7}"
        )
        if row["first_error"]:
            print(f"{'':<12} first error: {row['first_error'][:200]}")
    timed = [r for r in rows if r["judge"] in CPU_JUDGES and r["status"] != "missing"]
    missing = [r["judge"] for r in rows if r["judge"] in CPU_JUDGES and r["status"] == "missing"]
    combined = audio_s / sum(r["seconds"] for r in timed) if timed else None
    if combined is not None:
        verdict = "meets" if combined >= TARGET_RTF else "misses"
        note = f" (incomplete: {', '.join(missing)} missing)" if missing else ""
        print(
            f"\ncombined CPU judges without ASR: {combined:.1f}x real time, {verdict} the "
            f"{TARGET_RTF:.0f}x target{note}"
        )
    batching = [measure_batching(name, work, audio_s, args.batch) for name in BATCHED_JUDGES]
    print(f"\n{'judge':<12} {'device':>6} {'per-item s':>11} {'batched s':>10} {'ratio':>7} {'max diff':>9}")
    for row in batching:
        print(
            f"{row['judge']:<12} {row['device']:>6} {row['per_item_s']:>11.1f} {row['batched_s']:>10.1f} "
            f"{row['speedup']:>6.2f}x {row['max_metric_diff']:>9.2g}"
            + ("" if row["equal_within_tolerance"] else "  NOT EQUAL")
        )
    if all(row["device"] == "cpu" for row in batching):
        print("(cpu only: the GPU side-by-side needs a GPU machine; see the module docstring)")
    result = {
        "audio_s": round(audio_s, 1),
        "threads": args.threads,
        "batching": batching,
        "rows": rows,
        "shared_analysis": shared,
        "combined_rtf_without_asr": round(combined, 2) if combined is not None else None,
        "missing": missing,
        "target_rtf": TARGET_RTF,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
