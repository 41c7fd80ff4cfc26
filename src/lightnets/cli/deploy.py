"""``lightnets export``, ``convert`` and ``bench``: on-device files, weights from other ecosystems, timing."""

from __future__ import annotations

import argparse
import sys

from .common import command, input_size


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run directory, checkpoint file, or registered model name (with --weights)")
    p.add_argument("--format", choices=["onnx", "executorch", "tflite", "openvino", "ncnn", "safetensors"],
                   default="onnx")
    p.add_argument("--output", "-o", default=None, help="output file (default: SOURCE[.int8].SUFFIX)")
    p.add_argument("--weights", default=None, help="state_dict file in the model's layout (with a registered name)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="static int8, calibrated on real images")
    p.add_argument("--calib", default=None, metavar="DIR_OR_DATASET",
                   help="images for calibration and checks: a folder of images or a dataset source "
                   "(default for a run: its training split)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="int8 budget in top-1 points (beyond it the most sensitive layers stay float)")
    p.add_argument("--split", choices=["val", "test"], default="val", help="the run's labelled split to measure on")
    p.add_argument("--threads", type=int, default=None, help="runtime threads for the check and the latency")
    p.add_argument("--latency-time", type=float, default=1.0, help="seconds of batch-1 timing (0: skip)")
    p.add_argument("--input-size", type=input_size, default=None,
                   help="N or HxW (default: the checkpoint's preprocessing / the model's own size)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of the plain fp32 export (14-20)")
    p.add_argument("--no-check", action="store_true", help="plain fp32 ONNX without the checks")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")


def _print_onnx_report(report, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    print(f"wrote {report.path} ({report.format}, {report.num_bytes / 1e6:.1f} MB, {report.seconds:.1f} s)")
    if report.max_abs_diff is not None:
        print(f"checked: onnx.checker ok; onnxruntime vs eager max abs diff {report.max_abs_diff:.2e} "
              f"(max |logit| {report.logit_scale:.2e}) at batch sizes {list(report.checked_batch_sizes)}")  # fmt: skip
    if report.sidecar:
        print(f"metadata: {report.sidecar}")


@command("export", "export to an on-device format (onnx, executorch, tflite, openvino, ncnn), fp32 or int8, "
         "checked in its own runtime; or safetensors weights", _export_arguments)  # fmt: skip
def cmd_export(args: argparse.Namespace) -> int:
    import json

    if args.format == "safetensors" or (args.format == "onnx" and not args.quantize and (args.opset or args.no_check)):
        from ..deploy.onnx_export import export

        report = export(args.source, args.output, format=args.format, input_size=args.input_size, opset=args.opset,
                        check=not args.no_check)  # fmt: skip
        _print_onnx_report(report, args.json)
        return 0
    from ..deploy.report import format_report
    from ..deploy.to_device import export as deploy_export

    report = deploy_export(
        args.source, args.format, quantize=args.quantize, calib=args.calib, max_drop=args.max_drop,
        output=args.output, weights=args.weights, input_size=args.input_size, threads=args.threads,
        split=args.split, latency_s=args.latency_time,
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.within_budget is not False else 1


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="keras.applications MobileNet / V2 / V3 file, or a MobileNet .tflite file")
    p.add_argument("--model", required=True, choices=["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                   "mobilenet_v3_small"], help="the family; width, resolution and classes come from the file")
    p.add_argument("--output", "-o", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--classes", default=None, help="class names: a text file (one a line) or a comma list")


@command("convert", "TF / Keras weights (.keras, .weights.h5, .h5, .tflite) to a lightnets checkpoint",
         _convert_arguments)  # fmt: skip
def cmd_convert(args: argparse.Namespace) -> int:
    from ..convert import convert_file

    classes = None
    if args.classes:
        from pathlib import Path

        text = Path(args.classes).read_text(encoding="utf-8") if Path(args.classes).is_file() else args.classes
        classes = [c.strip() for c in text.replace(",", "\n").splitlines() if c.strip()]
    fields = convert_file(args.source, args.model, args.output, classes=classes)
    kw = fields["kwargs"]
    print(f"wrote {args.output}: {fields['arch']} {kw} ({kw['num_classes']} classes) from "
          f"{fields['converted_from']['format']}")  # fmt: skip
    return 0


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered model names or globs, e.g. 'mobilenet_v3_*'")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1])
    p.add_argument("--input-size", type=input_size, nargs="+", default=None,
                   help="N or HxW, several allowed (default: each model's own)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="intra-op thread counts (default: torch)")
    p.add_argument("--engine", nargs="+", default=["eager"],
                   help="eager, or the engines of lightnets.deploy (optimized, onnxruntime, ...)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per case first")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per case (at least)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per case (at least)")
    p.add_argument("--rounds", type=int, default=3, help="cases take turns this many times (interleaving)")
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    p.add_argument("--plot", metavar="FILE.png", help="latency against MACs and memory access cost")


def _model_names(patterns: list[str]) -> list[str]:
    """Registered names from names and globs, in the order given, each once.  (Belongs in deploy.bench as
    ``benchmark(patterns)``; kept here until that module takes patterns.)"""
    from ..registry import list_models

    names: list[str] = []
    for pattern in patterns:
        matched = list_models(pattern) if any(ch in pattern for ch in "*?[") else [pattern]
        if not matched:
            raise ValueError(f"no registered model matches {pattern!r}")
        names += [n for n in matched if n not in names]
    return names


@command("bench", "measured latency / throughput of models beside MACs and memory access cost", _bench_arguments)
def cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy.bench import benchmark, environment, format_rows, plot_rows

    rows = benchmark(
        _model_names(args.models), batch_sizes=args.batch_size, input_sizes=args.input_size or [None],
        threads=args.threads or [None], engines=args.engine, device=args.device, warmup=args.warmup,
        min_time_s=args.min_time, repeats=args.repeats, rounds=args.rounds,
    )  # fmt: skip
    print(format_rows(rows, args.format, env=environment(args.device)))
    if args.plot:
        print(f"wrote {plot_rows(rows, args.plot)}", file=sys.stderr)
    return 0
