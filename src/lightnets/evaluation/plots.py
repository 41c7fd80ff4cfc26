"""The two plots of a training run: the training curves and the confusion matrix, as PNG files.

matplotlib is imported only when a figure is made (``lightnets.util.figures``: an optional ``train`` dependency,
slow to import) and only through its Agg canvas, so no global pyplot state or interactive backend is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..util.figures import new_figure, save_png

PathOrFile = str | os.PathLike | BinaryIO


def _finite(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
    )


def _plain_text(s: str) -> str:
    """Text for matplotlib without mathtext interpretation of ``$``."""
    return s.replace("$", r"\$")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        x = row.get("epoch", i + 1)
        y = row.get(key)
        if _finite(x) and _finite(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in history:
        for k in row:
            seen.setdefault(str(k), None)
    return list(seen)


def _curve_groups(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Panels to draw: loss keys, accuracy keys, learning-rate keys (only those with data)."""
    keys = [k for k in _keys(history) if k != "epoch" and _series(history, k)[0]]
    train_first = {"train": 0, "val": 1, "test": 2}

    def order(k: str) -> tuple[int, str]:
        return train_first.get(k.split("_")[0], 3), k

    loss = sorted((k for k in keys if k.endswith("loss")), key=order)
    acc = sorted((k for k in keys if "acc" in k or "top1" in k or "top5" in k), key=order)
    lr = [k for k in keys if k == "lr" or k.startswith("lr_")]
    groups = [("loss", loss), ("accuracy", acc), ("learning rate", lr)]
    return [(title, ks) for title, ks in groups if ks]


def _draw_panel(ax: Any, history: Sequence[Mapping[str, Any]], title: str, keys: Sequence[str]) -> None:
    """One panel of ``plot_curves``: the series of ``keys``, accuracies in percent, losses on a log axis when
    they span a wide range."""
    scale = 1.0
    if title == "accuracy":
        values = [y for k in keys for y in _series(history, k)[1]]
        scale = 100.0 if max(values) <= 1.0 else 1.0
    for k in keys:
        xs, ys = _series(history, k)
        marker = "o" if len(xs) <= 30 else None
        ax.plot(
            xs,
            [y * scale for y in ys],
            marker=marker,
            markersize=3.5,
            linewidth=1.6,
            label=_plain_text(k),
        )
    if title == "loss":
        # a huge first validation loss (the digits demo starts near 380) flattens every later epoch to a
        # line at 0 on a linear axis; a log axis keeps all of them readable
        ax.set_yscale(_loss_scale([y for k in keys for y in _series(history, k)[1]]))
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel({"accuracy": "accuracy (%)"}.get(title, title))
    if title == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(history: Sequence[Mapping[str, Any]], path: PathOrFile) -> Path | None:
    """PNG of the training curves: one panel each for losses, accuracies and the learning rate.

    Rows are dicts such as ``{"epoch", "train_loss", "train_acc", "val_loss", "val_top1", "lr"}``; missing
    keys, None and non-finite values are skipped, and a row without ``epoch`` counts as epoch ``position + 1``.
    Keys ending in ``loss`` go to the loss panel; keys containing ``acc``, ``top1`` or ``top5`` to the accuracy
    panel, drawn in percent (values are read as fractions unless one exceeds 1, then as percentages).
    Returns the written path (None when ``path`` is a file object).
    """
    groups = _curve_groups(history)
    fig = new_figure(4.3 * max(1, len(groups)), 3.4, dpi=110)
    if not groups:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", fontsize=12, color="0.4")
        ax.set_axis_off()
        return save_png(fig, path)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, groups, strict=True):
        _draw_panel(ax, history, title, keys)
    return save_png(fig, path)


def _loss_scale(values: Sequence[float], max_ratio: float = 30.0) -> str:
    """ "log" when the positive losses span more than ``max_ratio`` (so a linear axis would hide the later
    epochs), else "linear"."""
    if not values or min(values) <= 0:
        return "linear"
    return "log" if max(values) / min(values) > max_ratio else "linear"


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _row_normalized(cm: np.ndarray, normalize: bool) -> np.ndarray:
    """``cm`` as floats, each row divided by its count when ``normalize`` (an empty row stays 0)."""
    if not normalize:
        return cm.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)


def _write_cells(
    ax: Any, data: np.ndarray, cm: np.ndarray, normalize: bool, vmax: float, cell_pt: float
) -> None:
    """The number of every cell written into it (white on dark cells)."""
    text_size = float(np.clip(cell_pt * 0.33, 5.0, 12.0))
    n = data.shape[0]
    for i in range(n):
        for j in range(n):
            v = data[i, j]
            text = f"{v:.2f}" if normalize else f"{int(cm[i, j])}"
            if normalize and v == 0:
                text = "0"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=text_size,
                color="white" if v > 0.55 * vmax else "black",
            )


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: PathOrFile,
    normalize: bool = True,
    title: str | None = None,
) -> Path | None:
    """PNG of a confusion matrix (rows = true class, columns = predicted) with class names on both axes.

    ``normalize=True`` divides each row by its count (the diagonal is then per-class recall; empty rows stay
    0).  The figure grows with the class count and the label font follows the cell size, so 2-100 classes
    stay readable; the numbers are written into the cells up to 20 classes, and beyond 100 classes only every
    n-th tick is labelled.  Long names are shortened with an ellipsis.  Returns the written path (None for a
    file object).
    """
    cm = np.asarray(cm)
    n = len(class_names)
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    data = _row_normalized(cm, normalize)

    side = float(np.clip(2.8 + 0.16 * n, 5.0, 18.0))
    cell_pt = (side - 1.3) / max(n, 1) * 72  # approximate cell size in points (axes ~ side - 1.3 in)
    label_size = float(np.clip(cell_pt * 0.7, 4.0, 10.0))
    fig = new_figure(side + 1.0, side, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    vmax = 1.0 if normalize else max(float(data.max()), 1.0)
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(
        im, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class" if normalize else "count"
    )

    step = max(1, math.ceil(n / 100))
    ticks = np.arange(0, n, step)
    labels = [_plain_text(_short(str(class_names[i]))) for i in ticks]
    ax.set_xticks(
        ticks, labels, fontsize=label_size, rotation=90 if n > 6 else 30, ha="center" if n > 6 else "right"
    )
    ax.set_yticks(ticks, labels, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        _plain_text(title) if title else "confusion matrix" + (" (row-normalized)" if normalize else "")
    )
    if n <= 20:
        _write_cells(ax, data, cm, normalize, vmax, cell_pt)
    return save_png(fig, path)
