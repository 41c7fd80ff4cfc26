"""Measured speed: latency and throughput of registered models, with their MACs and memory access cost.

``benchmark`` times every combination of models x batch sizes x input sizes x thread counts x engines and
returns one ``BenchRow`` each.  The protocol (the one timm's ``benchmark.py`` popularised, made time-based):

* every case is warmed up first (``warmup`` calls, which also lets oneDNN / cuDNN pick and cache kernels);
* the timed calls are *interleaved*: the cases take turns in ``rounds`` rounds, so a burst of load from another
  process on a shared machine lands on all of them instead of skewing one;
* each case runs until it has both ``repeats`` calls and ``min_time_s`` seconds of timed calls; every call is
  timed on its own (``time.perf_counter``; on CUDA with ``torch.cuda.synchronize`` before and after);
* rows report the median latency with its spread (quartiles and 10th / 90th percentiles) and the throughput
  ``batch / latency`` (images/s), never the mean, which one descheduled call can move.

MACs and memory access cost (ShuffleNetV2's "MAC") are ``lightnets.analysis.profile`` totals for one image
(batch 1) at the benchmarked input size, so the rows can show how well each predicts latency; ``plot_rows``
draws that picture.

Engines come from ``lightnets.deploy`` (``ENGINES`` / ``make_runner``: eager PyTorch, an optimised TorchScript
path, onnxruntime, ...).  Without that module only ``"eager"`` (plain ``model(x)`` under inference mode) is
available.  Thread counts are applied with ``torch.set_num_threads`` around each case (and restored afterwards)
and passed to the runner, which forwards them to its runtime.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

InputSize = int | tuple[int, int]

#: Defaults of ``benchmark`` (and of ``lightnets bench``).
DEFAULT_WARMUP = 5
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_REPEATS = 10
DEFAULT_ROUNDS = 3


# ------------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class Timing:
    """Summary of per-call latencies in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        if not samples_ms:
            raise ValueError("no timing samples")
        p10, q1, med, q3, p90 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [10, 25, 50, 75, 90])
        return cls(
            median_ms=float(med), q1_ms=float(q1), q3_ms=float(q3), p10_ms=float(p10), p90_ms=float(p90),
            min_ms=float(min(samples_ms)), max_ms=float(max(samples_ms)), repeats=len(samples_ms),
        )  # fmt: skip


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(threads)`` (``None``: leave as is); restores the old value.
    Yields the thread count in effect."""
    old = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@dataclass
class TimedCall:
    """One thing to time: ``fn()`` (its result is ignored), under ``threads``, synchronising ``cuda`` if set."""

    fn: Callable[[], Any]
    threads: int | None = None
    cuda: bool = False


def _check_timing_args(warmup: int, min_time_s: float, repeats: int, rounds: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if not isinstance(min_time_s, int | float) or not min_time_s >= 0:
        raise ValueError(f"min_time_s must be a number >= 0, got {min_time_s!r}")
    for name, value in (("repeats", repeats), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def time_interleaved(
    calls: Sequence[TimedCall],
    *,
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    repeats: int = DEFAULT_REPEATS,
    rounds: int = DEFAULT_ROUNDS,
) -> list[Timing]:
    """Time several calls fairly against each other; one ``Timing`` per call, in order.

    Each call is warmed up, then the calls take turns for ``rounds`` rounds; in each round a call runs until it
    has ``ceil(repeats / rounds)`` timed calls and ``min_time_s / rounds`` seconds of them, so in total every
    call gets at least ``repeats`` calls and ``min_time_s`` seconds.
    """
    _check_timing_args(warmup, min_time_s, repeats, rounds)
    per_round_calls = math.ceil(repeats / rounds)
    per_round_time = min_time_s / rounds
    samples: list[list[float]] = [[] for _ in calls]

    def once(call: TimedCall) -> float:
        if call.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call.fn()
        if call.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    for call in calls:
        with num_threads(call.threads):
            for _ in range(warmup):
                once(call)
    for _ in range(rounds):
        for call, out in zip(calls, samples, strict=True):
            with num_threads(call.threads):
                n, spent = 0, 0.0
                while n < per_round_calls or spent < per_round_time * 1e3:
                    ms = once(call)
                    out.append(ms)
                    n, spent = n + 1, spent + ms
    return [Timing.from_samples(s) for s in samples]


def time_function(
    fn: Callable[[], Any],
    *,
    threads: int | None = None,
    cuda: bool = False,
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    repeats: int = DEFAULT_REPEATS,
) -> Timing:
    """Latency of one call of ``fn`` (see ``time_interleaved``, here with a single call and one round)."""
    return time_interleaved(
        [TimedCall(fn, threads, cuda)], warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=1
    )[0]


# ------------------------------------------------------------------------------------------------ engines
class EagerRunner:
    """``model(x)`` in eval mode under ``torch.inference_mode``: the baseline every other engine is compared to.
    Same interface as ``lightnets.deploy`` runners (callable, ``name``, ``engine``)."""

    engine = "eager"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", name: str | None = None) -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.name = name or type(model).__name__

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device, non_blocking=True))


def _deploy() -> Any | None:
    try:
        from . import engines as deploy
    except ImportError:
        return None
    return deploy if hasattr(deploy, "make_runner") and hasattr(deploy, "ENGINES") else None


def known_engines() -> list[str]:
    """Every engine name: ``lightnets.deploy.ENGINES``, or just ``["eager"]`` without that module."""
    deploy = _deploy()
    names = list(deploy.ENGINES) if deploy is not None else []
    return names if "eager" in names else ["eager", *names]


def available_engines() -> list[str]:
    """The engines that can run here (their packages are installed)."""
    deploy = _deploy()
    if deploy is None:
        return ["eager"]
    names = list(deploy.available_engines()) if hasattr(deploy, "available_engines") else list(deploy.ENGINES)
    return names if "eager" in names else ["eager", *names]


def check_engine(engine: str) -> None:
    """ValueError for an unknown engine or one whose packages are missing."""
    if engine not in known_engines():
        hint = "" if _deploy() is not None else " (lightnets.deploy is not available, so only 'eager' is)"
        raise ValueError(f"unknown engine {engine!r}; engines: {known_engines()}{hint}")
    if engine not in available_engines():
        raise ValueError(
            f"engine {engine!r} cannot run here (its package is not installed); available: {available_engines()}"
        )


def make_runner(
    model: nn.Module,
    engine: str,
    *,
    input_shape: tuple[int, int, int, int],
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A runner for ``engine``: ``lightnets.deploy.make_runner`` on CPU (a local eager runner without that
    module); on CUDA only the eager engine is supported."""
    device = torch.device(device)
    check_engine(engine)
    if device.type != "cpu":
        if engine != "eager":
            raise ValueError(f"engine {engine!r} is benchmarked on CPU only; use engine 'eager' on {device}")
        return EagerRunner(model, device)
    deploy = _deploy()
    if deploy is not None and engine in deploy.ENGINES:
        return deploy.make_runner(model, engine, input_shape=input_shape, threads=threads)
    return EagerRunner(model, device)


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` or ``cuda[:N]``; CUDA only when asked for and available (ValueError otherwise)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    return dev


# ------------------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class BenchRow:
    """One measured case.  Latencies in milliseconds per batch; throughput in images per second.

    ``macs`` and ``memory_access_cost`` are per image (batch 1) at this input size (``analysis.profile``
    totals); ``threads`` is PyTorch's intra-op thread count in effect, which is also the count passed to the
    runner when one was asked for (with ``threads=None`` an onnxruntime / OpenVINO runner uses its own default).
    """

    model: str
    engine: str
    device: str
    batch_size: int
    input_h: int
    input_w: int
    threads: int
    params: int
    macs: int
    memory_access_cost: int
    latency_ms: float  # median
    latency_ms_q1: float
    latency_ms_q3: float
    latency_ms_p10: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_max: float
    repeats: int
    images_per_s: float  # batch_size / median latency
    images_per_s_p10: float  # batch_size / 90th percentile latency (slow calls)
    images_per_s_p90: float  # batch_size / 10th percentile latency (fast calls)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow))


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
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must contain positive integers, got {v!r}")
    return values


def _models(
    models: Sequence[str] | Mapping[str, nn.Module] | str,
) -> list[tuple[str, Callable[[], nn.Module], int]]:
    """(label, builder, default input size) for each model."""
    from ..registry import create_model, get_card

    if isinstance(models, str):
        models = [models]
    if isinstance(models, Mapping):
        out = [(name, (lambda m=m: copy.deepcopy(m)), 224) for name, m in models.items()]
    else:
        out = [(name, (lambda n=name: create_model(n)), get_card(name).input_size) for name in models]
    if not out:
        raise ValueError("no models to benchmark")
    return out


def benchmark(
    models: Sequence[str] | Mapping[str, nn.Module] | str,
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

    ``models``: registered names (``create_model(name)`` with the card's defaults) or a ``{label: module}``
    mapping.  An input size of ``None`` means the model card's size.  ``threads=None`` leaves torch's thread
    count as it is.  Timing protocol: see the module docstring (``time_interleaved``).  Weights are random
    (seeded), which does not change the work done.
    """
    dev = resolve_device(device)
    batch_sizes = _positive_ints("batch_sizes", batch_sizes)
    threads = _positive_ints("threads", threads, allow_none=True)
    engines = list(engines)
    if not engines:
        raise ValueError("engines must not be empty")
    for engine in engines:
        check_engine(engine)
    if not list(input_sizes):
        raise ValueError("input_sizes must not be empty")
    _check_timing_args(warmup, min_time_s, repeats, rounds)
    from ..analysis import count_params, profile

    cases: list[tuple[dict[str, Any], TimedCall]] = []
    gen = torch.Generator().manual_seed(seed)
    for label, build, default_size in _models(models):
        torch.manual_seed(seed)
        base = build().eval()
        in_chans = next(m.in_channels for m in base.modules() if isinstance(m, nn.Conv2d))
        params = count_params(base)
        for size in input_sizes:
            h, w = _hw(default_size if size is None else size)
            totals = profile(base, input_size=(h, w), batch_size=1).totals
            for batch in batch_sizes:
                x = torch.randn(batch, in_chans, h, w, generator=gen).to(dev)
                for engine in engines:
                    for n in threads:
                        with num_threads(n) as effective:
                            runner = make_runner(
                                copy.deepcopy(base), engine, input_shape=(batch, in_chans, h, w), threads=n,
                                device=dev,
                            )  # fmt: skip
                        info = {
                            "model": label, "engine": engine, "device": str(dev), "batch_size": batch,
                            "input_h": h, "input_w": w, "threads": effective, "params": params,
                            "macs": totals.macs, "memory_access_cost": totals.memory_access_cost,
                        }  # fmt: skip
                        call = TimedCall(lambda r=runner, x=x: r(x), threads=n, cuda=dev.type == "cuda")
                        cases.append((info, call))
    timings = time_interleaved(
        [c for _, c in cases], warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=rounds
    )
    rows = []
    for (info, _), t in zip(cases, timings, strict=True):
        b = info["batch_size"]
        rows.append(
            BenchRow(
                **info,
                latency_ms=t.median_ms,
                latency_ms_q1=t.q1_ms,
                latency_ms_q3=t.q3_ms,
                latency_ms_p10=t.p10_ms,
                latency_ms_p90=t.p90_ms,
                latency_ms_min=t.min_ms,
                latency_ms_max=t.max_ms,
                repeats=t.repeats,
                images_per_s=b * 1e3 / t.median_ms,
                images_per_s_p10=b * 1e3 / t.p90_ms,
                images_per_s_p90=b * 1e3 / t.p10_ms,
            )  # fmt: skip
        )
    return rows


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


# ------------------------------------------------------------------------------------------------ output
def rows_to_csv(rows: Sequence[BenchRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    for r in rows:
        writer.writerow([getattr(r, f) for f in ROW_FIELDS])
    return buf.getvalue()


def rows_to_json(
    rows: Sequence[BenchRow], env: Mapping[str, Any] | None = None, indent: int | None = 2
) -> str:
    """``{"environment": ..., "units": ..., "rows": [...]}``."""
    units = {
        "latency_ms*": "milliseconds per batch",
        "images_per_s*": "images per second",
        "macs": "multiply-accumulates per image (batch 1)",
        "memory_access_cost": "ShuffleNetV2's MAC: elements read + written per image (batch 1)",
    }
    return json.dumps(
        {"environment": dict(env or {}), "units": units, "rows": [r.as_dict() for r in rows]}, indent=indent
    )


# (header with unit, cell) for the text table
_TABLE: tuple[tuple[str, Callable[[BenchRow], str]], ...] = (
    ("model", lambda r: r.model),
    ("engine", lambda r: r.engine),
    ("batch", lambda r: str(r.batch_size)),
    ("input (px)", lambda r: f"{r.input_h}x{r.input_w}"),
    ("threads", lambda r: str(r.threads)),
    ("MACs (M/img)", lambda r: f"{r.macs / 1e6:.1f}"),
    ("mem. access (M elem/img)", lambda r: f"{r.memory_access_cost / 1e6:.2f}"),
    ("latency median (ms)", lambda r: f"{r.latency_ms:.3f}"),
    ("latency IQR (ms)", lambda r: f"{r.latency_ms_q1:.3f}-{r.latency_ms_q3:.3f}"),
    ("latency p10-p90 (ms)", lambda r: f"{r.latency_ms_p10:.3f}-{r.latency_ms_p90:.3f}"),
    ("throughput (img/s)", lambda r: f"{r.images_per_s:.1f}"),
    ("calls", lambda r: str(r.repeats)),
)


def format_rows(rows: Sequence[BenchRow], fmt: str = "table", env: Mapping[str, Any] | None = None) -> str:
    """Rows as an aligned text table (units in the headers), GitHub markdown, CSV or JSON."""
    if fmt == "csv":
        return rows_to_csv(rows)
    if fmt == "json":
        return rows_to_json(rows, env)
    headers = [h for h, _ in _TABLE]
    body = [[cell(r) for _, cell in _TABLE] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose table, markdown, csv or json")
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(headers), line(["-" * w for w in widths]), *map(line, body)]
    if env:
        out.append(
            f"torch {env.get('torch')}, {env.get('cpu')}, {env.get('device')}; "
            f"load average (1 min) {env.get('loadavg_1m')}; latency = median over the timed calls"
        )
    return "\n".join(out)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks); nan with fewer than 3 points or no variation."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) < 3:
        return float("nan")

    def ranks(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        order = a.argsort(kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for value in np.unique(a):  # average ranks of ties
            tie = a == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'lightnets[train]'") from None
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        fig.savefig(out, format="png", metadata={"Software": None})
    return out


def _series_key(r: BenchRow) -> str:
    return f"{r.engine}, batch {r.batch_size}, {r.input_h}x{r.input_w}, {r.threads} thr"


def plot_rows(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """Latency against MACs (left) and against memory access cost (right), one labelled point per model and
    one colour per (engine, batch, input size, threads).  The titles give Spearman's rank correlation of
    latency with each cost measure over the first series: the picture that shows why FLOPs mislead."""
    if not rows:
        raise ValueError("no rows to plot")
    series: dict[str, list[BenchRow]] = {}
    for r in rows:
        series.setdefault(_series_key(r), []).append(r)
    fig = new_figure(12, 5.5)
    axes = fig.subplots(1, 2)
    first = next(iter(series.values()))
    for ax, attr, xlabel, scale in (
        (axes[0], "macs", "MACs per image (millions)", 1e6),
        (axes[1], "memory_access_cost", "memory access cost per image (million elements)", 1e6),
    ):
        for key, group in series.items():
            xs = [getattr(r, attr) / scale for r in group]
            ys = [r.latency_ms for r in group]
            err = [
                [r.latency_ms - r.latency_ms_q1 for r in group],
                [r.latency_ms_q3 - r.latency_ms for r in group],
            ]
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=key)
            for r, xv, yv in zip(group, xs, ys, strict=True):
                ax.annotate(r.model, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
        rho = spearman([getattr(r, attr) for r in first], [r.latency_ms for r in first])
        what = "MACs" if attr == "macs" else "memory access cost"
        ax.set_title(
            f"latency vs {what} (Spearman rho {rho:.2f})" if math.isfinite(rho) else f"latency vs {what}"
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("median latency (ms per batch; bars: IQR)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    return save_png(fig, path)
