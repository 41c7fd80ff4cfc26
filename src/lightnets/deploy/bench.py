"""Measured speed: latency and throughput of registered models, with their MACs and memory access cost.

``benchmark`` times every combination of models x batch sizes x input sizes x thread counts x engines and
returns one ``BenchRow`` each.  The protocol (the one timm's ``benchmark.py`` popularised, made time-based):

every case is warmed up, then the cases are timed *interleaved* (``lightnets.deploy.timing``); rows report the
median latency with its spread (quartiles and 10th / 90th percentiles) and the throughput ``batch / latency``
(images/s).  Rows are written by ``lightnets.deploy.bench_rows`` (``format_rows``) and drawn by
``lightnets.deploy.bench_plot`` (``plot_rows``); both are importable from here too.

MACs and memory access cost (ShuffleNetV2's "MAC") are ``lightnets.analysis.profile`` totals for one image
(batch 1) at the benchmarked input size, so the rows can show how well each predicts latency; ``plot_rows``
draws that picture.

Engines are those of ``lightnets.deploy.engines`` (``ENGINES`` / ``make_runner``: eager PyTorch, an optimised
TorchScript path, onnxruntime, ...); on CUDA only ``"eager"`` runs.  Thread counts are applied with ``torch.set_num_threads`` around each case (and restored afterwards)
and passed to the runner, which forwards them to its runtime.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.layers import check_positive_int
from ..util.device import resolve_device as _resolve_device
from .bench_plot import new_figure, plot_rows, save_png, spearman
from .bench_rows import ROW_FIELDS, BenchRow, format_rows, rows_to_csv, rows_to_json
from .engines import ENGINES, available_engines, check_engine, make_runner, torch_threads
from .timing import (
    DEFAULT_MIN_TIME_S,
    DEFAULT_REPEATS,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    TimedCall,
    Timing,
    check_timing_args,
    time_function,
    time_interleaved,
)

__all__ = [
    "DEFAULT_MIN_TIME_S",
    "DEFAULT_REPEATS",
    "DEFAULT_ROUNDS",
    "DEFAULT_WARMUP",
    "ENGINES",
    "ROW_FIELDS",
    "BenchRow",
    "TimedCall",
    "Timing",
    "available_engines",
    "benchmark",
    "environment",
    "expand_models",
    "format_rows",
    "latency_column",
    "new_figure",
    "plot_rows",
    "resolve_device",
    "rows_to_csv",
    "rows_to_json",
    "save_png",
    "spearman",
    "time_function",
    "time_interleaved",
]

InputSize = int | tuple[int, int]


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` or ``cuda[:N]`` (no ``auto``: a benchmark row names the device it measured)."""
    return _resolve_device(device, allow_auto=False, kinds=("cpu", "cuda"))


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where the numbers were measured: versions, processor, threads, load average (a shared machine's load
    changes results, so it is recorded with them)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _hw(size: InputSize) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if isinstance(h, bool) or not isinstance(h, int) or not isinstance(w, int) or h <= 0 or w <= 0:
        raise ValueError(f"input size must be a positive int or (height, width), got {size!r}")
    return h, w


def _positive_ints(name: str, values: Sequence[Any], allow_none: bool = False) -> list[Any]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if not (v is None and allow_none):
            check_positive_int(f"each of {name}", v)
    return values


def expand_models(patterns: str | Sequence[str]) -> list[str]:
    """Registered names for model names and glob patterns (``"mobilenet_v3_*"``), in order, each once.

    A pattern that matches nothing is a ValueError; a plain name is kept as given (an unknown one fails when
    it is built, with the registry's "did you mean" hint)."""
    from ..registry import list_models

    names: list[str] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        matched = list_models(pattern) if any(ch in pattern for ch in "*?[") else [pattern]
        if not matched:
            raise ValueError(f"no registered model matches {pattern!r}")
        names += [n for n in matched if n not in names]
    return names


def _models(
    patterns: str | Sequence[str] | Mapping[str, nn.Module],
) -> list[tuple[str, Callable[[], nn.Module], int]]:
    """(label, builder, default input size) for each model."""
    from ..registry import create_model, get_card

    if isinstance(patterns, Mapping):
        out = [(name, (lambda m=m: copy.deepcopy(m)), 224) for name, m in patterns.items()]
    else:
        out = [(name, (lambda n=name: create_model(n)), get_card(name).input_size) for name in expand_models(patterns)]
    if not out:
        raise ValueError("no models to benchmark")
    return out


@dataclass(frozen=True)
class _Grid:
    """The settings every model is measured at (checked), and where."""

    batch_sizes: list[int]
    input_sizes: list[InputSize | None]
    threads: list[int | None]
    engines: list[str]
    device: torch.device


def _grid(
    batch_sizes: Sequence[int], input_sizes: Sequence[InputSize | None], threads: Sequence[int | None],
    engines: Sequence[str], device: str | torch.device,
) -> _Grid:
    dev = resolve_device(device)
    grid = _Grid(
        _positive_ints("batch_sizes", batch_sizes), list(input_sizes),
        _positive_ints("threads", threads, allow_none=True), list(engines), dev,
    )  # fmt: skip
    if not grid.engines:
        raise ValueError("engines must not be empty")
    for engine in grid.engines:
        check_engine(engine)
        if dev.type != "cpu" and engine != "eager":
            raise ValueError(f"engine {engine!r} is benchmarked on CPU only; use engine 'eager' on {dev}")
    if not grid.input_sizes:
        raise ValueError("input_sizes must not be empty")
    return grid


