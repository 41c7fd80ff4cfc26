"""``lightnets`` command line: a thin shell over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.  Errors the user
can fix (unknown model, bad value, missing file) are printed as one line on stderr with exit status 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..util.atomic import display_name

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return wrap


def _input_size(text: str) -> tuple[int, int]:
    """'224' or '224x160' (height x width)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"input size must be N or HxW with positive sides, got {text!r}")
    return parts[0], parts[1]


def _model_kwargs(items: Sequence[str] | None) -> dict:
    """--model-arg key=value pairs; values parsed as int, float, bool or left as strings."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model-arg expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


@_command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from ..analysis.zoo import format_table, model_table

    rows = model_table(args.pattern)
    if not rows:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    print(format_table(rows, args.format))
    return 0


@_command("profile")
def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.profile import _in_chans, profile
    from ..registry import create_model, get_card
    from ..util.limits import check_fits

    card = get_card(args.model)
    model = create_model(args.model, **_model_kwargs(args.model_arg))
    size = args.input_size or (card.input_size, card.input_size)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {args.batch_size}")
    check_fits(model, size, args.batch_size, in_chans=_in_chans(model), training=False)
    prof = profile(model, input_size=size, batch_size=args.batch_size, dtype=dtype)
    if args.format == "json":
        print(prof.to_json(per_layer=args.per_layer))
    elif args.format == "csv":
        print(prof.to_csv(per_layer=args.per_layer), end="")
    else:
        print(f"{args.model}  input {size[0]}x{size[1]}  batch {args.batch_size}  {args.dtype}")
        print(prof.to_table(per_layer=args.per_layer))
    return 0


def _print_eval(result, top: int = 10) -> None:
    from ..data.wordnet import readable_result

    result = readable_result(result)
    s = result.summary()
    print(f"samples {s['num_samples']}  top-1 {s['top1']:.4f}  top-5 {s['top5']:.4f}  loss {s['loss']:.4f}  "
          f"macro F1 {s['macro_f1']:.4f}")
    print(f"{'class':<24} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}")
    for row in result.per_class:
        label = display_name(str(row["class"])) if row["kind"] == "class" else f"({row['kind']} avg)"
        print(f"{str(label)[:24]:<24} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} "
              f"{row['support']:>8}")
    if result.worst:
        print(f"worst {min(top, len(result.worst))} misclassified:")
        for item in result.worst[:top]:
            where = item.path or f"#{item.index}"
            print(display_name(f"  {where}: {item.describe(result.class_names)}  loss {item.loss:.3f}"))


# train options whose config field is named differently (or whose value is transformed)
_TRAIN_FIELDS = {"ema": "ema_decay", "allow_unverified_weights": "allow_unverified", "model_arg": "model_args",
                 "no_progress": "progress"}  # fmt: skip


def _resume_overrides(args: argparse.Namespace) -> dict:
    """The training settings typed beside --resume, by config field (the run's own values fill in the rest)."""
    out = {}
    for dest in sorted(getattr(args, "given", set()) - {"resume"}):
        value = getattr(args, dest)
        if dest == "model_arg":
            value = _model_kwargs(value)
        elif dest == "no_progress":
            value = not value
        out[_TRAIN_FIELDS.get(dest, dest)] = value
    return out


@_command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    if args.resume:
        result = train(resume=args.resume, overrides=_resume_overrides(args), log_fn=print)
    else:
        if not args.model or not args.data:
            raise ValueError("train needs --model and --data (or --resume RUN_DIR)")
        cfg = TrainConfig(
            model=args.model, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
            label_smoothing=args.label_smoothing, dropout=args.dropout, ema_decay=args.ema, amp=args.amp,
            channels_last=args.channels_last, seed=args.seed, weights=args.weights, freeze=args.freeze,
            lp_ft=args.lp_ft,
            weights_sha256=args.weights_sha256, allow_unverified=args.allow_unverified_weights,
            head_lr_mult=args.head_lr_mult, bn_eval=args.bn_eval, input_size=args.input_size,
            small_input=args.small_input,
            in_chans=args.in_chans, model_args=_model_kwargs(args.model_arg), val_fraction=args.val_fraction,
            workers=args.workers, device=args.device, progress=not args.no_progress,
            max_train_samples=args.max_train_samples, cache_dir=args.cache_dir, no_cache=args.no_cache,
        )  # fmt: skip
        result = train(cfg, log_fn=print)
    if result.final is not None:
        print(f"best epoch {result.best_epoch}; evaluated best.pt on {result.final_split}:")
        _print_eval(result.final, top=5)
    print(f"run directory: {result.run_dir}" + (f"  report: {result.report}" if result.report else ""))
    return 0


def _checkpoint_file(path: str) -> str:
    """The checkpoint a path names; says on stderr when a run directory's last.pt stands in for its best.pt."""
    from ..train.checkpoint import resolve_checkpoint

    resolved, note = resolve_checkpoint(path)
    if note:
        print(f"lightnets: note: {display_name(note)}", file=sys.stderr)
    return str(resolved)


@_command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.deployed import is_exported_file

    if args.compare:
        return _eval_compare(args)
    if is_exported_file(args.checkpoint):  # an exported file: its own runtime, its recorded preprocessing
        from ..evaluation.deployed import evaluate_deployed

        form = evaluate_deployed(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size,
                                 workers=args.workers, worst_n=args.worst, threads=args.threads)  # fmt: skip
        result, what = form.result, f"{form.name} ({form.format}, {form.quantize or 'fp32'}) in its runtime"
    else:
        from ..evaluation.deployed import checkpoint_form

        form = checkpoint_form(_checkpoint_file(args.checkpoint), args.data, split=args.split,
                               batch_size=args.batch_size, workers=args.workers, worst_n=args.worst,
                               cache=not args.no_cache, cache_dir=args.cache_dir)  # fmt: skip
        result, what = form.result, f"{form.metadata['arch']} from {form.path}"
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{what} on {args.data} ({form.split})")
        _print_eval(result, top=args.worst)
    if args.out:
        from ..evaluation.deployed_report import write_eval_dir

        files = write_eval_dir(args.out, form)
        if args.format != "json":
            print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0


def _eval_compare(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.deployed import compare_deployed, is_exported_file
    from ..evaluation.deployed_report import summary_lines, write_comparison

    if is_exported_file(args.checkpoint):
        raise ValueError(f"--compare needs the run directory or checkpoint first, got the file {args.checkpoint}")
    cmp = compare_deployed(args.checkpoint, args.data, args.compare, split=args.split, batch_size=args.batch_size,
                           workers=args.workers, worst_n=args.worst, threads=args.threads,
                           latency_s=args.latency_time)  # fmt: skip
    if args.format == "json":
        print(json.dumps(cmp.to_dict(), indent=2))
    else:
        print(f"{cmp.forms[0].metadata['arch']} on {args.data} ({cmp.forms[0].split}, "
              f"{cmp.forms[0].result.num_samples} images)")  # fmt: skip
        print("\n".join(summary_lines(cmp)))
    if args.out:
        files = write_comparison(args.out, cmp)
        if args.format != "json":
            print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0


@_command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..evaluation.predict import annotate_predictions, predict

    source, runner = args.checkpoint, None
    from ..deploy.runtimes import format_for_path

    if format_for_path(args.checkpoint) and Path(args.checkpoint).is_file():  # an exported file: its own runtime
        from ..deploy.to_device import load_exported

        runner, meta = load_exported(args.checkpoint)
        source = (None, meta)
    elif args.engine != "eager":
        from ..deploy import load_runner

        runner, model, ckpt = load_runner(_checkpoint_file(args.checkpoint), args.engine)
        source = (model, ckpt)
    else:
        source = _checkpoint_file(args.checkpoint)
    result = predict(source, args.images, topk=args.topk, batch_size=args.batch_size, runner=runner)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for pred in result.predictions:
            tops = ", ".join(f"{c} {p:.1%}" for c, p in pred.named_top())
            print(f"{pred.path}\t{tops}")
    for path, reason in result.errors:
        print(f"lightnets predict: cannot read {path}: {reason}", file=sys.stderr)
    if args.annotate:
        written = annotate_predictions(result, args.annotate)
        print(f"wrote {len(written)} annotated image(s) to {args.annotate}", file=sys.stderr)
    return 1 if result.errors else 0


@_command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from ..train.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, model=args.model, log_fn=print)
    return 0


# --- commands added by other modules' owners go below this line (one block per command) ---


@_command("convert")
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


@_command("export")
def cmd_export(args: argparse.Namespace) -> int:
    import json

    if args.format == "safetensors" or (args.format == "onnx" and not args.quantize and (args.opset or args.no_check)):
        from ..deploy.onnx_export import export

        report = export(args.source, args.output, format=args.format, input_size=args.input_size, opset=args.opset,
                        check=not args.no_check)  # fmt: skip
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(f"wrote {report.path} ({report.format}, {report.num_bytes / 1e6:.1f} MB, {report.seconds:.1f} s)")
            if report.max_abs_diff is not None:
                print(f"checked: onnx.checker ok; onnxruntime vs eager max abs diff {report.max_abs_diff:.2e} "
                      f"(max |logit| {report.logit_scale:.2e}) at batch sizes {list(report.checked_batch_sizes)}")  # fmt: skip
            if report.sidecar:
                print(f"metadata: {report.sidecar}")
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


@_command("check-data")
def cmd_check_data(args: argparse.Namespace) -> int:
    import json

    from ..data.checks import check_data

    report = check_data(args.folder, full_decode=not args.quick, in_chans=args.in_chans, workers=args.workers)
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else report.to_table())
    return 0 if report.ok else 1


