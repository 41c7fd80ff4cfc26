"""The micro-benchmark networks of ShuffleNetV2 Section 2: the G1-G4 blocks, the 10-block stack and the width
rules that keep FLOPs equal across an experiment's configurations."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .tables import G4_EXPANSION, NUM_BLOCKS


def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    if c_in % groups or c_out % groups:
        raise ValueError(f"channels must be divisible by groups: {c_in} -> {c_out}, groups={groups}")
    return nn.Conv2d(c_in, c_out, 1, bias=False, groups=groups)


class PointwisePair(nn.Sequential):
    """G1 block: a 1x1 conv c1 -> c2, then a 1x1 conv c2 -> c1 ("the first contains c1 input channels and c2
    output channels, and the second otherwise")."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__(_conv1x1(c1, c2), _conv1x1(c2, c1))


class SeriesFragments(nn.Sequential):
    """G3 block: ``fragments`` 1x1 convs c -> c one after another (1-fragment is a single conv)."""

    def __init__(self, channels: int, fragments: int) -> None:
        super().__init__(*(_conv1x1(channels, channels) for _ in range(fragments)))


class ParallelFragments(nn.Module):
    """G3 block: ``fragments`` 1x1 convs c -> c/fragments on the same input, concatenated back to c channels."""

    def __init__(self, channels: int, fragments: int) -> None:
        super().__init__()
        if channels % fragments:
            raise ValueError(f"channels ({channels}) must be divisible by fragments ({fragments})")
        self.branches = nn.ModuleList(_conv1x1(channels, channels // fragments) for _ in range(fragments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Bottleneck(nn.Module):
    """G4 unit: ResNet's bottleneck (1x1 c -> c/4, 3x3 c/4 -> c/4, 1x1 c/4 -> c), with ReLU after the first two
    convs and after the shortcut add when ``relu``, and the identity shortcut when ``shortcut``."""

    def __init__(
        self, channels: int, relu: bool = True, shortcut: bool = True, expansion: int = G4_EXPANSION
    ) -> None:
        super().__init__()
        if channels % expansion:
            raise ValueError(f"channels ({channels}) must be divisible by the expansion ({expansion})")
        width = channels // expansion
        self.conv1 = _conv1x1(channels, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.conv3 = _conv1x1(width, channels)
        self.relu = relu
        self.shortcut = shortcut
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out)
        if self.shortcut:
            out = out + x
        return self.act(out)


def stack(make_block: Callable[[], nn.Module], num_blocks: int = NUM_BLOCKS) -> nn.Sequential:
    """``num_blocks`` freshly built blocks in sequence (the paper stacks each block 10 times)."""
    return nn.Sequential(*(make_block() for _ in range(num_blocks)))


def equal_flops_width(channels: int, convs: int) -> int:
    """The width w whose ``convs`` 1x1 convs w -> w have FLOPs closest to one c -> c conv (ties: narrower)."""
    exact = channels / math.sqrt(convs)
    candidates = sorted({max(1, math.floor(exact)), math.ceil(exact)})
    return min(candidates, key=lambda w: (abs(convs * w * w - channels * channels), w))


def group_divisible_width(channels: int, groups: int) -> int:
    """``channels`` if ``groups`` divides it, else the multiple of ``groups`` whose group-conv FLOPs
    (``c^2 / g``) are closest (ties: narrower).  Needed once: Table 2's ARM column lists c = 180 for g = 8."""
    if channels % groups == 0:
        return channels
    lower = channels // groups * groups
    return min(
        (w for w in (lower, lower + groups) if w > 0), key=lambda w: (abs(w * w - channels * channels), w)
    )
