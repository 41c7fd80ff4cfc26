"""Training defaults that scale with the data: a schedule is decided in optimizer steps, not epochs.

With a fixed batch of 128, a 245-image photo folder gets two optimizer steps per epoch and a one-epoch
warm-up is half of a ten-epoch run; the same settings on Fashion-MNIST's 54,000 images give 422 steps per
epoch and a warm-up of 2 %.  Here the batch shrinks for small training sets so an epoch is at least about 16
steps, and the warm-up is capped at a tenth of the run's steps; the learning rate follows the batch (linear
scaling).  Everything is a pure function of (data size, settings), recorded in the run's config.json.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# the largest default batch, and the smallest (below it BatchNorm-free heads still train, but CPU throughput
# per image drops steeply)
MAX_BATCH, MIN_BATCH = 128, 16
MIN_STEPS_PER_EPOCH = 16
# warm-up never longer than this fraction of the run's steps
MAX_WARMUP_FRACTION = 0.1
# lr at batch 256 (scaled linearly with the batch): SGD from scratch, plain fine-tuning (new head at 10x),
# and the fine-tuning stage of LP-FT (head already fitted, every layer at the same, lower, rate; 0.04 lowered
# ants/bees val from the 94.1 % start head to 91.5 / 91.5 / 90.2 %, 0.004 with the milder crops below keeps
# 94.8 / 94.8 / 94.1 %: docs/benchmarks.md)
SGD_LR_SCRATCH, SGD_LR_FINE_TUNE, SGD_LR_LP_FT = 0.1, 0.01, 0.004
# from scratch on small native-resolution images (small_input: 28-64 px, total stride 8): 0.4 at batch 256, i.e.
# 0.2 at the default batch of 128 -- the Fashion-MNIST 10- / 40-minute runs (docs/benchmarks.md) and the
# side-by-side lr runs there; 0.1 (Goyal et al. 2017's rate for ImageNet at 224 px) stays for large inputs
SGD_LR_SCRATCH_SMALL = 0.4
ADAMW_LR = 1e-3
# quantization-aware fine-tuning of a trained model (train/qat.py): a hundredth of the from-scratch rate (a tenth
# of plain fine-tuning's), for both optimizers: the weights only have to absorb int8 rounding, not learn.  One
# epoch at it kept a digits run's fake-quantized val top-1 at the source's 88.8 %; other
# rates were not compared
QAT_LR_FRACTION = 0.01
# RandomResizedCrop area range: torchvision's (0.08, 1) from scratch; from pretrained weights a milder one
CROP_SCALE_SCRATCH, CROP_SCALE_PRETRAINED = (0.08, 1.0), (0.25, 1.0)


def default_batch_size(num_train: int, world_size: int = 1) -> int:
    """Per-process batch: MAX_BATCH for large training sets; for small ones the largest power of two
    (>= MIN_BATCH) that still gives about MIN_STEPS_PER_EPOCH steps per epoch; never more than the data."""
    per_step = num_train / (MIN_STEPS_PER_EPOCH * max(1, world_size))
    if per_step >= MAX_BATCH:
        return MAX_BATCH
    batch = max(MIN_BATCH, 2 ** int(math.floor(math.log2(max(per_step, 1.0)))))
    return max(1, min(batch, num_train // max(1, world_size)))  # a handful of images: one batch of all


def default_lr(
    optimizer: str, global_batch: int, *, weights: bool, lp_ft: bool, small_input: bool = False, qat: bool = False
) -> float:
    """Base learning rate for ``optimizer`` at ``global_batch`` (linear scaling from batch 256)."""
    scale = global_batch / 256
    if qat:
        return (ADAMW_LR if optimizer == "adamw" else SGD_LR_SCRATCH) * QAT_LR_FRACTION * scale
    if optimizer == "adamw":
        return ADAMW_LR * scale
    if not weights:
        return (SGD_LR_SCRATCH_SMALL if small_input else SGD_LR_SCRATCH) * scale
    return (SGD_LR_LP_FT if lp_ft else SGD_LR_FINE_TUNE) * scale


def default_head_lr_mult(*, weights: bool, lp_ft: bool) -> float:
    """A new random head learns 10x faster than the pretrained body; a head fitted by the probe does not."""
    return 10.0 if weights and not lp_ft else 1.0


def default_crop_scale(*, weights: bool) -> tuple[float, float]:
    """Training crops' area range (ImageNet-style folders).  From pretrained weights crops keep at least a
    quarter of the photo: with 8 %-area crops, LP-FT on ants/bees lost 2-3 points of val accuracy in 3 epochs
    at the same learning rate, with (0.25, 1) it kept the start head's accuracy (docs/benchmarks.md)."""
    return CROP_SCALE_PRETRAINED if weights else CROP_SCALE_SCRATCH


class Schedule(NamedTuple):
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def make_schedule(steps_per_epoch: int, epochs: int, warmup_epochs: float) -> Schedule:
    """Steps of the run and of its warm-up: ``warmup_epochs`` worth of steps, at most MAX_WARMUP_FRACTION of
    the run (at least one step when a warm-up is asked for)."""
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    if warmup_epochs > 0:
        warmup = max(1, min(warmup, math.floor(MAX_WARMUP_FRACTION * total)))
    return Schedule(steps_per_epoch, total, warmup)
