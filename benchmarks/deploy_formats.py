"""On-device formats, fp32 and int8, against the plain fp32 onnxruntime export: latency, file size, accuracy.

Latency (``--mode latency``): for each model (batch 1, 224 px, ``--threads`` threads) every format lightnets
can run here (``lightnets.deploy.runtimes``: onnx, executorch, and tflite / openvino / ncnn when their modules and
packages are installed) is exported fp32 and int8 (int8 calibrated on ``--calib-images`` ants/bees photos
when the shared data is there, else on random inputs -- the work per image is the same), loaded in its own
runtime and timed with ``lightnets.deploy.bench.time_interleaved`` (all cases of a model take turns) against the
*plain* fp32 onnxruntime export built here: ``torch.onnx.export`` with a dynamic batch axis as it comes,
an ``InferenceSession`` with default options except the thread count.  Goals: the best int8 >= 2.0x faster
than that baseline, and each int8 file <= 30 % of the same format's fp32 file.

Accuracy (``--mode accuracy``): int8 top-1 agreement with fp32 for every format with the ImageNet ShuffleNetV2
1.0x weights on the ants/bees photos (``lightnets.deploy.export`` with the photos as ``calib``: calibration
and check images disjoint, the layer fallback on; goal >= 98 %), and for each ``--runs`` run directory
(Fashion-MNIST-trained runs) int8 accuracy on the run's test split against fp32 (goal: within 0.5 points).

    python benchmarks/deploy_latency.py --formats                 # latency table, the four models
    python benchmarks/deploy_latency.py --formats --mode accuracy --runs runs/fmnist-*
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lightnets
from lightnets.deploy import optimize
from lightnets.deploy.bench import TimedCall, time_interleaved
from lightnets.deploy.runtimes import MODULES, ExportRequest, get_format

MODELS = ("shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v1")
GOALS = {"int8_speedup": 2.0, "int8_size": 0.30, "agreement": 0.98, "fmnist_drop": 0.5}
DATA = Path(os.environ.get("LIGHTNETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
IMAGENET_WEIGHTS = DATA / "weights" / "shufflenet_v2_x1_0_from_onnx_int8.pth"


def available_formats() -> dict[str, Any]:
    """{name: Format or the one-line reason it cannot run here}."""
    out: dict[str, Any] = {}
    for name in MODULES:
        try:
            out[name] = get_format(name)
        except (ImportError, ValueError) as e:
            out[name] = str(e)
    return out


def plain_ort(model: torch.nn.Module, shape: tuple[int, ...], threads: int) -> tuple[Any, int]:
    """(runner, file bytes) of the plain fp32 export: default exporter settings, default session."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(*shape),), buf, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return (lambda x: session.run(None, {"input": x})[0]), len(buf.getvalue())


def calibration(n: int, size: int = 224) -> torch.Tensor:
    photos = DATA / "hymenoptera_data" / "train"
    if photos.is_dir():
        from lightnets.data.transforms import make_preprocessing
        from lightnets.deploy.images import load_images

        return load_images(photos, make_preprocessing("imagenet", size), calib_images=n, check_images=0)[0].images
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def latency_rows(name: str, formats: dict[str, Any], threads: int, calib: torch.Tensor, min_time_s: float,
                 rounds: int, tmp: Path) -> list[dict[str, Any]]:  # fmt: skip
    model = lightnets.create_model(name).eval()
    shape = (1, 3, 224, 224)
    deployed = optimize(model, channels_last=False)
    base, base_bytes = plain_ort(model, shape, threads)
    cases: list[tuple[dict[str, Any], Any]] = [({"format": "plain onnxruntime", "precision": "fp32",
                                                 "bytes": base_bytes}, base)]  # fmt: skip
    for fname, fmt in formats.items():
        if isinstance(fmt, str):
            cases.append(({"format": fname, "precision": "-", "error": fmt}, None))
            continue
        for quantize in (None, "int8") if fmt.supports_int8 else (None,):
            out = tmp / f"{name}.{quantize or 'fp32'}{fmt.suffix}"
            try:
                path = fmt.export(ExportRequest(deployed, torch.zeros(shape), out, {"arch": name}, quantize, calib))
                runner = fmt.load(path, threads)
                size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size
                                              if path.with_suffix(".bin").is_file() and path.suffix != ".bin" else 0)  # fmt: skip
                cases.append(({"format": fname, "precision": quantize or "fp32", "bytes": size}, runner))
            except Exception as e:  # a runtime that fails here is reported in the table, not fatal
                cases.append(({"format": fname, "precision": quantize or "fp32", "error": f"{type(e).__name__}: {e}"[:120]}, None))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    timed = [(info, r) for info, r in cases if r is not None]
    timings = time_interleaved([TimedCall(lambda r=r: r(x), threads) for _, r in timed], warmup=3,
                               min_time_s=min_time_s, repeats=20, rounds=rounds)  # fmt: skip
    for (info, _), t in zip(timed, timings, strict=True):
        info.update(median_ms=t.median_ms, q1_ms=t.q1_ms, q3_ms=t.q3_ms)
    fp32_bytes = {c["format"]: c["bytes"] for c, _ in cases if c.get("precision") == "fp32" and "bytes" in c}
    for info, _ in cases:
        info["model"] = name
        if "median_ms" in info:
            info["speedup"] = cases[0][0]["median_ms"] / info["median_ms"]
        if info.get("precision") == "int8" and info["format"] in fp32_bytes:
            info["size_vs_fp32"] = info["bytes"] / fp32_bytes[info["format"]]
    return [info for info, _ in cases]


