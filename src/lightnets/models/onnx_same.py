"""SAME-padded convolution and pooling as single ONNX operators with asymmetric ``pads``.

``Conv2dSame`` / ``Pool2dSame`` (``lightnets.models.layers``) pad by TF's SAME rule; for a fixed input size
(``layers.fix_same_padding``) the ONNX export writes each as one ``Conv`` / ``MaxPool`` / ``AveragePool``
whose ``pads`` hold TF's asymmetric pads, instead of a ``Pad`` whose pads onnxruntime cannot fold.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OnnxSameConv", "OnnxSamePool"]


class OnnxSameConv(torch.autograd.Function):
    """A SAME-padded convolution that the TorchScript ONNX exporter writes as one ``Conv`` whose ``pads``
    attribute holds the asymmetric pads (ONNX Conv allows them; PyTorch's conv2d does not).  Hand-written
    because ``F.pad`` exports as a ``Pad`` whose pads are computed through Shape / Gather / Concat ops, which
    onnxruntime neither folds nor fuses into the Conv."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any,
                pads: tuple[int, int, int, int], dilation: Any, groups: int) -> torch.Tensor:  # fmt: skip
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, stride: Any, pads: tuple[int, int, int, int],
                 dilation: Any, groups: int) -> Any:  # fmt: skip
        left, right, top, bottom = pads
        inputs = (x, weight) if bias is None or bias.node().mustBeNone() else (x, weight, bias)
        return g.op("Conv", *inputs, pads_i=[top, left, bottom, right], strides_i=list(stride),
                    dilations_i=list(dilation), group_i=groups)  # fmt: skip


class OnnxSamePool(torch.autograd.Function):
    """SAME-padded max / average pooling written as one ONNX ``MaxPool`` / ``AveragePool`` with asymmetric
    ``pads`` (max ignores the padding, average divides by the real pixels: ``count_include_pad=0``, TF's
    rule), for the same reason as ``OnnxSameConv``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        return module.eager(x)

    @staticmethod
    def symbolic(g: Any, x: Any, module: nn.Module) -> Any:
        left, right, top, bottom = module.fixed_pads
        op = "MaxPool" if module.kind == "max" else "AveragePool"
        extra = {} if module.kind == "max" else {"count_include_pad_i": 0}
        return g.op(op, x, kernel_shape_i=[module.kernel_size] * 2, strides_i=[module.stride] * 2,
                    pads_i=[top, left, bottom, right], **extra)  # fmt: skip
