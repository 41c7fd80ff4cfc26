"""The shared layer vocabulary of every lightnets model.

Nothing here is specific to one family: channel rounding, conv + norm + activation, squeeze-and-excite,
channel shuffle.  The base class that gives every model the same fine-tuning interface (forward_features /
forward_head / reset_classifier / num_features) and the integer guards live in ``models.base`` and are
importable from here too.

Module and attribute names are chosen so that state_dict keys match torchvision's where torchvision has the
model (``ConvNormAct`` is an ``nn.Sequential`` of conv [0], norm [1], activation [2]; ``SqueezeExcite`` owns
``fc1`` / ``fc2``), which lets torchvision weight files load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import (  # noqa: F401 -- the families import the whole vocabulary from here
    ClassifierModel,
    HeadLayout,
    check_int,
    check_num_classes,
    check_positive_int,
    init_weights,
    new_linear,
)
from .onnx_same import OnnxSameConv, OnnxSamePool

# A layer factory: a class or callable returning a module.  ``None`` switches the layer off.
LayerFactory = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10% below it.

    This is the rounding rule of the MobileNet reference implementations (TF-slim's ``_make_divisible``,
    also used by torchvision and timm).  It is the one channel-rounding function of the project.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:  # rounding down must not lose more than 10%
        new_value += divisor
    return int(new_value)


def check_width_mult(width_mult: float) -> float:
    """Validate a width multiplier early, with the bad value in the message."""
    if (
        not isinstance(width_mult, (int, float))
        or isinstance(width_mult, bool)
        or not 0 < width_mult < float("inf")
    ):
        raise ValueError(f"width_mult must be a finite number > 0, got {width_mult!r}")
    return float(width_mult)


def check_dropout(dropout: float) -> float:
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


#: How convolutions and pools pad (the ``padding=`` keyword of every family):
#: "symmetric" -- PyTorch's ``(kernel - 1) // 2`` on every side (torchvision's models, the default);
#: "same" -- TensorFlow's SAME rule: output = ceil(input / stride), the total padding split with the extra
#: row / column at the bottom / right (a 3x3 stride-2 conv on an even input pads 0 top/left, 1 bottom/right;
#: 5x5: 1 and 2; on an odd input it is symmetric), computed from each input's size;
#: "same_even" -- SAME as it is for an even input, at every input size: the fixed ``ZeroPadding2D`` +
#: "valid" conv that Keras's MobileNet (V1) puts before each stride-2 depthwise conv.
#: At stride 1 with an odd kernel all three are the same static symmetric padding.
PADDING_MODES: tuple[str, ...] = ("symmetric", "same", "same_even")


def check_padding(padding: Any) -> str:
    """Validate a ``padding=`` mode early, naming the bad value and the choices."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {list(PADDING_MODES)}, got {padding!r}")
    return str(padding)


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1, even: bool = False) -> tuple[int, int]:
    """(before, after) padding of one spatial axis under TF's SAME rule (``even=True``: as for an even size).

    SAME makes the output ``ceil(size / stride)`` long; the padding that needs, ``(out - 1) * stride +
    effective_kernel - size``, is split with the odd one after (TF's ``get_padding`` convention)."""
    effective = (kernel - 1) * dilation + 1
    if even:
        size += -size % stride  # round up to a multiple of the stride: what an even input sees at stride 2
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def needs_dynamic_pad(kernel: int, stride: int, padding: str) -> bool:
    """True where ``padding`` depends on the input size (strided or even-kernel layers in a SAME mode)."""
    return padding != "symmetric" and (stride > 1 or kernel % 2 == 0)