def latency_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| model | format | precision | median ms (batch 1) | p25-p75 ms | x plain ORT fp32 | file MB | int8 / fp32 file |",
             "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['format']} | {r['precision']} | unavailable: {r['error'][:90]} | | | | |")
            continue
        size = f"{r['size_vs_fp32']:.0%}" if "size_vs_fp32" in r else ""
        lines.append(f"| {r['model']} | {r['format']} | {r['precision']} | {r['median_ms']:.2f} | "
                     f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f} | {r['speedup']:.2f}x | {r['bytes'] / 1e6:.2f} | {size} |")  # fmt: skip
    lines += ["", "| model | best int8 | x plain ORT (goal >= 2.0) | largest int8 / fp32 file (goal <= 30 %) |",
              "|---|---|---:|---:|"]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in rows):
        int8 = [r for r in rows if r["model"] == model and r.get("precision") == "int8" and "median_ms" in r]
        if not int8:
            continue
        best = max(int8, key=lambda r: r["speedup"])
        worst_size = max(r.get("size_vs_fp32", 0) for r in int8)
        lines.append(f"| {model} | {best['format']} | {best['speedup']:.2f}x "
                     f"{'met' if best['speedup'] >= GOALS['int8_speedup'] else 'NOT met'} | {worst_size:.0%} "
                     f"{'met' if worst_size <= GOALS['int8_size'] else 'NOT met'} |")  # fmt: skip
    return "\n".join(lines)


def accuracy_rows(formats: dict[str, Any], runs: Sequence[str], threads: int, tmp: Path) -> list[dict[str, Any]]:
    from lightnets import deploy

    rows: list[dict[str, Any]] = []
    for fname, fmt in formats.items():
        if isinstance(fmt, str) or not fmt.supports_int8:
            continue
        jobs = []
        if IMAGENET_WEIGHTS.is_file():
            jobs.append(("shufflenet_v2_x1_0 ImageNet, ants/bees", dict(source="shufflenet_v2_x1_0", weights=IMAGENET_WEIGHTS,
                                                                          calib=DATA / "hymenoptera_data")))  # fmt: skip
        jobs += [(f"run {run}", dict(source=run, split="test")) for run in runs]
        for label, kw in jobs:
            try:
                r = deploy.export(format=fname, quantize="int8", output=tmp / f"acc{len(rows)}{fmt.suffix}",
                                  threads=threads, latency_s=0, **kw)  # fmt: skip
                rows.append({"case": label, "format": fname, "agreement": r.agreement, "accuracy": r.accuracy,
                             "float_layers": r.float_layers, "within_budget": r.within_budget})  # fmt: skip
            except Exception as e:
                rows.append({"case": label, "format": fname, "error": f"{type(e).__name__}: {e}"[:160]})
    return rows


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| case | format | int8 agreement with fp32 | fp32 top-1 | int8 top-1 | drop (points) | layers kept float | goal |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['format']} | error: {r['error']} | | | | | |")
            continue
        a = r["accuracy"] or {}
        if a:
            goal = "met" if a["drop_points"] <= GOALS["fmnist_drop"] else "NOT met"
        else:
            goal = "met" if r["agreement"] >= GOALS["agreement"] else "NOT met"
        lines.append(f"| {r['case']} | {r['format']} | {r['agreement']:.1%} | {a.get('fp32', float('nan')):.2f} | "
                     f"{a.get('exported', float('nan')):.2f} | {a.get('drop_points', float('nan')):+.2f} | "
                     f"{len(r['float_layers'])} | {goal} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["latency", "accuracy"], default="latency")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--formats", nargs="+", default=list(MODULES), help="formats to include (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls per case")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", nargs="*", default=[], help="Fashion-MNIST run directories (accuracy mode)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    formats = {k: v for k, v in available_formats().items() if k in args.formats}
    with tempfile.TemporaryDirectory(prefix="lightnets-formats-") as tmp:
        if args.mode == "latency":
            calib = calibration(args.calib_images)
            rows = [r for name in args.models
                    for r in latency_rows(name, formats, args.threads, calib, args.min_time, args.rounds, Path(tmp))]  # fmt: skip
            print(f"# formats: torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads, load "
                  f"{os.getloadavg()[0]:.2f}\n\n{latency_table(rows)}")  # fmt: skip
        else:
            rows = accuracy_rows(formats, args.runs, args.threads, Path(tmp))
            print(accuracy_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
