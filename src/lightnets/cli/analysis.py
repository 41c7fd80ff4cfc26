"""``lightnets models``, ``profile`` and ``guidelines``: the zoo table, a model's costs, the G1-G4 experiments."""

from __future__ import annotations

import argparse

from .common import command, input_size, model_kwargs


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")


@command("models", "every registered model with params and MACs beside the paper's numbers", _models_arguments)
def cmd_models(args: argparse.Namespace) -> int:
    from ..analysis.zoo import format_table, model_table

    rows = model_table(args.pattern)
    if not rows:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    print(format_table(rows, args.format))
    return 0


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `lightnets models`)")
    p.add_argument("--input-size", type=input_size, default=None, help="N or HxW (default: the model's)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="element type for the byte counts")
    p.add_argument("--per-layer", action="store_true", help="one row per layer as well as the totals")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="extra model keyword, e.g. width_mult=0.5 (repeatable)")


@command("profile", "params, MACs / FLOPs, activation memory and memory access cost of a model", _profile_arguments)
def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.profile import _in_chans, profile
    from ..registry import create_model, get_card
    from ..util.limits import check_fits

    card = get_card(args.model)
    model = create_model(args.model, **model_kwargs(args.model_arg))
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


def _guidelines_arguments(p: argparse.ArgumentParser) -> None:
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


@command("guidelines", "ShuffleNetV2 Section 2 guideline experiments (G1-G4) on this machine", _guidelines_arguments)
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