def _pads_for(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
              even: bool) -> tuple[int, int, int, int]:  # fmt: skip
    top, bottom = same_pads(int(x.shape[-2]), kernel[0], stride[0], dilation[0], even)
    left, right = same_pads(int(x.shape[-1]), kernel[1], stride[1], dilation[1], even)
    return left, right, top, bottom


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` padded by TF's SAME rule for the size of each input (same parameters and state_dict keys).

    Where the padding comes out symmetric (odd inputs at stride 2) it is passed to the convolution itself;
    otherwise the input is zero-padded first (``F.pad``, one extra row / column at the bottom / right).  The
    sizes are Python ints, so a trace or ONNX export at a fixed input size holds static pads."""

    def __init__(self, *args: Any, even: bool = False, **kwargs: Any) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)
        self.even = even
        self.fixed_pads: tuple[int, int, int, int] | None = None  # set by fix_same_padding for one input size

    def pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) for ``x``: the fixed ones when set, else computed from its size."""
        if self.fixed_pads is not None:
            return self.fixed_pads
        return _pads_for(x, self.kernel_size, self.stride, self.dilation, self.even)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pads(x)
        if left == right and top == bottom:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        if self.fixed_pads is not None and torch.onnx.is_in_onnx_export():  # one ONNX Conv, asymmetric pads
            return OnnxSameConv.apply(x, self.weight, self.bias, self.stride, self.fixed_pads, self.dilation,
                                       self.groups)  # fmt: skip
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", padding=same_even" if self.even else ", padding=same")


def make_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: str = "symmetric",
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Conv2d:
    """A Conv2d padded by ``padding`` mode (see ``PADDING_MODES``): a plain ``nn.Conv2d`` with static padding
    wherever the mode allows it, ``Conv2dSame`` only where the padding depends on the input size."""
    padding = check_padding(padding)
    kw: dict[str, Any] = {"stride": stride, "dilation": dilation, "groups": groups, "bias": bias}
    if needs_dynamic_pad(kernel_size, stride, padding):
        return Conv2dSame(in_channels, out_channels, kernel_size, even=padding == "same_even", **kw)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2 * dilation, **kw)


class Pool2dSame(nn.Module):
    """Max or average pooling padded by TF's SAME rule.  Max pooling ignores the padding (as if -inf);
    average pooling divides by the number of real pixels in each window (TF's ``avg_pool``), not by k*k."""

    def __init__(self, kind: str, kernel_size: int, stride: int, even: bool = False) -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
        self.kind, self.kernel_size, self.stride, self.even = kind, kernel_size, stride, even
        self.fixed_pads: tuple[int, int, int, int] | None = None  # set by fix_same_padding for one input size

    def pads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) for ``x``: the fixed ones when set, else computed from its size."""
        if self.fixed_pads is not None:
            return self.fixed_pads
        return _pads_for(x, (self.kernel_size,) * 2, (self.stride,) * 2, (1, 1), self.even)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_pads is not None and torch.onnx.is_in_onnx_export():  # one ONNX pool, asymmetric pads
            return OnnxSamePool.apply(x, self)
        return self.eager(x)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        k, s = (self.kernel_size,) * 2, (self.stride,) * 2
        left, right, top, bottom = self.pads(x)
        if left == right and top == bottom:  # symmetric: the pool pads by itself
            if self.kind == "max":
                return F.max_pool2d(x, k, s, (top, left))
            return F.avg_pool2d(x, k, s, (top, left), count_include_pad=False)
        pads = (left, right, top, bottom)
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)
        # window sums over the zero-padded input divided by each window's count of real pixels
        ones = F.pad(torch.ones_like(x[:1, :1]), pads)
        total = F.avg_pool2d(F.pad(x, pads), k, s, divisor_override=1)
        return total / F.avg_pool2d(ones, k, s, divisor_override=1)

    def extra_repr(self) -> str:
        mode = "same_even" if self.even else "same"
        return f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding={mode}"


def fix_same_padding(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """In place: every ``Conv2dSame`` / ``Pool2dSame`` of ``model`` pads by the constants its input needs at
    ``input_shape`` (one forward pass records them), and the model then serves that input size only.  Why: a
    TorchScript trace records the pads computed from ``x.shape`` as shape arithmetic, so the ONNX graph holds
    a computed ``Pad`` that onnxruntime cannot fold into the Conv (measured 1.24-1.43x slower than symmetric
    padding, ``benchmarks/padding_same.py``); constant pads fold.  Returns how many layers were fixed."""
    layers = [m for m in model.modules() if isinstance(m, (Conv2dSame, Pool2dSame))]
    if not layers:
        return 0

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        module.fixed_pads = module.pads(args[0])

    for m in layers:
        m.fixed_pads = None
    handles = [m.register_forward_pre_hook(record) for m in layers]
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(input_shape, dtype=torch.float32 if param is None else param.dtype,
                        device=None if param is None else param.device)  # fmt: skip
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return len(layers)


def make_pool2d(kind: str, kernel_size: int, stride: int, padding: str = "symmetric") -> nn.Module:
    """``nn.MaxPool2d`` / ``nn.AvgPool2d`` (symmetric, PyTorch's count-the-padding average) or, in a SAME mode,
    ``Pool2dSame``.  Pools have no parameters, so the choice changes no state_dict key."""
    padding = check_padding(padding)
    if needs_dynamic_pad(kernel_size, stride, padding):
        return Pool2dSame(kind, kernel_size, stride, even=padding == "same_even")
    if kind == "max":
        return nn.MaxPool2d(kernel_size, stride=stride, padding=(kernel_size - 1) // 2)
    return nn.AvgPool2d(kernel_size, stride=stride, padding=(kernel_size - 1) // 2)


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, as one ``nn.Sequential`` (keys ``0.weight``, ``1.weight``, ...).

    Pass ``norm_layer=None`` or ``act_layer=None`` to leave that layer out.  ``padding`` is a number of pixels
    or a mode of ``PADDING_MODES``; the default (None, or "symmetric") is ``(kernel_size - 1) // 2 * dilation``
    ("same" for odd kernels at stride 1).  The convolution has no bias when a norm layer follows it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        dilation: int = 1,
        padding: int | str | None = None,
        bias: bool | None = None,
        inplace: bool = True,
    ) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"channels must be divisible by groups: in_channels={in_channels}, "
                f"out_channels={out_channels}, groups={groups}"
            )
        if bias is None:
            bias = norm_layer is None
        conv_kw: dict[str, Any] = {"stride": stride, "dilation": dilation, "groups": groups, "bias": bias}
        if padding is None or isinstance(padding, str):
            conv = make_conv2d(in_channels, out_channels, kernel_size, padding=padding or "symmetric", **conv_kw)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, **conv_kw)
        layers: list[nn.Module] = [conv]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(_make_act(act_layer, inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


#: Activations by name, so a checkpoint's kwargs can name one (kwargs must be plain data to load safely).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def resolve_act_layer(act_layer: LayerFactory | str | None) -> LayerFactory | None:
    """An activation factory from a factory, None, or a name of ``ACTIVATIONS``."""
    if isinstance(act_layer, str):
        try:
            return ACTIVATIONS[act_layer]
        except KeyError:
            raise ValueError(f"act_layer must be one of {sorted(ACTIVATIONS)}, got {act_layer!r}") from None
    return act_layer


def batchnorm_with_eps(norm_layer: LayerFactory | None, bn_eps: float | None) -> LayerFactory | None:
    """``norm_layer`` with BatchNorm's epsilon set to ``bn_eps`` (None: unchanged).  TF / Keras use 1e-3 where
    PyTorch defaults to 1e-5; weights trained with one drift in the other, so converted models record it."""
    if bn_eps is None:
        return norm_layer
    if isinstance(bn_eps, bool) or not isinstance(bn_eps, (int, float)) or not 0 < bn_eps < 1:
        raise ValueError(f"bn_eps must be a number in (0, 1), got {bn_eps!r}")
    if norm_layer is not nn.BatchNorm2d:
        raise ValueError("bn_eps applies to the default BatchNorm2d only; pass a configured norm_layer instead")
    return partial(nn.BatchNorm2d, eps=float(bn_eps))


def _make_act(act_layer: LayerFactory, inplace: bool = True) -> nn.Module:
    """Build an activation, passing ``inplace`` only to the ones that take it."""
    try:
        return act_layer(inplace=inplace)
    except TypeError:
        return act_layer()


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used by MobileNetV3: pool, 1x1 reduce, act, 1x1 expand,
    gate.  Keys ``fc1`` / ``fc2`` match torchvision's ``SqueezeExcitation``.

    The caller chooses ``squeeze_channels``: each family states its own rounding policy for it.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act_layer: LayerFactory = nn.ReLU,
        gate_layer: LayerFactory = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = _make_act(act_layer)
        self.scale_activation = _make_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle, in the order of the ShuffleNetV1 paper (Sec. 3.1) and torchvision.

    Channels are viewed as a (groups, channels_per_group) grid and transposed, so output channel
    ``i * groups + g`` is input channel ``g * channels_per_group + i``: after the shuffle, each group of the
    next grouped conv sees one channel from every previous group.  The other order found in the wild
    (view as (channels_per_group, groups) and transpose) is this function's inverse, see
    ``channel_unshuffle``; weights trained with one order are not interchangeable with the other.
    """
    batch, channels, height, width = x.shape
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


def channel_unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of ``channel_shuffle(x, groups)`` (equivalently, a shuffle with ``channels // groups`` groups)."""
    channels = x.shape[1]
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
    return channel_shuffle(x, channels // groups)


class ChannelShuffle(nn.Module):
    """``channel_shuffle`` as a module, so it shows up in per-layer profiles and exports."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
