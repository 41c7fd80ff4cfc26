"""``lightnets`` command line: a thin shell over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.  Errors the user
can fix (unknown model, bad value, missing file) are printed as one line on stderr with exit status 2,
never as a traceback.  The commands live in one module per stage (``analysis``, ``train``, ``evaluate``,
``deploy``, ``data``); this module builds the parser from them and runs one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..util.atomic import display_name
from . import analysis, data, deploy, evaluate, train  # noqa: F401  (each registers its commands)
from .common import REGISTRY
from .train_options import renamed_dests

# the order `lightnets --help` lists the commands in
ORDER = ("models", "profile", "train", "eval", "predict", "demo", "export", "convert", "check-data", "bench",
         "guidelines")  # fmt: skip

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {name: REGISTRY[name].run for name in ORDER}


def __getattr__(name: str) -> dict[str, str]:
    # train options whose argparse destination differs from their config field (generated from TrainConfig)
    if name == "_TRAIN_FIELDS":
        return renamed_dests()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The ``lightnets`` parser: one sub-parser per registered command, in ``ORDER``."""
    parser = argparse.ArgumentParser(
        prog="lightnets",
        description="Lightweight CNNs (MobileNetV1-V3, ShuffleNetV1-V2): build, measure, train, evaluate, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ORDER:
        cmd = REGISTRY[name]
        cmd.arguments(sub.add_parser(name, help=cmd.help))
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
    """Run one command; its exit status (2 and one line on stderr for an error the user can fix)."""
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
