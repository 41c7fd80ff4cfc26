"""Complexity analysis: parameters, MACs / FLOPs, activation memory and memory access cost.

MACs are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs =
2 x MACs for convolutions and matrix products); only those ops are counted, as in the papers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    h, w = input_size
    return int(h), int(w)


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("model has no Conv2d layer to infer its input channels from")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a single image (batch 1), in eval mode."""
    h, w = _input_hw(input_size)
    x = torch.zeros(1, in_chans or _in_chans(model), h, w)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
