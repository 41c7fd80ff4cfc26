"""Top-k accuracy and the confusion matrix, from logits or predictions and integer targets (numpy arrays or torch
tensors).  The conventions (fractions in [0, 1], ``k`` clipped to the number of classes, ``cm[true, predicted]``)
are those of ``lightnets.evaluation.metrics``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _as_tensor(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_logits_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, num_classes), got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (N,) matching logits (N={logits.shape[0]}), got {tuple(targets.shape)}"
        )
    num_classes = logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}), got range [{int(targets.min())}, {int(targets.max())}]"
        )


def topk_correct(logits: ArrayLike, targets: ArrayLike, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Number of samples whose target is among the ``k`` highest logits, for each requested ``k``.

    Keys are the requested ``k`` values; ``k`` larger than the number of classes is clipped to it.
    """
    logits_t = _as_tensor(logits)
    targets_t = _as_tensor(targets, torch.long).to(logits_t.device)
    _check_logits_targets(logits_t, targets_t)
    ks = tuple(int(k) for k in ks)
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
    if not ks:
        return {}
    num_classes = logits_t.shape[1]
    kmax = min(max(ks), num_classes)
    top = logits_t.topk(kmax, dim=1).indices  # (N, kmax), best first
    hits = top.eq(targets_t[:, None])  # (N, kmax); at most one True per row
    return {k: int(hits[:, : min(k, num_classes)].sum()) for k in ks}


def accuracy(logits: ArrayLike, targets: ArrayLike, k: int = 1) -> float:
    """Top-``k`` accuracy as a fraction in [0, 1] (0.0 for an empty batch)."""
    n = len(targets)
    return topk_correct(logits, targets, (k,))[k] / n if n else 0.0


def confusion_matrix(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> np.ndarray:
    """``int64`` matrix ``cm[true, predicted]`` of sample counts."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = _as_numpy(preds).astype(np.int64).ravel()
    t = _as_numpy(targets).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"preds and targets differ in length: {p.size} vs {t.size}")
    for name, a in (("preds", p), ("targets", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{a.min()}, {a.max()}]")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)
