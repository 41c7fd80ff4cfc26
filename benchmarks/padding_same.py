"""Latency of padding="same" (TF's SAME rule) against the default symmetric padding, same weights, per engine.

    flock /work/locks/bench python benchmarks/padding_same.py [MODEL ...] [--engines eager onnxruntime ...]
        [--pairs 60] [--size 224] [--threads 2]

For each engine (``lightnets.deploy.make_runner``: eager PyTorch, ``optimized``, ``onnxruntime``, ``openvino``,
...), the symmetric and the "same" model are prepared, then called in alternating turns of ``BLOCK`` calls
(so load changes hit both alike); prints the median latency of each and the median per-turn ratio.  In eager PyTorch
the extra cost is one ``F.pad`` copy before each stride-2 conv on an even input (odd inputs pad symmetrically
inside the conv); an exported graph hands the runtime an explicit Pad, which onnxruntime and OpenVINO fold
into the Conv's own (asymmetric) pads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightnets import create_model
from lightnets.deploy import make_runner

MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0"]


BLOCK = 5  # calls per turn: a runtime's spinning worker threads stay busy briefly after a call, which would
#            slow the other model's very next call if turns were single calls


def pair_times(runners: dict[str, object], x: torch.Tensor, pairs: int) -> dict[str, list[float]]:
    """Median seconds per call of each runner in each turn; turns alternate (the order flips every pair)."""
    times: dict[str, list[float]] = {key: [] for key in runners}
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(3):
                run(x)
        keys = list(runners)
        for i in range(pairs):
            for key in keys if i % 2 else keys[::-1]:
                turn = []
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    runners[key](x)
                    turn.append(time.perf_counter() - start)
                times[key].append(statistics.median(turn))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--engines", nargs="+", default=["eager", "onnxruntime", "openvino"])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random-init activations underflow; denormals would dominate the timing
    x = torch.randn(1, 3, args.size, args.size)
    print("| model | engine | symmetric (ms) | same (ms) | ratio same / symmetric |\n|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        sym = create_model(name).eval()
        same = create_model(name, padding="same").eval()
        same.load_state_dict(sym.state_dict())
        for engine in args.engines:
            shape = (1, 3, args.size, args.size)
            runners = {key: make_runner(m, engine, input_shape=shape, threads=args.threads)
                       for key, m in (("sym", sym), ("same", same))}  # fmt: skip
            times = pair_times(runners, x, args.pairs)
            ratio = statistics.median(b / a for a, b in zip(times["sym"], times["same"], strict=True))
            print(f"| {name} | {engine} | {statistics.median(times['sym']) * 1e3:.2f} | "
                  f"{statistics.median(times['same']) * 1e3:.2f} | {ratio:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
