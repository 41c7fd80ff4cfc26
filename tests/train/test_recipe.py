"""Defaults that scale with the data: batch, warm-up in steps (capped), learning rates, and the amp table."""

from __future__ import annotations

import pytest
import torch

from lightnets.train import recipe
from lightnets.train.engine import cosine_lr
from lightnets.train.precision import CPU_BF16_BY_FAMILY, cpu_has_native_bf16, decide_amp

CPU = torch.device("cpu")


def test_batch_size_shrinks_for_small_training_sets() -> None:
    assert recipe.default_batch_size(54_000) == 128  # Fashion-MNIST keeps its batch
    assert recipe.default_batch_size(2048) == 128
    assert recipe.default_batch_size(1000) == 32
    assert recipe.default_batch_size(245) == 16  # ants/bees: 15 steps per epoch instead of 2
    assert recipe.default_batch_size(20) == recipe.MIN_BATCH
    assert recipe.default_batch_size(10) == 10  # fewer images than the smallest batch: one batch of all
    assert recipe.default_batch_size(2048, world_size=2) == 64


def test_warmup_is_counted_in_steps_and_capped() -> None:
    # the Fashion-MNIST 10-minute recipe: 422 steps x 11 epochs, half an epoch of warm-up, unchanged
    assert recipe.make_schedule(422, 11, 0.5) == (422, 4642, 211)
    # a tiny folder: one epoch of warm-up would be a third of a 3-epoch run; capped at a tenth
    assert recipe.make_schedule(15, 3, 1.0) == (15, 45, 4)
    assert recipe.make_schedule(2, 1, 1.0).warmup_steps == 1  # never zero when asked for
    assert recipe.make_schedule(10, 5, 0.0).warmup_steps == 0


def test_schedule_is_a_pure_function_of_the_step() -> None:
    steps, total, warmup = recipe.make_schedule(15, 4, 1.0)
    lrs = [cosine_lr(s, total_steps=total, warmup_steps=warmup, base_lr=0.1) for s in range(total)]
    assert lrs == [cosine_lr(s, total_steps=total, warmup_steps=warmup, base_lr=0.1) for s in range(total)]
    assert lrs[:warmup] == sorted(lrs[:warmup]) and lrs[warmup - 1] == pytest.approx(0.1)
    assert lrs[warmup:] == sorted(lrs[warmup:], reverse=True) and lrs[-1] < 0.01


def test_learning_rates() -> None:
    assert recipe.default_lr("sgd", 128, weights=False, lp_ft=False) == 0.05
    # from scratch on small native-resolution inputs: the Fashion-MNIST recipe's 0.2 at batch 128
    assert recipe.default_lr("sgd", 128, weights=False, lp_ft=False, small_input=True) == 0.2
    assert recipe.default_lr("sgd", 128, weights=True, lp_ft=True, small_input=True) == recipe.SGD_LR_LP_FT / 2
    assert recipe.default_lr("sgd", 256, weights=True, lp_ft=False) == recipe.SGD_LR_FINE_TUNE
    assert recipe.default_lr("sgd", 256, weights=True, lp_ft=True) == recipe.SGD_LR_LP_FT
    assert recipe.default_lr("adamw", 512, weights=True, lp_ft=True) == 2e-3
    assert recipe.default_head_lr_mult(weights=True, lp_ft=False) == 10.0
    assert recipe.default_head_lr_mult(weights=True, lp_ft=True) == 1.0


def test_crop_scale_is_milder_from_pretrained_weights_and_reaches_the_loader(tmp_path) -> None:
    from PIL import Image

    from lightnets.data import ImageFolder, make_loader
    from lightnets.data.transforms import RandomResizedCrop, make_preprocessing

    assert recipe.default_crop_scale(weights=False) == (0.08, 1.0)
    assert recipe.default_crop_scale(weights=True)[0] > 0.08
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / cls / "x.png")
    ds, pp = ImageFolder(tmp_path), make_preprocessing("imagenet", 32)

    def crop_scale(**kw) -> tuple[float, float]:
        loader = make_loader(ds, batch_size=2, train=True, preprocessing=pp, **kw)
        return next(s.scale for s in loader.dataset.transform.steps if isinstance(s, RandomResizedCrop))

    assert crop_scale() == (0.08, 1.0)
    assert crop_scale(crop_scale=(0.25, 1.0)) == (0.25, 1.0)


def test_amp_auto_decision_table() -> None:
    with_bf16 = "processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n"
    assert cpu_has_native_bf16(with_bf16) and not cpu_has_native_bf16("flags : fpu sse avx2 avx512f\n")
    for family, row in CPU_BF16_BY_FAMILY.items():
        got = decide_amp("auto", CPU, family, native_bf16=True)
        assert (got.dtype == torch.bfloat16) == row.bf16_on_cpu, family
        assert family in got.reason
    assert decide_amp("auto", CPU, "mobilenet_v1", native_bf16=True).name == "bf16"
    assert decide_amp("auto", CPU, "shufflenet_v2", native_bf16=True).name == "fp32"
    assert decide_amp("auto", CPU, "mobilenet_v2", native_bf16=False).name == "fp32"  # emulated bf16 is slow
    assert decide_amp("auto", CPU, "someone_new", native_bf16=True).name == "fp32"  # unmeasured: fp32
    assert decide_amp("off", CPU, "mobilenet_v1", native_bf16=True).dtype is None
    assert decide_amp("bf16", CPU, "shufflenet_v2", native_bf16=False).dtype == torch.bfloat16


def test_amp_auto_keeps_bf16_only_where_this_models_step_is_faster() -> None:
    from lightnets.train import precision

    faster = decide_amp("auto", CPU, "mobilenet_v1", native_bf16=True, timer=lambda: (0.20, 0.10))
    slower = decide_amp("auto", CPU, "mobilenet_v1", native_bf16=True, timer=lambda: (0.10, 0.11))
    close = decide_amp("auto", CPU, "mobilenet_v2", native_bf16=True, timer=lambda: (0.102, 0.100))
    assert faster.name == "bf16" and "200 ms fp32, 100 ms bf16" in faster.reason
    assert slower.name == "fp32" and "not faster" in slower.reason
    assert close.name == "fp32"  # within BF16_MIN_GAIN: numerics are not changed for 2 %
    # too slow to time (None): the family row decides; a family whose row says fp32 is never timed
    assert decide_amp("auto", CPU, "mobilenet_v1", native_bf16=True, timer=lambda: None).name == "bf16"
    assert decide_amp("auto", CPU, "shufflenet_v2", native_bf16=True, timer=lambda: 1 / 0).name == "fp32"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp32_s, bf16_s = precision.time_steps(model, (8, 1, 8, 8), 3, CPU, channels_last=False)
    assert fp32_s > 0 and bf16_s > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # timed on a copy
