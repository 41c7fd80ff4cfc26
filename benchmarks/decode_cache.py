"""Decode once: epoch-1 vs epoch-2 data time over a JPEG folder through the real loader, with and without the
decode cache (lightnets.data.decode_cache).

    python benchmarks/decode_cache.py                                  # ../shared/data/hymenoptera_data/train
    python benchmarks/decode_cache.py --data DIR --workers 2 --epochs 3
    python benchmarks/decode_cache.py --train --weights ../shared/data/weights/shufflenet_v2_x1_0_from_onnx_int8.pth

Data time: ``load_dataset`` + ``make_loader`` (the training transform of the folder's default preprocessing:
RandomResizedCrop 224 + flip, DataLoader workers as in ``lightnets train``) and one pass over every batch,
nothing else.  With the cache, epoch 1 includes decoding the folder into a fresh cache directory (the first
``make_loader``); later epochs read the memory-mapped pixels.  The goal: epoch 2 at least 3x faster than epoch 1.

``--train`` also runs a full fine-tuning (``lightnets.train`` with the CLI defaults, ``--epochs`` epochs) with
and without the cache and prints each epoch's seconds and the run's wall time.

Not a unit test.  The machine may be shared: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lightnets.data import default_preprocessing, load_dataset, make_loader  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hymenoptera_data"


def data_epochs(data: str, *, cache: bool, epochs: int, workers: int, batch_size: int) -> list[float]:
    """Seconds of each epoch's data loading (epoch 1 includes opening the folder and, cached, decoding it)."""
    with tempfile.TemporaryDirectory(prefix="lightnets-cache-") as cache_dir:
        times = []
        start = time.perf_counter()
        splits = load_dataset(data, cache=cache, cache_dir=cache_dir, val_fraction=0.0)
        prep = default_preprocessing(splits)
        loader = make_loader(splits.train, batch_size=batch_size, train=True, preprocessing=prep,
                             num_workers=workers)  # fmt: skip
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            n = sum(len(batch[0]) for batch in loader)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
        assert n > 0
        return times


def train_epochs(
    data: str, weights: str, *, cache: bool, epochs: int, workers: int
) -> tuple[list[float], float]:
    """Per-epoch seconds and the wall time of a default fine-tuning run."""
    from lightnets.train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="lightnets-bench-") as tmp:
        cfg = TrainConfig(model="shufflenet_v2_x1_0", data=data, weights=weights, epochs=epochs, workers=workers,
                          out=str(Path(tmp) / "run"), progress=False, no_cache=not cache,
                          cache_dir=str(Path(tmp) / "cache"))  # fmt: skip
        start = time.perf_counter()
        result = train(cfg, log_fn=lambda _line: None)
        wall = time.perf_counter() - start
        return [float(r["epoch_seconds"]) for r in result.history], wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="an image folder (default: hymenoptera_data)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (lightnets train's default)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train", action="store_true", help="also time a full fine-tuning run with and without")
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "data" / "weights" /
                                             "shufflenet_v2_x1_0_from_onnx_int8.pth"))  # fmt: skip
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"decode_cache.py: data not found: {args.data}", file=sys.stderr)
        return 2
    print(f"`python benchmarks/decode_cache.py {' '.join(argv if argv is not None else sys.argv[1:])}`  "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows = {c: data_epochs(args.data, cache=c, epochs=args.epochs, workers=args.workers,
                           batch_size=args.batch_size) for c in (False, True)}  # fmt: skip
    head = " | ".join(f"epoch {i + 1} (s)" for i in range(args.epochs))
    print(f"\n| data loading | {head} | epoch 1 / epoch 2 |\n|---|" + "---|" * (args.epochs + 1))
    for cache, times in rows.items():
        cells = " | ".join(f"{t:.2f}" for t in times)
        ratio = times[0] / times[1] if len(times) > 1 else float("nan")
        print(f"| {'decode cache' if cache else 'no cache'} | {cells} | {ratio:.1f}x |")
    if len(rows[True]) > 1:
        print(f"\ncached epoch 2 vs an uncached epoch 2: {rows[False][1] / rows[True][1]:.1f}x faster")
    if args.train:
        print(f"\n| fine-tuning, defaults | {head} | wall (s) |\n|---|" + "---|" * (args.epochs + 1))
        for cache in (False, True):
            times, wall = train_epochs(args.data, args.weights, cache=cache, epochs=args.epochs,
                                       workers=args.workers)  # fmt: skip
            print(f"| {'decode cache' if cache else 'no cache'} | {' | '.join(f'{t:.1f}' for t in times)} | "
                  f"{wall:.1f} |")  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
