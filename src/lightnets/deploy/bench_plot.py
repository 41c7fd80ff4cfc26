"""The benchmark's figure: latency against MACs and against memory access cost (``plot_rows``), with
Spearman's rank correlation of each (``spearman``), and the matplotlib helpers it draws with."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..util.figures import new_figure, save_png
from .bench_rows import BenchRow

__all__ = ["new_figure", "plot_rows", "save_png", "spearman"]


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
