"""What every command module of the CLI shares: the command registry and the small argument parsers.

A command module declares each command once with ``@command(name, help, arguments)``: ``arguments`` adds the
command's options to its sub-parser, the decorated function runs it.  ``cli.build_parser`` then lists the
commands in one fixed order, so the modules can be imported in any order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..util.atomic import display_name

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, the function adding its options, the function running it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Run


REGISTRY: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[[Run], Run]:
    """Register the decorated function as the subcommand ``name`` (its options added by ``arguments``)."""

    def wrap(fn: Run) -> Run:
        REGISTRY[name] = Command(name, help, arguments, fn)
        return fn

    return wrap


def input_size(text: str) -> tuple[int, int]:
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


def model_kwargs(items: Sequence[str] | None) -> dict:
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


def checkpoint_file(path: str) -> str:
    """The checkpoint a path names; says on stderr when a run directory's last.pt stands in for its best.pt."""
    from ..train.checkpoint import resolve_checkpoint

    resolved, note = resolve_checkpoint(path)
    if note:
        print(f"lightnets: note: {display_name(note)}", file=sys.stderr)
    return str(resolved)


def print_eval(result, top: int = 10) -> None:
    """An ``EvalResult`` as the summary line, the per-class table and the worst misclassified images."""
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
