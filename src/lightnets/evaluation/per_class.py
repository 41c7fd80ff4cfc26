"""Per-class tables from a confusion matrix: precision / recall / F1 / support with the macro and weighted
averages, and the most confused (true, predicted) pairs.  Zero division gives 0.0 (scikit-learn's
``zero_division=0``), as ``lightnets.evaluation.metrics`` states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def per_class_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support for each class, followed by the macro and weighted averages.

    Each row is ``{"kind", "index", "class", "precision", "recall", "f1", "support"}``; ``kind`` is
    ``"class"`` for the per-class rows, then ``"macro"`` (unweighted mean over all classes) and
    ``"weighted"`` (mean weighted by support); the average rows have ``index`` None and ``support`` = total.
    Zero division gives 0.0 (see the module docstring).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} class names for a {n}-class confusion matrix")
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        fp, fn = predicted[i] - tp[i], support[i] - tp[i]
        rows.append(
            {
                "kind": "class",
                "index": i,
                "class": names[i],
                "precision": _safe_div(tp[i], predicted[i]),
                "recall": _safe_div(tp[i], support[i]),
                "f1": _safe_div(2 * tp[i], 2 * tp[i] + fp + fn),
                "support": int(support[i]),
            }
        )
    total = int(support.sum())
    columns = {
        key: np.array([r[key] for r in rows], dtype=np.float64) for key in ("precision", "recall", "f1")
    }
    macro = {key: float(col.mean()) for key, col in columns.items()}
    weighted = {key: (float((col * support).sum() / total) if total else 0.0) for key, col in columns.items()}
    rows.append({"kind": "macro", "index": None, "class": "macro avg", **macro, "support": total})
    rows.append({"kind": "weighted", "index": None, "class": "weighted avg", **weighted, "support": total})
    return rows


def most_confused(
    cm: np.ndarray, class_names: Sequence[str] | None = None, n: int = 10
) -> list[dict[str, Any]]:
    """The ``n`` largest off-diagonal cells, largest first: ``{"true", "pred", "true_name", "pred_name",
    "count", "fraction"}`` where ``fraction`` is the share of the true class's samples (ties: row-major)."""
    cm = np.asarray(cm, dtype=np.int64)
    names = [str(i) for i in range(cm.shape[0])] if class_names is None else [str(c) for c in class_names]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.flatnonzero(off)
    order = flat[np.argsort(-off.ravel()[flat], kind="stable")][:n]
    support = cm.sum(axis=1)
    out = []
    for f in order:
        t, p = divmod(int(f), cm.shape[1])
        out.append(
            {
                "true": t,
                "pred": p,
                "true_name": names[t],
                "pred_name": names[p],
                "count": int(cm[t, p]),
                "fraction": _safe_div(cm[t, p], support[t]),
            }
        )
    return out
