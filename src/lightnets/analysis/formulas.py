"""The papers' cost formulas as pure functions: parameters and MACs of a convolution, and ShuffleNetV2's memory
access cost of a 1x1 convolution with its lower bound.  Checked against profiled modules in
tests/analysis/test_analysis.py, so a formula and the measured count cannot drift apart."""

from __future__ import annotations

import math

from .counting import _pair


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if groups <= 0 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"channels must be divisible by groups: in_channels={in_channels}, "
            f"out_channels={out_channels}, groups={groups}"
        )


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    groups: int = 1,
    bias: bool = False,
) -> int:
    """Parameters of a 2-D convolution: ``K^2 * Cin * Cout / g`` (+ ``Cout`` with a bias).

    Depthwise is ``groups = Cin``: ``K^2 * C`` (MobileNetV1, Sec. 3.1).
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    return kh * kw * in_channels // groups * out_channels + (out_channels if bias else 0)


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    output_size: int | tuple[int, int],
    groups: int = 1,
) -> int:
    """Multiply-accumulates of a 2-D convolution for one image: ``K^2 * Cin * Cout * H * W / g``.

    ``output_size`` is the output's ``H x W`` (MobileNetV1 writes ``D_K^2 * M * N * D_F^2``).  A 1x1 convolution
    gives ShuffleNetV2's ``B = h*w*c1*c2 / g``.
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    oh, ow = _pair(output_size, "output_size")
    return kh * kw * in_channels // groups * out_channels * oh * ow


def pointwise_memory_access_cost(h: int, w: int, c1: int, c2: int, groups: int = 1) -> int:
    """Memory access cost (elements) of a 1x1 convolution, ShuffleNetV2 Sec. 2 (G1, G2):
    ``h*w*(c1 + c2) + c1*c2/g``: the input feature map, the output feature map and the weights.

    "MAC" in that paper means memory access cost, not multiply-accumulates.
    """
    _check_groups(c1, c2, groups)
    return h * w * (c1 + c2) + c1 * c2 // groups


#: The paper's name for ``pointwise_memory_access_cost`` (MAC = memory access cost there).
pointwise_mac = pointwise_memory_access_cost


def mac_lower_bound(h: int, w: int, B: float) -> float:  # noqa: N803 - the paper's symbol
    """ShuffleNetV2's bound (Sec. 2, G1): a 1x1 convolution with ``B = h*w*c1*c2`` multiply-accumulates has
    memory access cost ``>= 2*sqrt(h*w*B) + B/(h*w)``, with equality when ``c1 == c2`` (by AM-GM)."""
    hw = h * w
    return 2.0 * math.sqrt(hw * B) + B / hw
