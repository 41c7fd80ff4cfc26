"""Deploy-path latency: every engine of ``lightnets.deploy`` against plain PyTorch, naive onnxruntime and the
compute bound, measured in one run.

For each model (batch 1, 224 px, fp32, ``--threads`` intra-op threads) it prints the median latency and
its spread (25th-75th percentile) per engine, the ratios against the eager model and against
``onnxruntime-naive``, and the bound ``2 x MACs / peak``, where ``peak`` is the fp32 matmul rate measured
in the same run (a 2048 x 2048 ``torch.mm`` with the same thread count, best of several calls, measured at
the start and the end; the higher one is used).  Then batch-32 throughput against eager.

Timing: engines take turns (a random order per round), each turn starts after a short pause (so thread
pools of the previous engine stop spinning) with two untimed calls, then ``--repeats`` timed calls; the
median is over all rounds.  On a shared machine run it when ``uptime`` shows a low load; the load average
is printed at the start and the end.

    python benchmarks/deploy_latency.py                       # the four models of the issue, ~10 min
    python benchmarks/deploy_latency.py --models shufflenet_v2_x1_0 --rounds 5 --batch32-rounds 1
    python benchmarks/deploy_latency.py --formats [--mode accuracy]   # on-device formats fp32 / int8 (deploy_formats.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

import lightnets
from lightnets import deploy
from lightnets.analysis import count_macs

MODELS = ("shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v1")
GOALS = {"vs_eager": 3.0, "vs_naive": 1.2, "vs_bound": 1.5, "batch32_vs_eager": 3.0}


@dataclass
class Timing:
    median_ms: float
    p25_ms: float
    p75_ms: float
    samples: int


@dataclass
class ModelResult:
    model: str
    macs: int
    bound_ms: float
    latency: dict[str, Timing] = field(default_factory=dict)  # batch 1
    batch32: dict[str, Timing] = field(default_factory=dict)  # per call of 32 images
    build_s: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    others_cpus: float = 0.0  # CPUs other processes kept busy during the batch-1 timing (0 = quiet machine)
    others_cpus_batch32: float = 0.0  # the same during the batch-32 timing


def measure_peak_gflops(threads: int, size: int = 2048, calls: int = 10) -> float:
    """Best fp32 matmul rate (GFLOP/s) of ``calls`` ``torch.mm`` calls at ``threads`` threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    with deploy.torch_threads(threads):
        for _ in range(3):
            torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(calls))
    return 2 * size**3 / best / 1e9


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have been busy, CPU seconds this process used); Linux only, else zeros."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return 0.0, 0.0
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_load(before: tuple[float, float], after: tuple[float, float], wall_s: float) -> float:
    """Average number of CPUs other processes kept busy between two ``cpu_seconds`` readings."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall_s if wall_s > 0 else 0.0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, repeats: int, pause_s: float = 0.02
) -> dict[str, Timing]:
    """Median and quartiles (ms) of each callable, engines taking turns in a random order per round."""
    samples: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            time.sleep(pause_s)
            for _ in range(2):
                calls[key]()
            samples[key] += [_timed(calls[key]) * 1e3 for _ in range(repeats)]
    return {
        k: Timing(float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75)), len(v))
        for k, v in samples.items()
    }


def run_model(
    name: str,
    engines: Sequence[str],
    threads: int,
    peak: float,
    rounds: int,
    repeats: int,
    batch32_rounds: int,
) -> ModelResult:
    model = lightnets.create_model(name).eval()
    macs = count_macs(model, 224)
    result = ModelResult(model=name, macs=macs, bound_ms=2 * macs / peak / 1e6)
    runners = {}
    for engine in engines:
        try:
            runner = deploy.make_runner(model, engine, input_shape=(1, 3, 224, 224), threads=threads)
        except (ImportError, RuntimeError, ValueError) as e:
            result.errors[engine] = f"{type(e).__name__}: {e}"
            continue
        runners[engine] = runner
        result.build_s[engine] = runner.build_seconds
    x1 = torch.randn(1, 3, 224, 224)
    before, start = cpu_seconds(), time.perf_counter()
    result.latency = time_interleaved({k: (lambda r=r: r(x1)) for k, r in runners.items()}, rounds, repeats)
    result.others_cpus = others_load(before, cpu_seconds(), time.perf_counter() - start)
    if batch32_rounds:
        x32 = torch.randn(32, 3, 224, 224)
        before, start = cpu_seconds(), time.perf_counter()
        result.batch32 = time_interleaved(
            {k: (lambda r=r: r(x32)) for k, r in runners.items()}, batch32_rounds, 2
        )
        result.others_cpus_batch32 = others_load(before, cpu_seconds(), time.perf_counter() - start)
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def best_engine(result: ModelResult, exclude: Sequence[str] = ("eager", "onnxruntime-naive")) -> str | None:
    candidates = {k: t.median_ms for k, t in result.latency.items() if k not in exclude}
    return min(candidates, key=candidates.get) if candidates else None


def latency_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | engine | median ms (batch 1) | p25-p75 ms | x eager | x onnxruntime-naive | / bound | build s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        eager = r.latency.get("eager")
        naive = r.latency.get("onnxruntime-naive")
        lines.append(
            f"| {r.model} | bound 2 x {r.macs / 1e6:.0f}M MACs / peak | {r.bound_ms:.2f} | | | | 1.00 | "
            f"(others' load: {r.others_cpus:.2f} CPUs) |"
        )
        for engine, t in sorted(r.latency.items(), key=lambda kv: kv[1].median_ms):
            lines.append(
                f"| {r.model} | {engine} | {t.median_ms:.2f} | {t.p25_ms:.2f}-{t.p75_ms:.2f} | "
                f"{_fmt(_ratio(eager.median_ms if eager else None, t.median_ms), '.2f', 'x')} | "
                f"{_fmt(_ratio(naive.median_ms if naive else None, t.median_ms), '.2f', 'x')} | "
                f"{t.median_ms / r.bound_ms:.2f} | {r.build_s.get(engine, 0):.1f} |"
            )
        for engine, error in r.errors.items():
            lines.append(f"| {r.model} | {engine} | unavailable: {error[:80]} | | | | | |")
    return "\n".join(lines)


def goals_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | best lightnets engine | ms | x eager (goal >= 3) | x ORT-naive (goal >= 1.2) | "
        "/ bound (goal <= 1.5) | batch 32: best x eager (goal >= 3) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        best = best_engine(r)
        if best is None:
            continue
        t = r.latency[best].median_ms
        vs_eager = _ratio(r.latency["eager"].median_ms, t) if "eager" in r.latency else None
        vs_naive = (
            _ratio(r.latency["onnxruntime-naive"].median_ms, t) if "onnxruntime-naive" in r.latency else None
        )
        vs_bound = t / r.bound_ms
        b32 = {k: v.median_ms for k, v in r.batch32.items() if k not in ("eager", "onnxruntime-naive")}
        b32_best = min(b32, key=b32.get) if b32 else None
        b32_ratio = (
            _ratio(r.batch32["eager"].median_ms, b32[b32_best]) if b32_best and "eager" in r.batch32 else None
        )

        def mark(value: float | None, ok: bool) -> str:
            return "-" if value is None else f"{value:.2f} {'met' if ok else 'NOT met'}"

        lines.append(
            f"| {r.model} | {best} | {t:.2f} | {mark(vs_eager, (vs_eager or 0) >= GOALS['vs_eager'])} | "
            f"{mark(vs_naive, (vs_naive or 0) >= GOALS['vs_naive'])} | {mark(vs_bound, vs_bound <= GOALS['vs_bound'])} | "
            f"{mark(b32_ratio, (b32_ratio or 0) >= GOALS['batch32_vs_eager'])}"
            f"{f' ({b32_best})' if b32_best else ''} |"
        )
    return "\n".join(lines)


def batch32_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | engine | ms per batch of 32 | p25-p75 | images/s | x eager |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.model} | (others' load: {r.others_cpus_batch32:.2f} CPUs) | | | | |")
        eager = r.batch32.get("eager")
        for engine, t in sorted(r.batch32.items(), key=lambda kv: kv[1].median_ms):
            lines.append(
                f"| {r.model} | {engine} | {t.median_ms:.1f} | {t.p25_ms:.1f}-{t.p75_ms:.1f} | {32e3 / t.median_ms:.0f} | "
                f"{_fmt(_ratio(eager.median_ms if eager else None, t.median_ms), '.2f', 'x')} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--formats" in argv[:1]:  # the on-device formats, fp32 and int8 (benchmarks/deploy_formats.py)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from deploy_formats import main as formats_main

        return formats_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--engines", nargs="+", default=list(deploy.ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="turns per engine at batch 1")
    parser.add_argument("--repeats", type=int, default=8, help="timed calls per turn at batch 1")
    parser.add_argument(
        "--batch32-rounds", type=int, default=3, help="turns per engine at batch 32 (0: skip)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    peak_start = measure_peak_gflops(args.threads)
    print(f"# deploy latency: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads; load average at start {load_start[0]:.2f}")  # fmt: skip
    print(f"fp32 matmul peak at start: {peak_start:.1f} GFLOP/s", flush=True)
    results = []
    for name in args.models:
        start = time.perf_counter()
        results.append(
            run_model(
                name, args.engines, args.threads, peak_start, args.rounds, args.repeats, args.batch32_rounds
            )
        )
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
    peak_end = measure_peak_gflops(args.threads)
    peak = max(peak_start, peak_end)
    for r in results:  # bound against the best peak seen in this run
        r.bound_ms = 2 * r.macs / peak / 1e6
    load_end = os.getloadavg()
    print(f"fp32 matmul peak at end: {peak_end:.1f} GFLOP/s; used: {peak:.1f} GFLOP/s")
    print(f"load average at end: {load_end[0]:.2f} (1 min), {load_end[1]:.2f} (5 min)\n")
    print("## Batch 1 latency\n")
    print(latency_table(results))
    if args.batch32_rounds:
        print("\n## Batch 32 throughput\n")
        print(batch32_table(results))
    print("\n## Goals\n")
    print(goals_table(results))
    if args.json:
        payload = {
            "peak_gflops": {"start": peak_start, "end": peak_end, "used": peak},
            "load_average": {"start": load_start, "end": load_end},
            "threads": args.threads,
            "torch": torch.__version__,
            "results": [asdict(r) for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
