"""``lightnets eval`` (one checkpoint or exported file; ``--compare``: the checkpoint beside its exported files)
and ``lightnets predict`` (top-k classes of image files)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import checkpoint_file, command, print_eval

_MODEL_SOURCE = ("run directory (uses best.pt), checkpoint file, or an exported file (.onnx, .pte, .tflite, .xml, "
                 ".param: run in its own runtime with its recorded preprocessing)")  # fmt: skip


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=_MODEL_SOURCE)
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


def _print_written(files: dict, fmt: str) -> None:
    if files and fmt != "json":
        print(f"wrote {', '.join(str(p) for p in files.values())}")


@command("eval", "evaluate a checkpoint or an exported file: top-1/5, confusion matrix, per-class metrics; "
         "--compare: the checkpoint beside its exported files", _eval_arguments)  # fmt: skip
def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation.deployed import is_exported_file
    from ..evaluation.predict import evaluate_source

    if args.compare:
        return _eval_compare(args)
    source = args.checkpoint if is_exported_file(args.checkpoint) else checkpoint_file(args.checkpoint)
    ev = evaluate_source(source, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers,
                         worst_n=args.worst, threads=args.threads, cache=not args.no_cache, cache_dir=args.cache_dir,
                         out=args.out)  # fmt: skip
    if args.format == "json":
        print(json.dumps(ev.form.result.to_dict(), indent=2))
    else:
        print(f"{ev.describe()} on {args.data} ({ev.form.split})")
        print_eval(ev.form.result, top=args.worst)
    _print_written(ev.files, args.format)
    return 0


def _eval_compare(args: argparse.Namespace) -> int:
    from ..evaluation.deployed_report import summary_lines
    from ..evaluation.predict import compare_source

    done = compare_source(args.checkpoint, args.data, args.compare, split=args.split, batch_size=args.batch_size,
                          workers=args.workers, worst_n=args.worst, threads=args.threads,
                          latency_s=args.latency_time, out=args.out)  # fmt: skip
    cmp = done.comparison
    if args.format == "json":
        print(json.dumps(cmp.to_dict(), indent=2))
    else:
        print(f"{cmp.forms[0].metadata['arch']} on {args.data} ({cmp.forms[0].split}, "
              f"{cmp.forms[0].result.num_samples} images)")  # fmt: skip
        print("\n".join(summary_lines(cmp)))
    _print_written(done.files, args.format)
    return 0


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=_MODEL_SOURCE)
    p.add_argument("images", nargs="+", help="image files or directories")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--annotate", metavar="DIR", help="write copies with the predicted label drawn on")
    p.add_argument("--engine", choices=["eager", "optimized", "onnxruntime", "openvino", "executorch", "tflite",
                   "ncnn"], default="eager",
                   help="inference engine (lightnets.deploy) for a checkpoint; all but eager/optimized need packages")


@command("predict", "top-k classes for image files or directories", _predict_arguments)
def cmd_predict(args: argparse.Namespace) -> int:
    from ..evaluation.predict import annotate_predictions, predict

    result = predict(checkpoint_file(args.checkpoint), args.images, topk=args.topk, batch_size=args.batch_size,
                     engine=args.engine)  # fmt: skip
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
