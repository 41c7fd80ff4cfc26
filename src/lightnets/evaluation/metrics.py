"""Evaluation metrics: top-k accuracy, confusion matrix, per-class precision / recall / F1.

Pure functions that take numpy arrays or torch tensors and return data (ints, arrays, dicts, dataclasses);
plotting and the HTML report live in ``lightnets.evaluation.report``.

Conventions used throughout:

- Accuracies are fractions in [0, 1], not percentages.
- ``k`` in top-k is clipped to the number of classes, so "top-5" of a 3-class problem is top-3 (always 1.0).
- Confusion matrices are ``int64`` with rows = true class and columns = predicted class.
- Zero division gives 0.0: a class that is never predicted has precision 0.0, a class with no samples has
  recall 0.0, and F1 = 2 TP / (2 TP + FP + FN) is 0.0 when TP + FP + FN = 0 (scikit-learn's
  ``zero_division=0``).  Macro averages are taken over *all* classes, including ones absent from the data.
- The evaluation loss is the plain cross-entropy of the logits (no label smoothing), averaged per sample.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


class Accumulator:
    """Collects per-sample results batch by batch and builds an ``EvalResult`` at the end.

    Full logits are not kept: per sample it stores id, target, prediction, loss, the probabilities of the
    predicted and the true class and a top-5 hit flag (about 40 bytes, so 100k samples take ~4 MB), plus the
    path when one is given.  The per-sample statistics are computed on the logits' device; only the small
    per-sample vectors move to the CPU.  Sample ids default to the running position (0, 1, 2, ... in
    ``update`` order), which is the dataset index for an unshuffled loader.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, worst_n: int = 16) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if worst_n < 0:
            raise ValueError(f"worst_n must be >= 0, got {worst_n}")
        names = [str(i) for i in range(num_classes)] if class_names is None else [str(c) for c in class_names]
        if len(names) != num_classes:
            raise ValueError(f"got {len(names)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = names
        self.worst_n = worst_n
        self.reset()

    def reset(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("ids", "targets", "preds", "loss", "conf", "true_prob", "top5")
        }
        self._paths: list[str | None] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @torch.no_grad()
    def update(
        self,
        logits: ArrayLike,
        targets: ArrayLike,
        ids: ArrayLike | None = None,
        paths: Sequence[str | None] | None = None,
    ) -> None:
        """Add one batch: ``logits`` (N, C), integer ``targets`` (N,), optional sample ids and file paths."""
        logits_t = _as_tensor(logits).float()
        targets_t = _as_tensor(targets, torch.long).to(logits_t.device)
        _check_logits_targets(logits_t, targets_t)
        if logits_t.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits_t.shape[1]} classes, expected {self.num_classes}")
        n = logits_t.shape[0]
        if ids is None:
            ids_np = np.arange(self._count, self._count + n, dtype=np.int64)
        else:
            ids_np = _as_numpy(ids).astype(np.int64).ravel()
            if ids_np.size != n:
                raise ValueError(f"got {ids_np.size} ids for a batch of {n}")
        if paths is not None and len(paths) != n:
            raise ValueError(f"got {len(paths)} paths for a batch of {n}")

        log_probs = F.log_softmax(logits_t, dim=1)
        pred = logits_t.argmax(dim=1)
        true_logp = log_probs.gather(1, targets_t[:, None]).squeeze(1)
        k = min(5, self.num_classes)
        top5 = logits_t.topk(k, dim=1).indices.eq(targets_t[:, None]).any(dim=1)
        stats = {
            "targets": targets_t,
            "preds": pred,
            "loss": -true_logp,
            "conf": log_probs.gather(1, pred[:, None]).squeeze(1).exp(),
            "true_prob": true_logp.exp(),
            "top5": top5,
        }
        for key, value in stats.items():
            self._parts[key].append(value.cpu().numpy())
        self._parts["ids"].append(ids_np)
        self._paths.extend(paths if paths is not None else [None] * n)
        self._count += n

    def _cat(self, key: str, dtype: Any) -> np.ndarray:
        parts = self._parts[key]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    def compute(
        self, paths_by_id: Sequence[str | None] | Mapping[int, str | None] | None = None
    ) -> EvalResult:
        """The ``EvalResult`` over everything added so far.

        ``paths_by_id`` (e.g. the file list of the dataset, indexed by sample id) fills in the paths of the
        worst samples that ``update`` got no path for, so paths need not travel with every batch.
        """
        targets = self._cat("targets", np.int64)
        preds = self._cat("preds", np.int64)
        loss = self._cat("loss", np.float64)
        n = int(targets.size)
        cm = confusion_matrix(preds, targets, self.num_classes)
        return EvalResult(
            top1=float((preds == targets).mean()) if n else 0.0,
            top5=float(self._cat("top5", bool).mean()) if n else 0.0,
            loss=float(loss.mean()) if n else 0.0,
            num_samples=n,
            confusion=cm,
            per_class=per_class_metrics(cm, self.class_names),
            class_names=list(self.class_names),
            worst=self._worst(targets, preds, loss, paths_by_id),
        )

    def _worst(
        self,
        targets: np.ndarray,
        preds: np.ndarray,
        loss: np.ndarray,
        paths_by_id: Sequence[str | None] | Mapping[int, str | None] | None,
    ) -> list[Misclassified]:
        ids = self._cat("ids", np.int64)
        conf = self._cat("conf", np.float64)
        true_prob = self._cat("true_prob", np.float64)
        wrong = np.flatnonzero(preds != targets)
        # highest loss first; ties by ascending sample id so the order does not depend on batching
        order = wrong[np.lexsort((ids[wrong], -loss[wrong]))][: self.worst_n]

        def path(i: int) -> str | None:
            if self._paths[i] is not None or paths_by_id is None:
                return self._paths[i]
            try:
                found = paths_by_id[int(ids[i])]
            except (IndexError, KeyError):
                return None
            return None if found is None else str(found)

        return [
            Misclassified(
                index=int(ids[i]),
                true=int(targets[i]),
                pred=int(preds[i]),
                confidence=float(conf[i]),
                true_prob=float(true_prob[i]),
                loss=float(loss[i]),
                path=path(i),
            )
            for i in order
        ]


def evaluate_logits(
    logits: ArrayLike,
    targets: ArrayLike,
    class_names: Sequence[str] | None = None,
    ids: ArrayLike | None = None,
    paths: Sequence[str | None] | None = None,
    worst_n: int = 16,
) -> EvalResult:
    """One-shot ``EvalResult`` from all logits at once (same as one ``Accumulator.update`` + ``compute``)."""
    logits_t = _as_tensor(logits)
    if logits_t.ndim != 2 or logits_t.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, num_classes), got {tuple(logits_t.shape)}")
    acc = Accumulator(int(logits_t.shape[1]), class_names, worst_n=worst_n)
    acc.update(logits_t, targets, ids=ids, paths=paths)
    return acc.compute()


# --------------------------------------------------------------------------------------------- CSV files
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
