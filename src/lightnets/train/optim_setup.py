"""The optimisation stage of a run: the method (train, linear probe, LP-FT), learning rate, weight decay and
head rate (``recipe``'s defaults unless set), the optimizer over ``param_groups``, the weight average, the
training loader and the cosine schedule over its steps, and which BatchNorm layers keep their statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import make_loader
from . import qat, recipe
from .data_setup import RunData
from .engine import all_norms_in_eval, cosine_lr, keep_frozen_norms_in_eval, param_groups
from .model_setup import RunModel, small_input
from .state import RunContext


@dataclass
class Optimisation:
    """How the run's model is fitted."""

    lp_ft: bool  # a linear probe first, then fine-tuning of every layer
    lr: float
    weight_decay: float
    head_lr_mult: float
    optimizer: torch.optim.Optimizer
    ema: Any  # torch.optim.swa_utils.AveragedModel, or None
    crop_scale: tuple[float, float]  # RandomResizedCrop scale (ImageNet-style folders only)
    train_loader: Any
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    after_train_mode: Callable[[nn.Module], None] | None  # puts the norms that keep their statistics in eval

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: a pure function of the step."""
        return cosine_lr(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps, base_lr=self.lr)


def make_ema(model: nn.Module, decay: float) -> Any:
    """An exponential moving average of ``model``'s weights and buffers."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def setup_optimisation(ctx: RunContext, data: RunData, run_model: RunModel) -> Optimisation:
    """The optimizer, schedule and training loader of the run."""
    cfg, world, pretrained = ctx.cfg, ctx.dist_info.world_size, ctx.cfg.weights is not None
    lp_ft = not cfg.freeze and not cfg.qat and (cfg.lp_ft if cfg.lp_ft is not None else pretrained)
    lr = cfg.lr or recipe.default_lr(cfg.optimizer, cfg.batch_size * world, weights=pretrained, lp_ft=lp_ft,
                                     small_input=small_input(cfg, data.size), qat=cfg.qat)  # fmt: skip
    wd = cfg.weight_decay if cfg.weight_decay is not None else 5e-4 if cfg.optimizer == "sgd" else 0.05
    head_mult = cfg.head_lr_mult
    if head_mult is None:
        head_mult = recipe.default_head_lr_mult(weights=pretrained, lp_ft=lp_ft or cfg.freeze or cfg.qat)
    groups = param_groups(run_model.model, lr=lr, weight_decay=wd, head_prefix=run_model.head, head_lr_mult=head_mult)
    ema = make_ema(run_model.model, cfg.ema_decay) if cfg.ema_decay > 0 and not cfg.freeze else None  # a probe: no steps
    crop_scale = recipe.default_crop_scale(weights=pretrained)  # ImageNet-style folders only
    train_loader = make_loader(data.train_ds, batch_size=cfg.batch_size, train=True, preprocessing=data.preprocessing,
                               seed=cfg.seed, rank=ctx.dist_info.rank, world_size=world, num_workers=cfg.workers,
                               device=ctx.device, crop_scale=crop_scale)  # fmt: skip
    steps_per_epoch, total_steps, warmup_steps = recipe.make_schedule(len(train_loader), cfg.epochs, cfg.warmup_epochs)
    # Fine-tuning on a small dataset: batch statistics of a few dozen images are a poor substitute for the
    # pretrained running statistics (and weights with BatchNorm folded into the convs expect BN to be the
    # identity), so by default BatchNorm layers stay in eval mode while their affine parameters still train.
    # QAT too: statistics re-estimated under fake quantization do not fit the float model best.pt holds.
    bn_eval = cfg.bn_eval if cfg.bn_eval is not None else pretrained
    after_train_mode = all_norms_in_eval if bn_eval else keep_frozen_norms_in_eval if cfg.freeze else None
    if cfg.qat:
        after_train_mode = qat.norms_in_eval if bn_eval else None
    return Optimisation(lp_ft, lr, wd, head_mult, _optimizer(cfg.optimizer, groups, lr), ema, crop_scale, train_loader,
                        steps_per_epoch, total_steps, warmup_steps, after_train_mode)  # fmt: skip
