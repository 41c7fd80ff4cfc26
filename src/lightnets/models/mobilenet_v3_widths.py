"""MobileNetV3's width multiplier policies: how ``width_mult`` turns Table 1 / Table 2 widths into layer widths.

Width multiplier policy.  Two policies are implemented (``width_policy=``); both round every width with
``make_divisible(c, 8)`` (to a multiple of 8, at least 8, never more than 10% below ``c``) and both give
torchvision's exact model at ``width_mult=1.0``:

========================  ==========================================  =============================================
layer                     ``WidthPolicy.TORCHVISION`` (default)       ``WidthPolicy.PAPER`` (the authors' TF-slim)
========================  ==========================================  =============================================
stem conv (16)            make_divisible(16 * w)                      make_divisible(16 * w)
block outputs             make_divisible(out * w)                     make_divisible(out * w)
block expansion           make_divisible(exp * w)                     make_divisible(in' * exp / in), with in' the
                                                                      block's actual (rounded) input width
last 1x1 conv (960/576)   6 * (rounded output of the last block)      make_divisible(960 * w) / (576 * w)
head layer (1280/1024)    make_divisible(1280 * w) / (1024 * w)       1280 / 1024 at every width (TF-slim's
                                                                      ``finegrain_classification_mode``)
SE squeeze width          make_divisible(expanded / 4)                make_divisible(expanded / 4)
========================  ==========================================  =============================================

The paper policy is what the authors' reference code does (tensorflow/models
``research/slim/nets/mobilenet/mobilenet_v3.py``: expansion given as a factor of the block's input,
``expand_input_by_factor``; ``depth_multiplier`` rounding every ``num_outputs``; the final 1280/1024 layer kept
at full width by ``finegrain_classification_mode``) and what Keras' ``MobileNetV3`` does for ``alpha <= 1``
(Keras also keeps the stem at 16 and scales the head for ``alpha > 1``; at 0.75 both agree).  Only the paper
policy reproduces the released 0.75 checkpoints of Table 3 (Large 0.75: 155M MAdds / 4.0M params; Small
0.75: 44M / 2.0M); torchvision's policy gives 140M / 3.4M and 39M / 1.7M there.  ``mobilenet_v3_*_075``
are registered with the paper policy.

A third policy, ``WidthPolicy.KERAS``, is ``keras.applications.MobileNetV3Small/Large`` (for ``lightnets
convert``): the paper's expansion rule, but the stem kept at 16 at every alpha, the last 1x1 conv ``6 * (rounded
output of the last block)`` and the 1280 / 1024 head kept for ``alpha <= 1``, ``make_divisible(head * alpha)``
above.  At 0.75 and 1.0 it equals the paper policy; at e.g. 0.5 the stem (16 vs 8) differs.  Everything else in
Keras's network is this one: SE width ``make_divisible(expanded / 4)`` with biases, hard-sigmoid
``relu6(x + 3) / 6`` (PyTorch's ``Hardsigmoid``; Keras 3 no longer uses the 0.2x + 0.5 form), hard-swish
``x * relu6(x + 3) / 6``, BatchNorm eps 1e-3, a biased 1x1 conv head (our ``classifier.0`` Linear).  Its
stride-2 depthwise convs are padded by TF's SAME rule for the size the model was built for (``correct_pad``):
``padding="same"`` here; built without a size (Keras's default for V3) they pad as SAME does for even sizes,
at every size, while the stem stays SAME: ``padding="same_even", stem_padding="same"``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

from torch import nn

from .layers import check_width_mult, make_divisible

if TYPE_CHECKING:  # the table types live beside the tables; only annotations here
    from .mobilenet_v3 import Bneck, MobileNetV3Arch

__all__ = ["SE_REDUCTION", "BlockWidths", "WidthPolicy", "check_width_policy", "resolve_widths", "se_channels"]

SE_REDUCTION = 4  # Section 5.1: SE bottleneck fixed to 1/4 of the expansion layer


def se_channels(expanded: int) -> int:
    """Squeeze width of the SE module of a block with ``expanded`` hidden channels (both policies)."""
    return make_divisible(expanded / SE_REDUCTION, 8)


class WidthPolicy(str, enum.Enum):
    """How ``width_mult`` turns Table 1 / Table 2 widths into layer widths (see the module docstring)."""

    TORCHVISION = "torchvision"  # torchvision / timm: every table width times w, head scaled too
    PAPER = "paper"  # the authors' TF-slim code: expansion as a factor of the actual input, head kept
    KERAS = "keras"  # keras.applications: the paper's expansion, stem kept at 16, head scaled above 1.0

    def stem(self, arch: MobileNetV3Arch, width_mult: float) -> int:
        if self is WidthPolicy.KERAS:
            return arch.stem_channels
        return make_divisible(arch.stem_channels * width_mult, 8)

    def expanded(self, row: Bneck, table_in: int, actual_in: int, width_mult: float) -> int:
        if self is not WidthPolicy.TORCHVISION:
            return make_divisible(actual_in * row.expansion / table_in, 8)
        return make_divisible(row.expansion * width_mult, 8)

    def last_conv(self, arch: MobileNetV3Arch, last_block_out: int, width_mult: float) -> int:
        if self is WidthPolicy.PAPER:
            return make_divisible(arch.last_conv_channels * width_mult, 8)
        return last_block_out * (arch.last_conv_channels // arch.blocks[-1].out_channels)

    def head(self, arch: MobileNetV3Arch, width_mult: float) -> int:
        if self is WidthPolicy.PAPER or (self is WidthPolicy.KERAS and width_mult <= 1.0):
            return arch.head_channels
        return make_divisible(arch.head_channels * width_mult, 8)


def check_width_policy(width_policy: WidthPolicy | str) -> WidthPolicy:
    """The ``WidthPolicy`` named by ``width_policy``, or a ValueError listing the choices."""
    try:
        return WidthPolicy(width_policy)
    except ValueError:
        choices = [p.value for p in WidthPolicy]
        raise ValueError(f"width_policy must be one of {choices}, got {width_policy!r}") from None


class BlockWidths(NamedTuple):
    """One bneck after the width policy and the ``minimalistic`` switch: what the layers are built from."""

    in_channels: int
    expanded: int
    out_channels: int
    kernel: int
    stride: int
    se_channels: int | None  # None: no SE module
    activation: type[nn.Module]
    residual: bool


def resolve_widths(
    arch: MobileNetV3Arch,
    width_mult: float = 1.0,
    width_policy: WidthPolicy = WidthPolicy.TORCHVISION,
    minimalistic: bool = False,
) -> tuple[int, list[BlockWidths], int, int]:
    """(stem channels, per-block widths, last conv channels, head channels) of ``arch`` at ``width_mult``.

    ``minimalistic`` drops SE, uses ReLU everywhere and 3x3 depthwise kernels, keeping the widths.
    """
    width_mult = check_width_mult(width_mult)
    policy = WidthPolicy(width_policy)
    stem = policy.stem(arch, width_mult)
    table_in, actual_in = arch.stem_channels, stem
    blocks: list[BlockWidths] = []
    for row in arch.blocks:
        expanded = policy.expanded(row, table_in, actual_in, width_mult)
        out = make_divisible(row.out_channels * width_mult, 8)
        use_se = row.use_se and not minimalistic
        blocks.append(
            BlockWidths(
                in_channels=actual_in,
                expanded=expanded,
                out_channels=out,
                kernel=3 if minimalistic else row.kernel,
                stride=row.stride,
                se_channels=se_channels(expanded) if use_se else None,
                activation=nn.ReLU if minimalistic else row.activation,
                residual=row.stride == 1 and actual_in == out,
            )
        )
        table_in, actual_in = row.out_channels, out
    return stem, blocks, policy.last_conv(arch, actual_in, width_mult), policy.head(arch, width_mult)
