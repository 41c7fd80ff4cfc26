"""Eager latency of padding="same" (TF's SAME rule) against the default symmetric padding, same weights.

    flock /work/locks/bench python benchmarks/padding_same.py [MODEL ...] [--pairs 60] [--size 224]

Calls alternate between the two models (so load changes hit both alike); prints the median latency of each
and the median per-pair ratio same / symmetric.  The extra cost is one F.pad copy before each stride-2 conv
on an even input (odd inputs pad symmetrically inside the conv).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightnets import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                                                       "shufflenet_v2_x1_0"])  # fmt: skip
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random-init activations underflow; denormals would dominate the timing
    x = torch.randn(1, 3, args.size, args.size)
    print("| model | symmetric (ms) | same (ms) | ratio same / symmetric |\n|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        sym = create_model(name).eval()
        same = create_model(name, padding="same").eval()
        same.load_state_dict(sym.state_dict())
        times: dict[str, list[float]] = {"sym": [], "same": []}
        with torch.inference_mode():
            for m in (sym, same):
                for _ in range(3):
                    m(x)
            for i in range(args.pairs):
                order = (("sym", sym), ("same", same)) if i % 2 else (("same", same), ("sym", sym))
                for key, m in order:
                    start = time.perf_counter()
                    m(x)
                    times[key].append(time.perf_counter() - start)
        ratio = statistics.median(b / a for a, b in zip(times["sym"], times["same"], strict=True))
        print(f"| {name} | {statistics.median(times['sym']) * 1e3:.2f} | {statistics.median(times['same']) * 1e3:.2f} "
              f"| {ratio:.3f} |")


if __name__ == "__main__":
    main()
