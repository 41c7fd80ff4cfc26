"""Training-step speed: lightnets' engine against a plain PyTorch loop, data loading, bf16 and channels_last.

    python benchmarks/train_speed.py                       # everything (tens of minutes on 2 CPU cores)
    python benchmarks/train_speed.py --families mobilenet_v2 shufflenet_v2 --sizes 32 --rounds 2

Three measurements, printed as markdown tables (with the exact command and the machine's load) for
docs/benchmarks.md, and saved as JSON with ``--json``:

1. Images/s of one training step for one representative model per family, at 32 px (``small_input=True``,
   batch 128, 10 classes: the CIFAR setting) and 224 px (batch 32, 1000 classes: the ImageNet setting):
   * engine: ``lightnets.train.engine.train_one_epoch`` over a ``TensorBatchLoader`` (random uint8 images, the
     training augmentation on) holding exactly one batch, so each call is one step and its ``seconds`` include
     producing the batch, as in real training;
   * plain: the loop everyone writes -- ``model(x)``, ``cross_entropy``, ``backward``, SGD ``step`` -- on a
     pre-made float batch, written out below.
   Both use SGD (momentum 0.9) on their own copy of the same initial model, fp32, NCHW.  The variants take
   turns (interleaved rounds) so that load from other processes falls on both; the median step time is
   reported and the ratio engine / plain images/s.
2. Data loading, beside it: ``measure_throughput`` (below) of a ``TensorBatchLoader`` with augmentation
   at both sizes, and of a ``FolderLoader`` (JPEG decoding, RandomResizedCrop, 2 workers) over
   hymenoptera_data/train at 224 px.  If a loader delivers fewer images/s than training consumes, data loading
   is the bottleneck.
3. bf16 autocast and channels_last for training on this CPU: the engine with each of fp32 / bf16 /
   channels_last / both, interleaved, as train.py would run them.

Not a unit test.  The machine may be shared: the load average is printed before and after each part.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lightnets import create_model
from lightnets.data import ImageFolder, TensorBatchLoader, make_loader
from lightnets.data.transforms import make_preprocessing
from lightnets.train.engine import train_one_epoch

# One representative model per family: the paper's 1.0x model (ShuffleNetV1: g = 3, its default).
REPRESENTATIVES = {
    "mobilenet_v1": "mobilenet_v1",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_large",
    "shufflenet_v1": "shufflenet_v1",
    "shufflenet_v2": "shufflenet_v2_x1_0",
}


@dataclass(frozen=True)
class SizeSetting:
    input_size: int
    batch_size: int
    small_input: bool
    num_classes: int


SIZES = {
    32: SizeSetting(32, batch_size=128, small_input=True, num_classes=10),
    224: SizeSetting(224, batch_size=32, small_input=False, num_classes=1000),
}
LR = 0.01
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data" / "train"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def random_uint8(s: SizeSetting, batches: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = s.batch_size * batches
    images = torch.randint(0, 256, (n, 3, s.input_size, s.input_size), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, s.num_classes, (n,), generator=g)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def engine_step(
    model: nn.Module, s: SizeSetting, *, amp_dtype: torch.dtype | None = None, channels_last: bool = False
) -> Callable[[], float]:
    """One call = one training step through lightnets.train.engine.train_one_epoch; returns its seconds."""
    images, labels = random_uint8(s, 1, seed=1)
    loader = TensorBatchLoader(images, labels, s.batch_size, shuffle=True, augment=True, drop_last=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = sgd(model)
    state = {"step": 0}

    def step() -> float:
        loader.set_epoch(state["step"])
        out = train_one_epoch(
            model, loader, optimizer, step=state["step"], lr_at=lambda _: LR, amp_dtype=amp_dtype,
            channels_last=channels_last,
        )  # fmt: skip
        state["step"] = out["step"]
        return out["seconds"]

    return step


def plain_step(model: nn.Module, s: SizeSetting) -> Callable[[], float]:
    """One call = one step of the textbook loop on a pre-made float batch; returns its seconds."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(s.batch_size, 3, s.input_size, s.input_size, generator=g)
    y = torch.randint(0, s.num_classes, (s.batch_size,), generator=g)
    model.train()
    optimizer = sgd(model)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def interleaved(
    steps: dict[str, Callable[[], float]], warmup: int, rounds: int, per_round: int
) -> dict[str, list]:
    """Warm each up, then let them take turns: ``rounds`` rounds of ``per_round`` steps each."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            samples[k] += [fn() for _ in range(per_round)]
    return samples


def images_per_s(batch: int, seconds: list[float]) -> float:
    return batch / statistics.median(seconds)


def build(name: str, s: SizeSetting) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, small_input=s.small_input, num_classes=s.num_classes)


def measure_throughput(loader: Iterable[Any], num_batches: int = 20, warmup: int = 1) -> float:
    """Images per second delivered by ``loader`` over ``num_batches`` batches after ``warmup`` batches (fewer if
    the loader runs out).  The first element of each batch is taken as the images."""
    it = iter(loader)
    for _ in range(warmup):
        if next(it, None) is None:
            break
    images, start, done = 0, time.perf_counter(), 0
    for batch in it:
        images += len(batch[0])
        done += 1
        if done >= num_batches:
            break
    seconds = time.perf_counter() - start
    if images == 0:
        raise ValueError("the loader produced no batches to time (after warm-up)")
    return images / seconds


def loader_throughput(s: SizeSetting, batches: int) -> float:
    images, labels = random_uint8(s, batches + 1, seed=3)
    loader = TensorBatchLoader(images, labels, s.batch_size, shuffle=True, augment=True, drop_last=True)
    return measure_throughput(loader, num_batches=batches, warmup=1)


def folder_throughput(root: Path, batch_size: int = 32, workers: int = 2) -> tuple[float, int]:
    dataset = ImageFolder(root)
    prep = make_preprocessing("imagenet", 224)
    loader = make_loader(dataset, batch_size=batch_size, train=True, preprocessing=prep, num_workers=workers)
    return measure_throughput(loader, num_batches=len(loader) - 1, warmup=1), len(dataset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", default=list(REPRESENTATIVES), choices=list(REPRESENTATIVES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 224], choices=sorted(SIZES))
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder for the FolderLoader")
    parser.add_argument("--skip", nargs="*", default=[], choices=["engine", "data", "precision"])
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    command = "python benchmarks/train_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(
        f"`{command}`  \ntorch {torch.__version__}, {torch.get_num_threads()} threads; {load()} at the start\n"
    )
    results: dict = {"command": command, "torch": torch.__version__, "threads": torch.get_num_threads()}
    timing = {"warmup": args.warmup, "rounds": args.rounds, "per_round": args.steps}

    loaders: dict[int, float] = {}
    if "data" not in args.skip:
        for size in args.sizes:
            loaders[size] = loader_throughput(SIZES[size], batches=10)
        results["tensor_loader_images_per_s"] = loaders
        if args.data.is_dir():
            folder, n = folder_throughput(args.data)
            results["folder_loader_images_per_s"] = folder
            print(f"FolderLoader over {args.data} ({n} images, 224 px, RandomResizedCrop, batch 32, 2 workers): "
                  f"{folder:.1f} images/s  \n")  # fmt: skip
        print("TensorBatchLoader with augmentation: " + ", ".join(
            f"{size} px batch {SIZES[size].batch_size}: {v:.0f} images/s" for size, v in loaders.items()) + "\n")  # fmt: skip

    if "engine" not in args.skip:
        rows = []
        print("| family | model | input | batch | engine (img/s) | plain loop (img/s) | engine / plain | "
              "TensorBatchLoader alone (img/s) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            s = SIZES[size]
            for family in args.families:
                name = REPRESENTATIVES[family]
                model = build(name, s)
                steps = {
                    "engine": engine_step(copy.deepcopy(model), s),
                    "plain": plain_step(copy.deepcopy(model), s),
                }
                samples = interleaved(steps, **timing)
                eng, plain = (images_per_s(s.batch_size, samples[k]) for k in ("engine", "plain"))
                rows.append({"family": family, "model": name, "input": size, "batch": s.batch_size,
                             "engine_images_per_s": eng, "plain_images_per_s": plain, "samples_s": samples})  # fmt: skip
                data = f"{loaders[size]:.0f}" if size in loaders else "-"
                print(f"| {family} | {name} | {size} | {s.batch_size} | {eng:.1f} | {plain:.1f} | {eng / plain:.2f} "
                      f"| {data} |", flush=True)  # fmt: skip
        results["engine_vs_plain"] = rows
        print(f"\n({load()} after the engine / plain comparison)\n")

    if "precision" not in args.skip:
        variants = {
            "fp32": {},
            "bf16": {"amp_dtype": torch.bfloat16},
            "channels_last": {"channels_last": True},
            "bf16+channels_last": {"amp_dtype": torch.bfloat16, "channels_last": True},
        }
        rows = []
        print("| family | input | batch | fp32 NCHW (img/s) | bf16 autocast | channels_last | both | "
              "bf16 / fp32 | channels_last / fp32 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            s = SIZES[size]
            for family in args.families:
                model = build(REPRESENTATIVES[family], s)
                steps = {k: engine_step(copy.deepcopy(model), s, **kw) for k, kw in variants.items()}
                samples = interleaved(steps, **timing)
                speed = {k: images_per_s(s.batch_size, v) for k, v in samples.items()}
                rows.append({"family": family, "input": size, "batch": s.batch_size, "images_per_s": speed,
                             "samples_s": samples})  # fmt: skip
                print(f"| {family} | {size} | {s.batch_size} | {speed['fp32']:.1f} | {speed['bf16']:.1f} | "
                      f"{speed['channels_last']:.1f} | {speed['bf16+channels_last']:.1f} | "
                      f"{speed['bf16'] / speed['fp32']:.2f} | {speed['channels_last'] / speed['fp32']:.2f} |",
                      flush=True)  # fmt: skip
        results["precision_layout"] = rows
        print(f"\n({load()} after the bf16 / channels_last comparison)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
