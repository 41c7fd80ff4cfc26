"""The pieces of a training loop, each small enough to read at a glance: the learning-rate schedule (a pure
function of the step), parameter groups (no weight decay on norm and bias; a larger rate for a new head),
freezing, one training step and epoch, and evaluation over batches that carry their sample ids.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..evaluation.metrics import Accumulator, EvalResult

CPU = torch.device("cpu")


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``final_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * progress))


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_prefix: str | None = None,
    head_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer groups: weight decay only on conv / linear weights (not norm parameters or biases), and the
    classifier (``head_prefix``) at ``lr * head_lr_mult``.  Frozen parameters are left out.  Each group
    records its ``lr_mult`` so the schedule can scale it."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = head_prefix is not None and (name == head_prefix or name.startswith(head_prefix + "."))
        decay = p.ndim > 1  # weights of conv / linear layers; norms and biases are 1-D
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        mult = head_lr_mult if is_head else 1.0
        out.append(
            {"params": params, "lr": lr * mult, "lr_mult": mult, "weight_decay": weight_decay if decay else 0.0}
        )
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def freeze_backbone(model: nn.Module, head_prefix: str) -> int:
    """Freeze every parameter outside the classifier; returns how many tensors were frozen."""
    frozen = 0
    for name, p in model.named_parameters():
        if not (name == head_prefix or name.startswith(head_prefix + ".")):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are all frozen keep their running statistics (eval mode), so a frozen
    backbone really is unchanged by fine-tuning."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def all_norms_in_eval(model: nn.Module) -> None:
    """Every BatchNorm layer uses (and keeps) its running statistics; affine parameters still train."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar for one epoch, or None when stdout or stderr is not a terminal (CI, ``> log``, nohup): there a
    bar's carriage-return frames would flood the log, and the one line per epoch the run prints says it all."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="batch")


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    step: int,
    label_smoothing: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    extra_loss: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch (already on ``device``); returns (loss, logits), both detached.
    ``extra_loss(images, logits)``, when given, is added to the cross-entropy (QAT's distillation)."""
    with autocast_context(device, amp_dtype):
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        if extra_loss is not None:
            loss = loss + extra_loss(images, logits)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    lr_at: Any,
    label_smoothing: float = 0.0,
    device: torch.device = CPU,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: Any = None,
    after_train_mode: Any = None,
    extra_loss: Any = None,
) -> dict[str, Any]:
    """One pass over ``loader``.  ``lr_at(step)`` gives the learning rate of each step.  Returns the mean loss,
    accuracy, images/s and the step reached.  ``progress`` (a tqdm bar or None) is updated per batch."""
    model.train()
    if after_train_mode is not None:
        after_train_mode(model)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    start = time.perf_counter()
    for images, targets in loader:
        set_lr(optimizer, lr_at(step))
        targets = targets.to(device, non_blocking=True)
        loss, logits = _step(model, optimizer, _to_device(images, device, channels_last), targets, step=step,
                             label_smoothing=label_smoothing, device=device, amp_dtype=amp_dtype, scaler=scaler,
                             extra_loss=extra_loss)  # fmt: skip
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        n = len(targets)
        seen += n
        loss_sum += loss.double().cpu() * n
        correct += (logits.argmax(1) == targets).sum().cpu()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(
                loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}",
                img_s=f"{seen / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False,
            )  # fmt: skip
    return {"loss_sum": loss_sum.item(), "correct": int(correct.item()), "seen": seen,
            "seconds": time.perf_counter() - start, "step": step}  # fmt: skip


class _Indexed(torch.utils.data.Dataset):
    """Wraps a file dataset so each item also carries its index (kept through skipped unreadable files)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        return None if item is None else (*item, i)


def with_indices(dataset: Any) -> _Indexed:
    return _Indexed(dataset)


@dataclass
class IdBatches:
    """A loader whose batches say which samples they hold: it yields (images, targets, ids).

    ``yields_ids`` states what ``loader`` yields: (images, targets, ids) (a ``with_indices`` dataset, whose ids
    are dataset indices kept through skipped unreadable files), or (images, targets), whose ids are then their
    positions in loader order (the dataset indices, for an unshuffled loader).  The loader's maker knows which;
    nothing downstream has to guess from the length of a batch."""

    loader: Iterable[Any]
    yields_ids: bool

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        offset = 0
        for batch in self.loader:
            if self.yields_ids:
                images, targets, ids = batch
            else:
                images, targets = batch
                ids = torch.arange(offset, offset + len(targets))
            offset += len(targets)
            yield images, targets, ids

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def batches_with_ids(loader: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, targets, ids) of an ``IdBatches``; any other loader yields (images, targets), ids = positions."""
    return iter(loader if isinstance(loader, IdBatches) else IdBatches(loader, yields_ids=False))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    class_names: list[str],
    *,
    device: torch.device = CPU,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    worst_n: int = 16,
    paths_by_id: Any = None,
) -> EvalResult:
    """Top-1 / top-5, loss, confusion matrix, per-class metrics and the worst misclassified samples.

    Sample ids come from ``loader`` when it is an ``IdBatches`` (``lightnets.train.eval_loader`` makes one), else
    a plain loader of (images, targets) is numbered by position in loader order."""
    was_training = model.training
    model.eval()
    acc = Accumulator(len(class_names), class_names, worst_n=worst_n)
    try:
        for images, targets, ids in batches_with_ids(loader):
            images = _to_device(images, device, channels_last)
            with autocast_context(device, amp_dtype):
                logits = model(images)
            acc.update(logits.float(), targets.to(device), ids=ids)
    finally:
        model.train(was_training)
    return acc.compute(paths_by_id=paths_by_id)
