"""``lightnets`` command line: a thin shell over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.  Errors the user
can fix (unknown model, bad value, missing file) are printed as one line on stderr with exit status 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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
    from .zoo import format_table, model_table

    rows = model_table(args.pattern)
    if not rows:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    print(format_table(rows, args.format))
    return 0


@_command("profile")
def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .analysis import profile
    from .registry import create_model, get_card

    card = get_card(args.model)
    model = create_model(args.model, **_model_kwargs(args.model_arg))
    size = args.input_size or (card.input_size, card.input_size)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    prof = profile(model, input_size=size, batch_size=args.batch_size, dtype=dtype)
    if args.format == "json":
        print(prof.to_json(per_layer=args.per_layer))
    elif args.format == "csv":
        print(prof.to_csv(per_layer=args.per_layer), end="")
    else:
        print(f"{args.model}  input {size[0]}x{size[1]}  batch {args.batch_size}  {args.dtype}")
        print(prof.to_table(per_layer=args.per_layer))
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        # user-fixable problems: one clear line, no traceback
        print(f"lightnets {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
