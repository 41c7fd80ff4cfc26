"""The model stage of a run: the keyword arguments the model is built with (one rule, used for the check, the
model and every checkpoint), one check that the configuration can train, then the model itself, optionally
from pretrained weights and frozen, wrapped for distributed training, in its memory format and precision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..analysis import count_macs, count_params
from ..data.checks import check_model_config
from ..registry import create_model, get_card
from . import qat
from .config import TrainConfig
from .data_setup import RunData
from .distributed import convert_sync_batchnorm
from .engine import freeze_backbone
from .precision import AmpDecision, decide_amp, rank0_decision, time_steps
from .state import RunContext


@dataclass
class RunModel:
    """The model of a run and how it is run."""

    model: nn.Module  # the model itself (SyncBatchNorm under DDP): what checkpoints save
    net: nn.Module  # what the training step calls: ``model``, or its DistributedDataParallel wrapper
    kwargs: dict[str, Any]  # everything create_model was given; recorded in every checkpoint
    head: str  # the classifier's module name
    card: dict[str, Any]  # name, params, MACs, input size ... for the report
    channels_last: bool
    amp: AmpDecision
    scaler: torch.amp.GradScaler | None  # only for fp16
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (images, logits): QAT's distillation


def small_input(cfg: TrainConfig, size: tuple[int, int]) -> bool:
    """The stem for small images (no early downsampling) is used for inputs of at most 64 px, unless set."""
    return cfg.small_input if cfg.small_input is not None else min(size) <= 64


def weights_arch_kwargs(weights: str | None) -> dict[str, Any]:
    """The architecture keywords of a lightnets checkpoint given as --weights (e.g. ``padding="same"``,
    ``bn_eps`` of a converted TF model): keys alone do not show them, and weights built for them are wrong
    without them.  Class count, input channels and dropout stay the run's own."""
    if weights is None or "://" in weights:
        return {}
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(weights)
    except CheckpointError:
        return {}  # a plain state_dict: nothing recorded
    return {k: v for k, v in ckpt["kwargs"].items() if k not in ("num_classes", "in_chans", "dropout", "small_input")}


def model_kwargs(cfg: TrainConfig, data: RunData) -> dict[str, Any]:
    """Every keyword argument the run's model is built with: the card's, the --weights checkpoint's
    architecture keywords, then the run's own (classes, channels, small_input, --model-arg, --dropout)."""
    kwargs: dict[str, Any] = {"num_classes": len(data.classes), "in_chans": data.splits.in_chans,
                              "small_input": small_input(cfg, data.size), **cfg.model_args}  # fmt: skip
    if cfg.dropout is not None:
        kwargs["dropout"] = cfg.dropout
    return {**get_card(cfg.model).kwargs, **weights_arch_kwargs(cfg.weights), **kwargs}


def _say_input_choices(cfg: TrainConfig, data: RunData, kwargs: dict[str, Any], say: Callable[[str], None]) -> None:
    probe, size = data.splits.probe, data.size
    if probe is not None and probe.small and cfg.input_size is None:
        say(f"small images ({probe.describe()}): training at their native {size[0]}x{size[1]} px "
            f"with small_input={kwargs['small_input']} (override with --input-size / --small-input)")  # fmt: skip
    if probe is not None and probe.gray and data.in_chans is None:
        say("grayscale images: training with 1 input channel (override with --in-chans 3)")


def _wrap(model: nn.Module, ctx: RunContext) -> tuple[nn.Module, nn.Module]:
    """(model, net): under DDP the model gets SyncBatchNorm and the net is its DistributedDataParallel wrapper."""
    device = ctx.device
    model.to(device)
    if not ctx.dist_info.enabled:
        return model, model
    model = convert_sync_batchnorm(model, device).to(device)
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )
    return model, net


def _channels_last(setting: str) -> bool:
    # auto: on.  NHWC is faster for the depthwise convolutions these models are built from, on GPUs (cuDNN)
    # and on CPU (oneDNN): 1.7x (ShuffleNetV2 0.5x) to 2.4x (MobileNetV2 0.35x) per training step at 28 px on
    # the 2-core CI machine (benchmarks/train_speed.py).
    return setting in ("on", "auto")


def setup_model(ctx: RunContext, data: RunData) -> RunModel:
    """Check the configuration once (bad arguments, an input too small or too large for this machine, e.g.
    1x1 maps in batches of one), then build, freeze, wrap and place the model."""
    cfg, size = ctx.cfg, data.size
    kwargs = model_kwargs(cfg, data)
    _say_input_choices(cfg, data, kwargs, ctx.quiet_unless_main())
    check_model_config(cfg.model, kwargs, size, cfg.batch_size, ctx.device)
    weights = qat.weights_file(cfg.weights) if cfg.weights else None  # a run directory stands for its best.pt
    model = create_model(cfg.model, weights=weights, weights_sha256=cfg.weights_sha256,
                         allow_unverified=cfg.allow_unverified, **kwargs)  # fmt: skip
    head = model.classifier_name()
    if cfg.freeze:
        freeze_backbone(model, head)
    card = {
        "name": cfg.model, "kwargs": kwargs, "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "macs": count_macs(model, tuple(size), in_chans=data.splits.in_chans), "input_size": size,
        "preprocessing": data.preprocessing, "classes": len(data.classes), "weights": cfg.weights,
    }  # fmt: skip
    if cfg.qat:  # the fake-quantized graph in fp32, contiguous as traced (qat.py)
        model = qat.wrap_for_qat(model.to(ctx.device), cfg, data.classes, size, data.splits.in_chans, ctx.device,
                                 ctx.dist_info.enabled)  # fmt: skip
        amp = AmpDecision(None, "--qat: fake quantization trains in fp32")
        ctx.say(f"precision {amp.name} ({amp.reason})")
        return RunModel(model, model, kwargs, head, card, False, amp, None, qat.distill_step(model))
    model, net = _wrap(model, ctx)
    channels_last = _channels_last(cfg.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    shape = (cfg.batch_size, data.splits.in_chans, *size)
    timer = None if cfg.freeze else lambda: time_steps(model, shape, len(data.classes), ctx.device, channels_last)
    amp = decide_amp(cfg.amp, ctx.device, get_card(cfg.model).family, timer=timer)
    if ctx.dist_info.enabled and ctx.device.type == "cpu":  # ranks must not decide apart (a probe has no steps)
        amp = rank0_decision(amp)
    ctx.say(f"precision {amp.name} ({amp.reason})")
    scaler = torch.amp.GradScaler(ctx.device.type) if amp.dtype == torch.float16 else None
    return RunModel(model, net, kwargs, head, card, channels_last, amp, scaler)
