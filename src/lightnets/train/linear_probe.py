"""A linear probe: the classifier of a pretrained network fitted on its frozen features, to convergence.

With a frozen backbone every training step recomputes the same features, so SGD over epochs of images spends
almost all its time re-deriving a fixed tensor and, in a short run, stops far from the optimum of what it
trains (a multinomial logistic regression).  Here each image goes through the backbone once (eval
transform, BatchNorm on its running statistics), the pooled features (``forward_head(pre_logits=True)``) are
kept as one tensor, and the head is fitted by full-batch L-BFGS on that tensor, once per weight decay of a
small grid; the validation split picks the weight decay.  The same fit is the first stage of
linear-probe-then-fine-tune (LP-FT, Kumar et al. 2022, arXiv:2202.10054), where fine-tuning then starts from a
head that already fits instead of a random one that distorts the pretrained features while it catches up.

Features are standardised (train mean / std) for the fit, which makes L-BFGS well conditioned and one weight
decay grid fit any backbone; the fitted weights are folded back so the head acts on raw features and the
checkpoint is an ordinary one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..evaluation.metrics import Accumulator, EvalResult
from .engine import batches_with_ids

# L2 penalty 0.5 * wd * ||W||^2 (on standardised features) added to the mean cross-entropy.  The grid spans
# "barely regularised" to "strongly shrunk" (each fit takes milliseconds for a few thousand images and
# warm-starts from the previous one); on 245 ants/bees photos x 1024 ShuffleNetV2 features validation
# accuracy was flat from 1e-4 to 1e-1 and chose 1e-3 (see docs/benchmarks.md).
WEIGHT_DECAY_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
# used when there is no validation split to choose with
DEFAULT_WEIGHT_DECAY = 1e-2


@dataclass
class Features:
    """Pooled features of one split: ``x`` (N, D) float32, ``y`` (N,) labels, ``ids`` (N,) dataset indices."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor
    seconds: float


@dataclass
class ProbeFit:
    """The chosen head (acting on raw features) and how it was chosen."""

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    weight_decay: float
    train_loss: float  # mean cross-entropy on the training features, without the penalty
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    grid: list[dict[str, float]] = field(default_factory=list)  # one row per weight decay tried


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Features:
    """One eval-mode pass of ``loader`` through ``model.forward_features`` and the pooling of its head.

    Sample ids as ``engine.batches_with_ids`` gives them (an ``IdBatches`` carries them; else positions)."""
    was_training = model.training
    model.eval()
    xs, ys, ids = [], [], []
    start = time.perf_counter()
    try:
        for images, targets, batch_ids in batches_with_ids(loader):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                feats = model.forward_head(model.forward_features(images), pre_logits=True)
            xs.append(feats.float().cpu())
            ys.append(targets.cpu())
            ids.append(batch_ids.cpu())
    finally:
        model.train(was_training)
    if not xs:
        raise ValueError("no images to extract features from")
    return Features(torch.cat(xs), torch.cat(ys).long(), torch.cat(ids).long(), time.perf_counter() - start)


def _lbfgs(
    z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, wd: float, max_iter: int, smoothing: float
) -> None:
    """Minimise mean CE(z w^T + b, y) + 0.5 wd ||w||^2 in place (strictly convex for wd > 0)."""
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y, label_smoothing=smoothing) + 0.5 * wd * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w.requires_grad_(False)
    b.requires_grad_(False)


def fit_logistic(
    train: Features,
    num_classes: int,
    weight_decay: float,
    *,
    max_iter: int = 500,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised ``train`` features; returns (weight, bias) in the
    standardised space (see ``fold_standardisation``).  ``init`` warm-starts from a previous solution."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    mean, std = _stats(train.x)
    z = (train.x - mean) / std
    d = z.shape[1]
    w = init[0].clone() if init is not None else torch.zeros(num_classes, d)
    b = init[1].clone() if init is not None else torch.zeros(num_classes)
    _lbfgs(z, train.y, w, b, weight_decay, max_iter, label_smoothing)
    return w, b


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)


def fold_standardisation(
    w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) acting on (x - mean) / std, rewritten to act on x: the head stays one ordinary Linear layer."""
    w_raw = w / std
    return w_raw, b - w_raw @ mean


def _score(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    logits = x @ w.T + b
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def select_and_fit(
    train: Features,
    val: Features | None,
    num_classes: int,
    grid: Sequence[float] = WEIGHT_DECAY_GRID,
    *,
    select_by: str = "accuracy",
    label_smoothing: float = 0.0,
) -> ProbeFit:
    """Fit the head for each weight decay (strongest first, each warm-started from the last) and keep the one
    with the best validation accuracy, ties to the lower validation loss (``select_by="accuracy"``), or the
    lowest validation loss (``"loss"``: the best-calibrated head, the start LP-FT needs); without a
    validation split, the fit with ``DEFAULT_WEIGHT_DECAY``."""
    if select_by not in ("accuracy", "loss"):
        raise ValueError(f"select_by must be accuracy or loss, got {select_by!r}")
    grid = sorted(grid, reverse=True) if val is not None else [DEFAULT_WEIGHT_DECAY]
    mean, std = _stats(train.x)
    rows, best, state = [], None, None
    for wd in grid:
        state = fit_logistic(train, num_classes, wd, init=state, label_smoothing=label_smoothing)
        w_raw, b_raw = fold_standardisation(*state, mean, std)
        tr_loss, tr_acc = _score(train.x, train.y, w_raw, b_raw)
        va_loss, va_acc = _score(val.x, val.y, w_raw, b_raw) if val is not None else (math.nan, math.nan)
        rows.append({"weight_decay": wd, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss,
                     "val_acc": va_acc})  # fmt: skip
        key = ((va_acc, -va_loss) if select_by == "accuracy" else (-va_loss, va_acc)) if val is not None else (0.0, 0.0)
        if best is None or key > best[0]:
            best = (key, wd, w_raw, b_raw, tr_loss, tr_acc, va_loss, va_acc)
    assert best is not None
    _, wd, w_raw, b_raw, tr_loss, tr_acc, va_loss, va_acc = best
    has_val = val is not None
    return ProbeFit(w_raw, b_raw, wd, tr_loss, tr_acc, va_loss if has_val else None, va_acc if has_val else None,
                    rows)  # fmt: skip


def set_head(model: nn.Module, fit: ProbeFit) -> None:
    """Copy the fitted weights into the model's classifier (an ``nn.Linear``)."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear) or head.weight.shape != fit.weight.shape:
        raise ValueError(f"the classifier must be a Linear of shape {tuple(fit.weight.shape)}, got {head}")
    with torch.no_grad():
        head.weight.copy_(fit.weight.to(head.weight))
        head.bias.copy_(fit.bias.to(head.bias))