@_command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy.bench import benchmark, environment, format_rows, plot_rows
    from ..registry import list_models

    names: list[str] = []
    for pattern in args.models:
        matched = list_models(pattern) if any(ch in pattern for ch in "*?[") else [pattern]
        if not matched:
            raise ValueError(f"no registered model matches {pattern!r}")
        names += [n for n in matched if n not in names]
    rows = benchmark(
        names, batch_sizes=args.batch_size, input_sizes=args.input_size or [None],
        threads=args.threads or [None], engines=args.engine, device=args.device, warmup=args.warmup,
        min_time_s=args.min_time, repeats=args.repeats, rounds=args.rounds,
    )  # fmt: skip
    print(format_rows(rows, args.format, env=environment(args.device)))
    if args.plot:
        print(f"wrote {plot_rows(rows, args.plot)}", file=sys.stderr)
    return 0


@_command("guidelines")
def cmd_guidelines(args: argparse.Namespace) -> int:
    import json

    from ..analysis.lab import format_lab, run_guidelines

    overrides = {"min_time_s": args.min_time, "repeats": args.repeats, "input_size": args.input_size}
    lab = run_guidelines(
        args.experiments, setting=args.setting, device=args.device, threads=args.threads,
        batch_size=args.batch_size, quick=args.quick, out=args.out,
        **{k: v for k, v in overrides.items() if v is not None},
    )  # fmt: skip
    print(json.dumps(lab.to_dict(), indent=2) if args.format == "json" else format_lab(lab))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightnets",
        description="Lightweight CNNs (MobileNetV1-V3, ShuffleNetV1-V2): build, measure, train, evaluate, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="every registered model with params and MACs beside the paper's numbers")
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")

    p = sub.add_parser("profile", help="params, MACs / FLOPs, activation memory and memory access cost of a model")
    p.add_argument("model", help="registered model name (see `lightnets models`)")
    p.add_argument("--input-size", type=_input_size, default=None, help="N or HxW (default: the model's)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="element type for the byte counts")
    p.add_argument("--per-layer", action="store_true", help="one row per layer as well as the totals")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="extra model keyword, e.g. width_mult=0.5 (repeatable)")
    p = sub.add_parser("train", help="train or fine-tune a model on a dataset; writes a run directory")
    p.add_argument("--model", help="registered model name")
    p.add_argument("--data", help="dataset: digits, fashion-mnist:PATH, cifar10:PATH, an image folder, ...")
    p.add_argument("--out", help="run directory (default runs/MODEL-TIME); never overwritten")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 128, smaller for small training sets (about 16 steps per epoch)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default scales with batch size)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="EMA of weights, e.g. 0.999 (0: off)")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", help="pretrained state_dict to start from (head replaced if classes differ)")
    p.add_argument("--weights-sha256", default=None, help="expected sha256 (or prefix) of --weights")
    p.add_argument("--allow-unverified-weights", action="store_true",
                   help="accept a --weights URL that has no sha256 to check (you trust the source)")
    p.add_argument("--freeze", action="store_true",
                   help="fit only the classifier, on features computed once (a linear probe to convergence; "
                   "needs --weights; --epochs unused)")
    p.add_argument("--lp-ft", action=argparse.BooleanOptionalAction, default=None,
                   help="fit the head by linear probe first, then fine-tune every layer (default: on with --weights)")
    p.add_argument("--head-lr-mult", type=float, default=None)
    p.add_argument("--bn-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="keep BatchNorm on its pretrained statistics (default: on when --weights is given)")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--small-input", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--in-chans", type=int, default=None)
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cache-dir", default=None, help="where image folders are decoded once (default: user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="decode image files every epoch (no decode cache)")

    p = sub.add_parser("eval", help="evaluate a checkpoint or an exported file: top-1/5, confusion matrix, "
                       "per-class metrics; --compare: the checkpoint beside its exported files")
    p.add_argument("checkpoint", help="run directory (uses best.pt), checkpoint file, or an exported file (.onnx, "
                   ".pte, .tflite, .xml, .param: run in its own runtime with its recorded preprocessing)")
    p.add_argument("data", help="dataset source (same forms as train --data)")
    p.add_argument("--split", default="auto", choices=["auto", "test", "val", "train", "all"])
    p.add_argument("--out", help="directory for eval.json, confusion_matrix.csv/.png, per_class.csv, report.html "
                   "(with --compare: compare.json, compare.html)")
    p.add_argument("--compare", nargs="+", metavar="FILE", help="exported files of this run: evaluate each in its "
                   "runtime beside the checkpoint (changed predictions, per-class F1, size, batch-1 latency)")
    p.add_argument("--threads", type=int, default=None, help="threads of the runtimes (default: their own choice)")
    p.add_argument("--latency-time", type=float, default=1.0, help="seconds of batch-1 timing per form with "
                   "--compare (0: no timing)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--worst", type=int, default=10, help="how many worst misclassified images to list")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--cache-dir", default=None, help="where image folders are decoded once (default: user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="decode image files without the decode cache")

    p = sub.add_parser("predict", help="top-k classes for image files or directories")
    p.add_argument("checkpoint", help="run directory (uses best.pt), checkpoint file, or an exported file "
                   "(.onnx, .pte, .tflite, .xml, .param: run in its own runtime with its recorded preprocessing)")
    p.add_argument("images", nargs="+", help="image files or directories")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--annotate", metavar="DIR", help="write copies with the predicted label drawn on")
    p.add_argument("--engine", choices=["eager", "optimized", "onnxruntime", "openvino", "executorch", "tflite",
                   "ncnn"], default="eager",
                   help="inference engine (lightnets.deploy) for a checkpoint; all but eager/optimized need packages")

    p = sub.add_parser("demo", help="the main job: train on scikit-learn's digits, evaluate, predict, report")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-TIME)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--model", default=None)

    # --- parsers of commands added by other modules' owners go below this line (one block per command) ---
    p = sub.add_parser("export", help="export to an on-device format (onnx, executorch, tflite, openvino, ncnn), "
                       "fp32 or int8, checked in its own runtime; or safetensors weights")
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
    p.add_argument("--input-size", type=_input_size, default=None,
                   help="N or HxW (default: the checkpoint's preprocessing / the model's own size)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of the plain fp32 export (14-20)")
    p.add_argument("--no-check", action="store_true", help="plain fp32 ONNX without the checks")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p = sub.add_parser("convert", help="TF / Keras weights (.keras, .weights.h5, .h5, .tflite) to a lightnets checkpoint")
    p.add_argument("source", help="keras.applications MobileNet / V2 / V3 file, or a MobileNet .tflite file")
    p.add_argument("--model", required=True, choices=["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                   "mobilenet_v3_small"], help="the family; width, resolution and classes come from the file")
    p.add_argument("--output", "-o", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--classes", default=None, help="class names: a text file (one a line) or a comma list")
    p = sub.add_parser("check-data", help="try every file of an image folder; counts per class, bad files, warnings")
    p.add_argument("folder", help="image folder: root/<class>/... or root/train|val|test/<class>/...")
    p.add_argument("--quick", action="store_true", help="cheaper check: headers, PNG checksums, JPEG end markers")
    p.add_argument("--in-chans", type=int, choices=[1, 3], default=3, help="decode as RGB (3) or grayscale (1)")
    p.add_argument("--workers", type=int, default=0, help="decoding threads (0: in the main thread)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = sub.add_parser("bench", help="measured latency / throughput of models beside MACs and memory access cost")
    p.add_argument("models", nargs="+", help="registered model names or globs, e.g. 'mobilenet_v3_*'")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1])
    p.add_argument("--input-size", type=_input_size, nargs="+", default=None,
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

    p = sub.add_parser("guidelines", help="ShuffleNetV2 Section 2 guideline experiments (G1-G4) on this machine")
    p.add_argument("--experiments", nargs="+", default=["G1", "G2", "G3", "G4"], metavar="G",
                   help="any of G1 G2 G3 G4 (default: all)")
    p.add_argument("--setting", choices=["gpu", "arm"], default="gpu",
                   help="the paper column whose widths and speeds to use (default gpu: GTX 1080Ti widths)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (the paper's ARM runs used 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--out", default="runs/guidelines", help="directory for one PNG per experiment")
    p.add_argument("--quick", action="store_true", help="tiny input, few calls (smoke test; numbers meaningless)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timed calls per configuration")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (at least)")
    p.add_argument("--input-size", type=int, default=None, help="override the paper's 56 x 56")
    p.add_argument("--format", choices=["table", "json"], default="table")
    return parser


def _given_dests(argv: Sequence[str]) -> set[str]:
    """Destinations of the options actually typed: argparse fills the others with defaults, which a resumed run
    must not mistake for new values."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    a.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.given = _given_dests(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as e:
        # user-fixable problems (bad value, missing path, full disk, a diverging learning rate...): one clear
        # line, no traceback
        print(f"lightnets {args.command}: error: {display_name(str(e))}", file=sys.stderr)
        return 2

