"""Run the lab: build, profile and time every configuration of an experiment (interleaved, so drift in the
machine's speed hits every configuration alike), then compare with the paper."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...deploy.bench import TimedCall, Timing, environment, resolve_device, time_interleaved
from .agreement import compare_orderings, median_noise
from .experiments import _DEFINITIONS, Experiment, experiment
from .report import plot_experiment
from .results import ConfigResult, ExperimentResult, LabResult
from .tables import EXPERIMENTS, INPUT_SIZE, NUM_BLOCKS, PLATFORMS

#: Timing and size used by ``quick=True`` (for tests and smoke runs; numbers then mean little).
QUICK = {"input_size": 8, "warmup": 1, "min_time_s": 0.0, "repeats": 3, "rounds": 1}


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _prepare(
    exp: Experiment, dev: torch.device, threads: int | None, batch_size: int, input_size: int
) -> tuple[list[TimedCall], list[tuple[int, int, int]]]:
    """Build every configuration's network; return a timed call per network (on ``dev``, random input) and its
    ``(params, macs, memory_access_cost)`` for one image, profiled on the CPU before the move."""
    from ..profile import count_params, profile

    calls, costs = [], []
    for cfg in exp.configs:
        net = cfg.build().eval()
        totals = profile(net, input_size=input_size, batch_size=1).totals
        costs.append((count_params(net), totals.macs, totals.memory_access_cost))
        net = net.to(dev)
        x = torch.randn(batch_size, cfg.in_channels, input_size, input_size, device=dev)

        def forward(net: nn.Module = net, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)

        calls.append(TimedCall(forward, threads=threads, cuda=dev.type == "cuda"))
    return calls, costs


def _time_with_cudnn_benchmark(calls: Sequence[TimedCall], **timing: Any) -> list[Timing]:
    """``time_interleaved`` with cuDNN's autotuner on, as the paper "activates the benchmarking function of
    CUDNN"; the previous setting is restored."""
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        return time_interleaved(calls, **timing)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _config_results(
    exp: Experiment, timings: Sequence[Timing], costs: Sequence[tuple[int, int, int]], batch_size: int
) -> list[ConfigResult]:
    """One result per configuration: its costs, speeds and both ratios to the experiment's first."""
    speeds = [1e3 / t.median_ms for t in timings]
    return [
        ConfigResult(
            label=cfg.label,
            description=cfg.description,
            params=params,
            macs=macs,
            memory_access_cost=memory_access_cost,
            timing=t,
            batches_per_s=s,
            images_per_s=s * batch_size,
            paper_speed=cfg.paper_speed,
            measured_ratio=s / speeds[0],
            paper_ratio=cfg.paper_speed / exp.configs[0].paper_speed,
        )  # fmt: skip
        for cfg, t, s, (params, macs, memory_access_cost) in zip(
            exp.configs, timings, speeds, costs, strict=True
        )
    ]


def run_experiment(
    key: str,
    *,
    setting: str = "gpu",
    device: str | torch.device = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    input_size: int = INPUT_SIZE,
    warmup: int = 5,
    min_time_s: float = 2.0,
    repeats: int = 20,
    rounds: int = 5,
    seed: int = 0,
) -> ExperimentResult:
    """Build, profile and time every configuration of one experiment (configurations interleaved)."""
    exp = experiment(key, setting)
    dev = resolve_device(device)
    _check_positive("batch_size", batch_size)
    _check_positive("input_size", input_size)
    torch.manual_seed(seed)
    calls, costs = _prepare(exp, dev, threads, batch_size, input_size)
    timings = _time_with_cudnn_benchmark(
        calls, warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=rounds
    )
    results = _config_results(exp, timings, costs, batch_size)
    agreement = compare_orderings(
        [c.label for c in results],
        [c.batches_per_s for c in results],
        [c.paper_speed for c in results],
        relative_noise=[median_noise(t) for t in timings],
    )
    effective_threads = threads if threads is not None else torch.get_num_threads()
    return ExperimentResult(
        key=exp.key, guideline=exp.guideline, paper_table=exp.paper_table, setting=setting,
        platform=PLATFORMS[setting], paper_unit=exp.paper_unit, device=str(dev), batch_size=batch_size,
        input_size=input_size, threads=effective_threads if dev.type == "cpu" else 0, num_blocks=NUM_BLOCKS,
        configs=results, agreement=agreement,
    )  # fmt: skip


def run_guidelines(
    experiments: Sequence[str] = EXPERIMENTS,
    *,
    setting: str = "gpu",
    device: str | torch.device = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    quick: bool = False,
    out: str | os.PathLike | None = None,
    **timing: Any,
) -> LabResult:
    """Run the chosen experiments; with ``out``, save one PNG per experiment (and nothing else) there.

    Defaults are the paper's settings (56 x 56 input, 10 blocks, batch 1; see the module docstring).
    ``quick=True`` uses ``QUICK`` (an 8 x 8 input and three timed calls) so that tests run in a second;
    ``timing`` overrides ``warmup`` / ``min_time_s`` / ``repeats`` / ``rounds`` / ``input_size``.
    """
    keys = [k.upper() for k in experiments]
    for k in keys:
        if k not in _DEFINITIONS:
            raise ValueError(f"unknown experiment {k!r}; choose from {list(EXPERIMENTS)}")
    settings = {**(QUICK if quick else {}), **timing}
    results = [
        run_experiment(k, setting=setting, device=device, threads=threads, batch_size=batch_size, **settings)
        for k in keys
    ]
    plots = {}
    if out is not None:
        for r in results:
            plots[r.key] = str(plot_experiment(r, Path(out) / f"guideline_{r.key}_{r.setting}.png"))
    return LabResult(environment(device), quick, results, plots)
