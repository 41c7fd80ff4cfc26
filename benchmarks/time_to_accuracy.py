"""Time-to-accuracy of real training runs, through the public training API.

Fashion-MNIST (official 10,000-image test set), from scratch with the small-input stem; the runs reported in
docs/benchmarks.md (10-minute and 40-minute budgets, two families):

    python benchmarks/time_to_accuracy.py fashion --model mobilenet_v1_x0_25 --epochs 11
    python benchmarks/time_to_accuracy.py fashion --model shufflenet_v2_x0_5 --epochs 7
    python benchmarks/time_to_accuracy.py fashion --model mobilenet_v1_x0_5 --epochs 17
    python benchmarks/time_to_accuracy.py fashion --model shufflenet_v2_x0_5 --epochs 24

Ants / bees (../shared/data/hymenoptera_data): the CLI's default command with the ShuffleNetV2 1.0x ImageNet
weights in ../shared/data/weights (LP-FT; `--freeze`: the linear probe), nothing set but model, data, weights
and epochs, and in the same run a peer: the tutorial's plain recipe as a plain PyTorch loop (peer.py):

    python benchmarks/time_to_accuracy.py ants --epochs 6
    python benchmarks/time_to_accuracy.py ants --freeze
    python benchmarks/time_to_accuracy.py ants --scratch --epochs 6   # from scratch, no peer

Ants/bees times are wall-clock from the call (data loading, model building and the probe included) to the
moment each epoch's validation result is logged.  A Fashion-MNIST goal is reached at the first epoch whose kept checkpoint (best on validation so far) scores it on the test set.
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
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lightnets.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peer.py beside this script

DATA = Path(os.environ.get("LIGHTNETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ANTS_WEIGHTS = DATA / "weights" / "shufflenet_v2_x1_0_from_onnx_int8.pth"


def first_reaching(history: list[dict], key: str, goal: float, time_key: str = "elapsed_s") -> float | None:
    """Elapsed seconds at the first epoch whose *kept* checkpoint scores ``goal`` on ``key``.

    The kept checkpoint is the best on validation so far (what best.pt holds at that moment), so a test-set
    goal is never met by an epoch that validation would not have chosen."""
    best_val, kept = float("-inf"), None
    for row in history:
        if row.get("val_top1", float("-inf")) > best_val:
            best_val, kept = row.get("val_top1", float("-inf")), row
        if kept is not None and kept.get(key, -1) >= goal:
            return row[time_key]
    return None


def _fashion(args: argparse.Namespace) -> tuple[TrainConfig, list]:
    model = args.model or "shufflenet_v2_x1_0"
    # the CLI's defaults (lr 0.2 at batch 128 for small inputs, half an epoch of warm-up: recipe.py); only the
    # model, the data and the epoch count are chosen here, and --amp (default auto, the CLI's decision per family;
    # off / bf16 to report both precisions)
    cfg = TrainConfig(
        model=model, data=f"fashion-mnist:{DATA / 'fashion-mnist'}", epochs=args.epochs, track_test=True,
        progress=False, amp=args.amp,
        out=args.out or f"runs/tta-fashion-{model}-{args.epochs}ep-{time.strftime('%H%M%S')}",
    )  # fmt: skip
    return cfg, [("test_top1", 0.92, 600), ("test_top1", 0.935, 2400)]


def _ants(args: argparse.Namespace) -> tuple[TrainConfig, list]:
    model = args.model or "shufflenet_v2_x1_0"
    fine_tune = not args.scratch
    kind = "scratch" if args.scratch else "freeze" if args.freeze else "default"
    # the CLI's defaults: only model, data, weights (and --freeze) and the epoch count are chosen here
    cfg = TrainConfig(
        model=model, data=str(DATA / "hymenoptera_data"), epochs=args.epochs,
        weights=str(ANTS_WEIGHTS) if fine_tune else None, freeze=args.freeze, progress=False,
        out=args.out or f"runs/tta-ants-{kind}-{args.epochs}ep-{time.strftime('%H%M%S')}",
    )  # fmt: skip
    goals = [("val_top1", 0.94, 20)] if args.freeze else [("val_top1", 0.95, 60)]
    return cfg, goals


def _timed_train(cfg: TrainConfig) -> tuple[Any, list[float]]:
    """train(cfg), and the wall time from the call to each epoch's log line (data loading included)."""
    start, walls = time.perf_counter(), []

    def log(line: str) -> None:
        if line.startswith("epoch "):
            walls.append(time.perf_counter() - start)
        print(line, flush=True)

    return train(cfg, log_fn=log), walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["fashion", "ants"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--scratch", action="store_true", help="ants: train from scratch instead of fine-tuning")
    parser.add_argument("--freeze", action="store_true", help="ants: the linear probe (lightnets train --freeze)")
    parser.add_argument("--peer-epochs", type=int, default=10, help="ants: epochs of the plain-PyTorch peer (0: none)")
    parser.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto", help="fashion: precision")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg, goals = _fashion(args) if args.task == "fashion" else _ants(args)
    result, walls = _timed_train(cfg)
    hist = result.history
    for row, wall in zip(hist, walls, strict=True):
        row["wall_s"] = wall
    resolved = json.loads((result.run_dir / "config.json").read_text()).get("resolved", {})
    acc_key = "test_top1" if args.task == "fashion" else "val_top1"
    print(f"\nprecision: {resolved.get('amp_resolved', '?')} ({resolved.get('amp_reason', '')}); "
          f"method {resolved.get('method', '?')}, batch {resolved.get('batch_size')}, lr {resolved.get('lr')}")
    print(f"\n| epoch | elapsed (min) | wall (s) | train loss | val top-1 (%) | {'test' if args.task == 'fashion' else 'val'} top-1 (%) |")
    print("|---|---|---|---|---|---|")
    for row in hist:
        print(f"| {row['epoch']} | {row['elapsed_s'] / 60:.2f} | {row.get('wall_s', float('nan')):.1f} | "
              f"{row['train_loss']:.4f} | {100 * row['val_top1']:.2f} | {100 * row[acc_key]:.2f} |")
    time_key = "elapsed_s" if args.task == "fashion" else "wall_s"
    summary = {
        "task": args.task, "model": cfg.model, "epochs": cfg.epochs, "threads": args.threads, "resolved": resolved,
        "config": {k: v for k, v in vars(cfg).items() if k != "model_args"},
        "wall_minutes": hist[-1]["elapsed_s"] / 60, "best_epoch": result.best_epoch,
        "final": result.final.summary() if result.final else None, "final_split": result.final_split,
        "goals": [
            {"metric": key, "goal": goal, "budget_s": budget, "reached_at_s": first_reaching(hist, key, goal, time_key),
             "met": (t := first_reaching(hist, key, goal, time_key)) is not None and t <= budget}
            for key, goal, budget in goals
        ],
        "history": hist,
    }  # fmt: skip
    if args.task == "ants" and not args.scratch and args.peer_epochs > 0:
        summary["peer"] = _peer_comparison(args, hist)
    (result.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    final = summary["final"] or {}
    print(f"\nbest-val checkpoint (epoch {result.best_epoch}) on {result.final_split}: top-1 {final.get('top1', float('nan')):.4f}")
    for g in summary["goals"]:
        reached = "not reached" if g["reached_at_s"] is None else f"reached at {g['reached_at_s']:.1f} s"
        print(f"goal {g['metric']} >= {g['goal']} within {g['budget_s']} s: {reached} -> "
              f"{'MET' if g['met'] else 'NOT MET'}")


def _peer_comparison(args: argparse.Namespace, hist: list[dict]) -> dict:
    """Run the peer, then the table: wall time of each to each val accuracy, and lightnets to the peer's best."""
    from peer import run_peer

    print(f"\npeer: the tutorial's plain recipe, {args.peer_epochs} epochs", flush=True)
    peer = run_peer(DATA / "hymenoptera_data", ANTS_WEIGHTS, model=args.model or "shufflenet_v2_x1_0",
                    epochs=args.peer_epochs, log_fn=lambda line: print(line, flush=True))  # fmt: skip
    peer_best = max(r["val_top1"] for r in peer)
    peer_best_at = first_reaching(peer, "val_top1", peer_best, "wall_s")
    ours_at = first_reaching(hist, "val_top1", peer_best, "wall_s")
    ours_best = max(r["val_top1"] for r in hist)
    print("\n| val top-1 >= | lightnets wall (s) | peer wall (s) |\n|---|---|---|")
    for goal in (0.90, 0.93, 0.94, 0.95, 0.96, 0.97):
        t_ours, t_peer = first_reaching(hist, "val_top1", goal, "wall_s"), first_reaching(peer, "val_top1", goal, "wall_s")
        print(f"| {100 * goal:.0f} % | {'-' if t_ours is None else f'{t_ours:.1f}'} | {'-' if t_peer is None else f'{t_peer:.1f}'} |")
    peer_total = peer[-1]["wall_s"]
    ratio = None if ours_at is None else ours_at / peer_best_at
    print(f"\npeer best val {100 * peer_best:.2f} % at {peer_best_at:.1f} s (peer run {peer_total:.1f} s); lightnets best "
          f"{100 * ours_best:.2f} %, reaches the peer's best at "
          f"{'never' if ours_at is None else f'{ours_at:.1f} s'}; ratio to the peer's time to its best: "
          f"{'-' if ratio is None else f'{ratio:.2f}'} (goal <= 0.33 and ending higher: "
          f"{'MET' if ratio is not None and ratio <= 1 / 3 and ours_best > peer_best else 'NOT MET'})")
    return {"history": peer, "best_val_top1": peer_best, "best_at_s": peer_best_at, "wall_s": peer_total,
            "lightnets_reaches_peer_best_at_s": ours_at, "ratio": ratio, "lightnets_best_val_top1": ours_best}


if __name__ == "__main__":
    main()
