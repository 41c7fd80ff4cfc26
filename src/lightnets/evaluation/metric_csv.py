"""CSV files of the evaluation tables: the confusion matrix (class names as header and first column) and the
per-class rows, each with its parser so that a saved run can be read back exactly."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

_CM_CORNER = "true \\ predicted"
_PER_CLASS_FIELDS = ("kind", "index", "class", "precision", "recall", "f1", "support")


def confusion_matrix_csv(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """CSV text: a header row of predicted class names, then one row per true class (its name, then counts).

    Names are quoted by the ``csv`` module as needed, so commas, quotes and newlines in them survive.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(class_names)} class names")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_CM_CORNER, *map(str, class_names)])
    for name, row in zip(class_names, cm, strict=True):
        writer.writerow([str(name), *(int(v) for v in row)])
    return buf.getvalue()


def parse_confusion_matrix_csv(text: str) -> tuple[np.ndarray, list[str]]:
    """Inverse of ``confusion_matrix_csv``: ``(cm, class_names)``."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError("empty confusion-matrix CSV")
    names = rows[0][1:]
    body = rows[1:]
    if [r[0] for r in body] != names:
        raise ValueError("row names of the confusion-matrix CSV differ from its column names")
    cm = np.array([[int(v) for v in r[1:]] for r in body], dtype=np.int64).reshape(len(names), len(names))
    return cm, names


def per_class_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of ``per_class_metrics`` rows (columns kind, index, class, precision, recall, f1, support).

    Floats are written with ``repr`` so they read back exactly; an average row has an empty ``index``.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_PER_CLASS_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in _PER_CLASS_FIELDS})
    return buf.getvalue()


def parse_per_class_csv(text: str) -> list[dict[str, Any]]:
    """Inverse of ``per_class_csv``."""
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        out.append(
            {
                "kind": r["kind"],
                "index": int(r["index"]) if r["index"] != "" else None,
                "class": r["class"],
                "precision": float(r["precision"]),
                "recall": float(r["recall"]),
                "f1": float(r["f1"]),
                "support": int(r["support"]),
            }
        )
    return out
