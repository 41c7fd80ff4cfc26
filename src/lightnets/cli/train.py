"""``lightnets train`` (a new run, or ``--resume RUN_DIR``) and ``lightnets demo`` (the digits walk-through)."""

from __future__ import annotations

import argparse

from .common import command, print_eval
from .train_options import add_train_options, config_values


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    add_train_options(p)


def resume_overrides(args: argparse.Namespace) -> dict:
    """The training settings typed beside --resume, by config field (the run's own values fill in the rest)."""
    return config_values(args, only=set(getattr(args, "given", set())) - {"resume"})


@command("train", "train or fine-tune a model on a dataset; writes a run directory", _train_arguments)
def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    if args.resume:
        result = train(resume=args.resume, overrides=resume_overrides(args), log_fn=print)
    else:
        given = getattr(args, "given", set())
        if not ({"model", "data"} <= given and args.model and args.data):
            raise ValueError("train needs --model and --data (or --resume RUN_DIR)")
        result = train(TrainConfig(**config_values(args)), log_fn=print)
    if result.final is not None:
        print(f"best epoch {result.best_epoch}; evaluated best.pt on {result.final_split}:")
        print_eval(result.final, top=5)
    print(f"run directory: {result.run_dir}" + (f"  report: {result.report}" if result.report else ""))
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="run directory (default runs/demo-TIME)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--model", default=None)


@command("demo", "the main job: train on scikit-learn's digits, evaluate, predict, report", _demo_arguments)
def cmd_demo(args: argparse.Namespace) -> int:
    from ..train.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, model=args.model, log_fn=print)
    return 0
