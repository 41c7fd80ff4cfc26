"""Evaluation batch by batch: ``Accumulator`` keeps a few numbers per sample (not the logits) and builds the
``EvalResult`` at the end; ``evaluate_logits`` does the same for all logits at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .classification import ArrayLike, _as_numpy, _as_tensor, _check_logits_targets, confusion_matrix
from .per_class import per_class_metrics
from .result import EvalResult, Misclassified


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