def eval_result(
    feats: Features, fit: ProbeFit, class_names: list[str], paths_by_id: Any = None, worst_n: int = 16
) -> EvalResult:
    """The full evaluation (confusion matrix, per-class metrics, worst samples) of the fitted head on cached
    features: the same numbers ``engine.evaluate`` gives for the model, without another pass over images."""
    acc = Accumulator(len(class_names), class_names, worst_n=worst_n)
    acc.update(feats.x @ fit.weight.T + fit.bias, feats.y, ids=feats.ids)
    return acc.compute(paths_by_id=paths_by_id)


@dataclass
class ProbeOutcome:
    """A fitted head (already copied into the model) and its validation result, with the probe's cost."""

    fit: ProbeFit
    val: EvalResult | None
    images: int  # images passed through the backbone (train + val)
    seconds: float
    train_features: Features
    val_features: Features | None
    start_fit: ProbeFit | None = None  # LP-FT: the head fine-tuning starts from, when not ``fit`` (see refit)


def run_probe(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None,
    class_names: list[str],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    select_by: str = "accuracy",
) -> ProbeOutcome:
    """Features of the training (eval transform) and validation images, one pass each; the head fitted and
    chosen on them (see ``select_and_fit``) and copied into ``model``; its validation result computed from the
    cached features."""
    start = time.perf_counter()
    kw: dict[str, Any] = {"device": device, "amp_dtype": amp_dtype, "channels_last": channels_last}
    train = extract_features(model, train_loader, **kw)
    val = extract_features(model, val_loader, **kw) if val_loader is not None else None
    fit = select_and_fit(train, val, len(class_names), select_by=select_by)
    set_head(model, fit)
    result = eval_result(val, fit, class_names) if val is not None else None
    images = len(train.y) + (len(val.y) if val is not None else 0)
    return ProbeOutcome(fit, result, images, time.perf_counter() - start, train, val)


def refit(model: nn.Module, outcome: ProbeOutcome, select_by: str) -> ProbeFit:
    """Choose again on the cached features with another criterion and copy that head into ``model``."""
    fit = select_and_fit(outcome.train_features, outcome.val_features, outcome.fit.weight.shape[0],
                         select_by=select_by)  # fmt: skip
    set_head(model, fit)
    return fit


# ----------------------------------------------------------------------------------------- as a run's stage


def probe_stage(model: nn.Module, train_loader: Any, val_loader: Any, classes: list[str], device: torch.device,
                amp_dtype: torch.dtype | None, channels_last: bool, dist_info: Any, lp_ft: bool,
                save_best: Callable[[Any], None] | None = None) -> ProbeOutcome | None:  # fmt: skip
    """The linear probe on rank 0 (the only rank with the validation split), its head sent to every rank.

    The most accurate head on validation is the probe's result (``save_best`` stores it).  Fine-tuning then
    starts from the head with the lowest validation loss instead: the most accurate one is usually barely
    regularised, and its large weights send gradients into the backbone that wreck it in the first steps
    (ants/bees: val 95 % -> 63 % after one epoch; the calibrated head fine-tunes smoothly)."""
    probed = None
    if dist_info.is_main:
        probed = run_probe(model, train_loader, val_loader, classes, device=device, amp_dtype=amp_dtype,
                           channels_last=channels_last)  # fmt: skip
        if save_best is not None:
            save_best(probed)
        if lp_ft:
            probed.start_fit = refit(model, probed, "loss")
    if dist_info.enabled:
        for p in model.get_classifier().parameters():
            torch.distributed.broadcast(p.data, 0)
    return probed


def probe_stats(probed: Any, main: bool) -> dict[str, Any]:
    """The probe as train_one_epoch's statistics (zeros on ranks other than 0, which did not run it)."""
    if not main:
        return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "step": 0}
    n, fit = probed.images, probed.fit
    return {"loss_sum": fit.train_loss * n, "correct": fit.train_acc * n, "seen": n, "seconds": probed.seconds,
            "step": 0}  # fmt: skip


def probe_row(probed: Any, epoch: int, elapsed: float) -> dict[str, Any]:
    """The probe as a row of the run's history (metrics.csv), ``elapsed`` being the run's time before it."""
    fit = probed.fit
    row: dict[str, Any] = {"epoch": epoch, "lr": 0.0, "train_loss": fit.train_loss, "train_acc": fit.train_acc,
                           "images_per_s": probed.images / probed.seconds, "epoch_seconds": probed.seconds}  # fmt: skip
    if probed.val is not None:
        row.update({"val_loss": probed.val.loss, "val_top1": probed.val.top1, "val_top5": probed.val.top5})
    row["elapsed_s"] = elapsed + probed.seconds
    return row
