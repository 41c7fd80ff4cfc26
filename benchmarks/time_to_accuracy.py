"""Time-to-accuracy of real training runs, through the public training API.

Fashion-MNIST (official 10,000-image test set), from scratch with the small-input stem; the runs reported in
docs/benchmarks.md (10-minute and 40-minute budgets, two families):

    python benchmarks/time_to_accuracy.py fashion --model mobilenet_v1_x0_25 --epochs 11
    python benchmarks/time_to_accuracy.py fashion --model shufflenet_v2_x0_5 --epochs 7
    python benchmarks/time_to_accuracy.py fashion --model mobilenet_v1_x0_5 --epochs 17
    python benchmarks/time_to_accuracy.py fashion --model shufflenet_v2_x0_5 --epochs 24

Ants / bees (../shared/data/hymenoptera_data): fine-tuning the ShuffleNetV2 1.0x ImageNet weights in
../shared/data/weights, and the same model from scratch beside it:

    python benchmarks/time_to_accuracy.py ants --epochs 6
    python benchmarks/time_to_accuracy.py ants --scratch --epochs 6

A goal is reached at the first epoch whose kept checkpoint (best on validation so far) scores it on the test set.
Model selection uses the validation split only (10% of the Fashion-MNIST training set; the ants/bees val
folder, which is also what the goal is stated on).  For Fashion-MNIST the test set is scored after every epoch
for the time-to-accuracy curve (`track_test`), never to choose a checkpoint.  Times are wall-clock seconds of
training + validation, excluding that extra test scoring.  Prints a markdown table and writes summary.json in
the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from lightnets.train import TrainConfig, train

DATA = Path(os.environ.get("LIGHTNETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ANTS_WEIGHTS = DATA / "weights" / "shufflenet_v2_x1_0_from_onnx_int8.pth"


def first_reaching(history: list[dict], key: str, goal: float) -> float | None:
    """Elapsed seconds at the first epoch whose *kept* checkpoint scores ``goal`` on ``key``.

    The kept checkpoint is the best on validation so far (what best.pt holds at that moment), so a test-set
    goal is never met by an epoch that validation would not have chosen."""
    best_val, kept = float("-inf"), None
    for row in history:
        if row.get("val_top1", float("-inf")) > best_val:
            best_val, kept = row.get("val_top1", float("-inf")), row
        if kept is not None and kept.get(key, -1) >= goal:
            return row["elapsed_s"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["fashion", "ants"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--scratch", action="store_true", help="ants: train from scratch instead of fine-tuning")
    parser.add_argument("--freeze", action="store_true", help="ants: train only the head")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.task == "fashion":
        model = args.model or "shufflenet_v2_x1_0"
        cfg = TrainConfig(
            model=model, data=f"fashion-mnist:{DATA / 'fashion-mnist'}", epochs=args.epochs,
            batch_size=args.batch_size or 128, lr=args.lr or 0.2, warmup_epochs=0.5, label_smoothing=0.1,
            small_input=True, val_fraction=0.1, workers=0, track_test=True, progress=False,
            out=args.out or f"runs/tta-fashion-{model}-{args.epochs}ep-{time.strftime('%H%M%S')}",
        )  # fmt: skip
        goals = [("test_top1", 0.92, 600), ("test_top1", 0.935, 2400)]
    else:
        model = args.model or "shufflenet_v2_x1_0"
        fine_tune = not args.scratch
        cfg = TrainConfig(
            model=model, data=str(DATA / "hymenoptera_data"), epochs=args.epochs, batch_size=args.batch_size or 32,
            lr=args.lr or (0.01 if fine_tune else 0.1), warmup_epochs=0.0 if fine_tune else 1.0,
            weights=str(ANTS_WEIGHTS) if fine_tune else None, freeze=args.freeze, input_size=224, workers=2,
            progress=False,
            out=args.out or f"runs/tta-ants-{'ft' if fine_tune else 'scratch'}-{args.epochs}ep-{time.strftime('%H%M%S')}",
        )  # fmt: skip
        goals = [("val_top1", 0.93, 180)]

    result = train(cfg, log_fn=print)
    hist = result.history
    acc_key = "test_top1" if args.task == "fashion" else "val_top1"
    print(f"\n| epoch | elapsed (min) | train loss | val top-1 (%) | {'test' if args.task == 'fashion' else 'val'} top-1 (%) |")
    print("|---|---|---|---|---|")
    for row in hist:
        print(f"| {row['epoch']} | {row['elapsed_s'] / 60:.2f} | {row['train_loss']:.4f} | {100 * row['val_top1']:.2f} "
              f"| {100 * row[acc_key]:.2f} |")
    summary = {
        "task": args.task, "model": cfg.model, "epochs": cfg.epochs, "threads": args.threads,
        "config": {k: v for k, v in vars(cfg).items() if k != "model_args"},
        "wall_minutes": hist[-1]["elapsed_s"] / 60, "best_epoch": result.best_epoch,
        "final": result.final.summary() if result.final else None, "final_split": result.final_split,
        "goals": [
            {"metric": key, "goal": goal, "budget_s": budget, "reached_at_s": first_reaching(hist, key, goal),
             "met": (t := first_reaching(hist, key, goal)) is not None and t <= budget}
            for key, goal, budget in goals
        ],
        "history": hist,
    }  # fmt: skip
    (result.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    final = summary["final"] or {}
    print(f"\nbest-val checkpoint (epoch {result.best_epoch}) on {result.final_split}: top-1 {final.get('top1', float('nan')):.4f}")
    for g in summary["goals"]:
        reached = "not reached" if g["reached_at_s"] is None else f"reached at {g['reached_at_s'] / 60:.2f} min"
        print(f"goal {g['metric']} >= {g['goal']} within {g['budget_s'] / 60:.0f} min: {reached} -> "
              f"{'MET' if g['met'] else 'NOT MET'}")


if __name__ == "__main__":
    main()