def _runner(
    model: nn.Module, engine: str, shape: tuple[int, int, int, int], threads: int | None, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine layer's runner on CPU; on CUDA (eager only) ``model(x)`` on the device under inference mode."""
    if device.type == "cpu":
        return make_runner(model, engine, input_shape=shape, threads=threads)
    model = model.eval().to(device)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x.to(device, non_blocking=True))

    return run


def _model_cases(
    label: str, base: nn.Module, default_size: int, grid: _Grid, gen: torch.Generator
) -> list[tuple[dict[str, Any], TimedCall]]:
    """(row fields, call to time) for one model at every grid point."""
    from ..analysis import count_params, profile

    in_chans = next(m.in_channels for m in base.modules() if isinstance(m, nn.Conv2d))
    params, dev = count_params(base), grid.device
    cases = []
    for size in grid.input_sizes:
        h, w = _hw(default_size if size is None else size)
        totals = profile(base, input_size=(h, w), batch_size=1).totals
        for batch in grid.batch_sizes:
            x = torch.randn(batch, in_chans, h, w, generator=gen).to(dev)
            for engine in grid.engines:
                for n in grid.threads:
                    with torch_threads(n):
                        effective = torch.get_num_threads()
                        runner = _runner(copy.deepcopy(base), engine, (batch, in_chans, h, w), n, dev)
                    info = {
                        "model": label, "engine": engine, "device": str(dev), "batch_size": batch,
                        "input_h": h, "input_w": w, "threads": effective, "params": params,
                        "macs": totals.macs, "memory_access_cost": totals.memory_access_cost,
                    }  # fmt: skip
                    call = TimedCall(lambda r=runner, x=x: r(x), threads=n, cuda=dev.type == "cuda")
                    cases.append((info, call))
    return cases


def _row(info: dict[str, Any], t: Timing) -> BenchRow:
    b = info["batch_size"]
    return BenchRow(
        **info, latency_ms=t.median_ms, latency_ms_q1=t.q1_ms, latency_ms_q3=t.q3_ms, latency_ms_p10=t.p10_ms,
        latency_ms_p90=t.p90_ms, latency_ms_min=t.min_ms, latency_ms_max=t.max_ms, repeats=t.repeats,
        images_per_s=b * 1e3 / t.median_ms, images_per_s_p10=b * 1e3 / t.p90_ms,
        images_per_s_p90=b * 1e3 / t.p10_ms,
    )  # fmt: skip


def benchmark(
    patterns: str | Sequence[str] | Mapping[str, nn.Module],
    *,
    batch_sizes: Sequence[int] = (1,),
    input_sizes: Sequence[InputSize | None] = (224,),
    threads: Sequence[int | None] = (None,),
    engines: Sequence[str] = ("eager",),
    device: str | torch.device = "cpu",
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    repeats: int = DEFAULT_REPEATS,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
) -> list[BenchRow]:
    """Measure every model x batch size x input size x thread count x engine; one row each.

    ``patterns``: registered names or glob patterns over them (``"shufflenet_v2_*"``, expanded by
    ``expand_models``; built with ``create_model(name)`` and the card's defaults), or a ``{label: module}``
    mapping.  An input size of ``None`` means the model card's size.  ``threads=None`` leaves torch's thread
    count as it is.  Timing protocol: see ``lightnets.deploy.timing``.  Weights are random (seeded), which
    does not change the work done.
    """
    grid = _grid(batch_sizes, input_sizes, threads, engines, device)
    check_timing_args(warmup, min_time_s, repeats, rounds)
    cases: list[tuple[dict[str, Any], TimedCall]] = []
    gen = torch.Generator().manual_seed(seed)
    for label, build, default_size in _models(patterns):
        torch.manual_seed(seed)
        cases += _model_cases(label, build().eval(), default_size, grid, gen)
    timings = time_interleaved(
        [c for _, c in cases], warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=rounds
    )
    return [_row(info, t) for (info, _), t in zip(cases, timings, strict=True)]


def latency_column(
    names: Sequence[str],
    *,
    input_size_per_model: Mapping[str, InputSize] | Callable[[str], InputSize] | None = None,
    threads: int | None = 2,
    engine: str = "eager",
    min_time_s: float = DEFAULT_MIN_TIME_S,
) -> dict[str, float]:
    """Median batch-1 latency (ms) of each model, for the README's model table.

    ``input_size_per_model`` maps a name to its input size (a mapping or a function; default: each model
    card's ``input_size``).  All models are measured in one interleaved run.
    """
    from ..registry import get_card

    names = list(names)
    groups: dict[tuple[int, int], list[str]] = {}
    for name in names:
        if input_size_per_model is None:
            size: InputSize = get_card(name).input_size
        elif callable(input_size_per_model):
            size = input_size_per_model(name)
        else:
            size = input_size_per_model.get(name, get_card(name).input_size)
        groups.setdefault(_hw(size), []).append(name)
    out: dict[str, float] = {}
    for size, group in groups.items():
        rows = benchmark(
            group, input_sizes=(size,), threads=(threads,), engines=(engine,), min_time_s=min_time_s
        )
        out.update({r.model: r.latency_ms for r in rows})
    return {name: out[name] for name in names}
