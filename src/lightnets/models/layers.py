"""The shared layer vocabulary of every lightnets model.

Nothing here is specific to one family: channel rounding, conv + norm + activation, squeeze-and-excite,
channel shuffle, and the small base class that gives every model the same fine-tuning interface
(forward_features / forward_head / reset_classifier / num_features).

Module and attribute names are chosen so that state_dict keys match torchvision's where torchvision has the
model (``ConvNormAct`` is an ``nn.Sequential`` of conv [0], norm [1], activation [2]; ``SqueezeExcite`` owns
``fc1`` / ``fc2``), which lets torchvision weight files load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_dropout(dropout: float) -> float:
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, as one ``nn.Sequential`` (keys ``0.weight``, ``1.weight``, ...).

    Pass ``norm_layer=None`` or ``act_layer=None`` to leave that layer out.  Padding defaults to
    ``(kernel_size - 1) // 2 * dilation`` ("same" for odd kernels at stride 1).  The convolution has no
    bias when a norm layer follows it.
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
        padding: int | None = None,
        bias: bool | None = None,
        inplace: bool = True,
    ) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"channels must be divisible by groups: in_channels={in_channels}, "
                f"out_channels={out_channels}, groups={groups}"
            )
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(_make_act(act_layer, inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


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


class ClassifierModel(nn.Module):
    """The interface every lightnets model shares (the fine-tuning interface popularised by timm).

    Subclasses build their layers, set ``num_features`` (channels entering the final classifier layer) and
    implement ``forward_features`` (image -> last feature map), ``forward_head`` (feature map -> logits,
    ``pre_logits=True`` stops before the final Linear) and ``get_classifier`` / ``reset_classifier``.
    """

    num_features: int
    num_classes: int
    #: set by each family: what ``small_input=True`` changes, for docs and the model card
    small_input_policy: str = ""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def classifier_name(self) -> str:
        """Dotted name of the final classifier module (its keys are replaced when class counts differ)."""
        head = self.get_classifier()
        for name, module in self.named_modules():
            if module is head:
                return name
        raise RuntimeError("classifier module not found among named_modules")  # pragma: no cover

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def new_linear(in_features: int, num_classes: int) -> nn.Module:
    """Final classifier layer; ``num_classes=0`` gives an identity (feature extractor)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def init_weights(model: nn.Module) -> None:
    """Default initialisation shared by the families (as in torchvision's MobileNets): Kaiming-normal
    fan-out for convs, ones/zeros for norms, N(0, 0.01) for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
