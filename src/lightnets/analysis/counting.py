"""Whole-model counts: parameters and multiply-accumulates (MACs) of one forward pass.

MACs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-accumulate
for convolutions and matrix products; bias, normalisation, activations and pooling not counted, as in the
papers); see ``lightnets.analysis.profile`` for every definition.  The small input helpers here are shared with
the per-layer ``profile``.
"""

from __future__ import annotations

import operator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    try:
        if len(pair) != 2 or any(isinstance(v, bool) for v in pair):
            raise TypeError
        h, w = operator.index(pair[0]), operator.index(pair[1])  # ints (numpy ints too), never floats
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


def _input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    return _pair(input_size, "input_size")


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("model has no Conv2d layer to infer its input channels from; pass in_chans")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a single image (batch 1), in eval mode."""
    h, w = _input_hw(input_size)
    device, dtype = _model_device_dtype(model)
    x = torch.zeros(1, in_chans or _in_chans(model), h, w, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
