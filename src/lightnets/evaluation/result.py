"""The result of an evaluation (``EvalResult``) and its misclassified samples (``Misclassified``), with a JSON
round trip (``to_dict`` / ``from_dict``) that stores non-finite floats as None."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Misclassified:
    """One wrongly classified sample: its id (dataset index unless the caller gave other ids), its file path
    if known, true and predicted class, the softmax probability of the predicted and of the true class, and
    its cross-entropy loss."""

    index: int
    true: int
    pred: int
    confidence: float
    true_prob: float
    loss: float
    path: str | None = None

    def describe(self, class_names: Sequence[str] | None = None) -> str:
        """A one-line caption such as ``true: cat, predicted: dog (87.1%)``."""

        def name(i: int) -> str:
            return str(class_names[i]) if class_names is not None and 0 <= i < len(class_names) else str(i)

        return f"true: {name(self.true)}, predicted: {name(self.pred)} ({100 * self.confidence:.1f}%)"


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class EvalResult:
    """Everything an evaluation produces.  ``top1``/``top5`` are fractions (top-5 is top-min(5, C));
    ``loss`` is the mean cross-entropy; ``confusion`` is ``cm[true, predicted]``; ``per_class`` comes from
    ``per_class_metrics``; ``worst`` holds the misclassified samples with the highest loss, highest first."""

    top1: float
    top5: float
    loss: float
    num_samples: int
    confusion: np.ndarray
    per_class: list[dict[str, Any]]
    class_names: list[str]
    worst: list[Misclassified] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def average(self, kind: str = "macro") -> dict[str, Any]:
        """The ``"macro"`` or ``"weighted"`` average row of ``per_class``."""
        for row in self.per_class:
            if row["kind"] == kind:
                return row
        raise KeyError(f"no {kind!r} average row")

    def summary(self) -> dict[str, Any]:
        """Scalar metrics only, e.g. for a history row or a log line."""
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "num_samples": self.num_samples,
            "macro_f1": self.average("macro")["f1"],
            "weighted_f1": self.average("weighted")["f1"],
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite floats become None)."""
        per_class = [
            {k: (_json_float(v) if isinstance(v, float) else v) for k, v in row.items()}
            for row in self.per_class
        ]
        worst = []
        for m in self.worst:
            d = asdict(m)
            for key in ("confidence", "true_prob", "loss"):
                d[key] = _json_float(d[key])
            worst.append(d)
        return {
            "top1": _json_float(self.top1),
            "top5": _json_float(self.top5),
            "loss": _json_float(self.loss),
            "num_samples": int(self.num_samples),
            "class_names": list(self.class_names),
            "confusion": np.asarray(self.confusion, dtype=np.int64).tolist(),
            "per_class": per_class,
            "worst": worst,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """Inverse of ``to_dict`` (None floats come back as NaN)."""

        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(
            top1=num(d["top1"]),
            top5=num(d["top5"]),
            loss=num(d["loss"]),
            num_samples=int(d["num_samples"]),
            confusion=np.asarray(d["confusion"], dtype=np.int64),
            per_class=[dict(r) for r in d["per_class"]],
            class_names=[str(c) for c in d["class_names"]],
            worst=[
                Misclassified(
                    index=int(w["index"]),
                    true=int(w["true"]),
                    pred=int(w["pred"]),
                    confidence=num(w["confidence"]),
                    true_prob=num(w["true_prob"]),
                    loss=num(w["loss"]),
                    path=w.get("path"),
                )
                for w in d.get("worst", [])
            ],
        )
