"""MobileNetV1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", arXiv:1704.04861).

Body: Table 1 of the paper -- a 3x3 stride-2 standard convolution with 32 channels, then 13 depthwise
separable layers (3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU), global average
pooling, dropout and a fully connected classifier.  Costs and accuracies: Tables 6 (width multiplier) and 7
(resolution multiplier).

Choices, stated because references differ:

- Activation: plain ReLU, as written in the paper (Fig. 3).  TF-slim's and Keras's implementations use
  ReLU6; pass ``act_layer=nn.ReLU6`` to get theirs.  The choice changes no parameter or MAC.
- Width multiplier (the paper's alpha): every layer's channel count, stem included, is
  ``make_divisible(c * width_mult, 8)``.  For the paper's alphas (1, 0.75, 0.5, 0.25) every product is already
  a multiple of 8, so the published networks are unchanged; the rounding only matters for other widths.
  There is no separate head: the classifier reads the last pointwise layer (1024 * alpha channels).
- Resolution multiplier (the paper's rho) is the input size; pooling is adaptive, so any size works.
- Table 1 prints stride 2 for the last depthwise layer, but its input and output are both 7x7; the
  network (and every reference implementation) uses stride 1 there, as below.
- Dropout: 1e-3 before the classifier (the Keras / TF-slim default; the paper gives no value).
- Padding (``padding=``, see ``layers.PADDING_MODES``): "symmetric" (default), "same" (TF's SAME rule, for
  weights trained in TensorFlow) or "same_even".  Keras's ``MobileNet`` pads its stem by SAME but each stride-2
  depthwise conv by a fixed bottom/right row and column (``ZeroPadding2D(((0, 1), (0, 1)))`` + "valid"), which
  differs from SAME on odd inputs: ``padding="same_even", stem_padding="same"`` reproduces it at every size.
  With ``bn_eps=1e-3`` and ``act_layer="relu6"`` that is the Keras network exactly (``lightnets convert``).
- Layout: ``features`` (stem ``features.0``, then ``features.1`` .. ``features.13``, each with ``dw`` and
  ``pw``) and ``classifier`` = (Dropout, Linear), the same shape as torchvision's MobileNetV2.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..registry import PaperRef, register_model
from .layers import (
    ClassifierModel,
    ConvNormAct,
    HeadLayout,
    LayerFactory,
    batchnorm_with_eps,
    check_dropout,
    check_num_classes,
    check_padding,
    check_positive_int,
    check_width_mult,
    init_weights,
    make_divisible,
    new_linear,
    resolve_act_layer,
)

__all__ = ["DepthwiseSeparable", "DepthwiseSeparableRow", "MobileNetV1", "mobilenet_v1"]


class DepthwiseSeparableRow(NamedTuple):
    """A group of identical depthwise separable layers of Table 1 (a "Conv dw" line and its "Conv" line)."""

    stride: int  # stride of the 3x3 depthwise conv (the first layer of the group; the rest use 1)
    out_channels: int  # output channels of the 1x1 pointwise conv, before the width multiplier
    repeats: int = 1


#: Channels of the first, standard 3x3 stride-2 convolution (Table 1, row "Conv / s2").
STEM_CHANNELS = 32

#: Table 1 of arXiv:1704.04861, after the stem.
MOBILENET_V1_LAYERS: tuple[DepthwiseSeparableRow, ...] = (
    DepthwiseSeparableRow(stride=1, out_channels=64),
    DepthwiseSeparableRow(stride=2, out_channels=128),
    DepthwiseSeparableRow(stride=1, out_channels=128),
    DepthwiseSeparableRow(stride=2, out_channels=256),
    DepthwiseSeparableRow(stride=1, out_channels=256),
    DepthwiseSeparableRow(stride=2, out_channels=512),
    DepthwiseSeparableRow(stride=1, out_channels=512, repeats=5),
    DepthwiseSeparableRow(stride=2, out_channels=1024),
    DepthwiseSeparableRow(stride=1, out_channels=1024),  # printed "s2" in Table 1; 7x7 in and out means s1
)


class DepthwiseSeparable(nn.Module):
    """Depthwise separable convolution (Fig. 3 right): 3x3 depthwise conv + norm + act, then 1x1 pointwise
    conv + norm + act.  Its cost is 1/out_channels + 1/9 of the 3x3 standard convolution it replaces."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        layer_kw: dict[str, Any] = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.dw = ConvNormAct(
            in_channels, in_channels, 3, stride, groups=in_channels, padding=padding, **layer_kw
        )
        self.pw = ConvNormAct(in_channels, out_channels, 1, **layer_kw)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(ClassifierModel):
    """MobileNetV1 with width multiplier ``width_mult`` (alpha); the input size plays the resolution
    multiplier (rho).

    Published cost at 224 px (Table 6): alpha 1.0 569M MACs / 4.2M params / 70.6% top-1; 0.75 325M / 2.6M /
    68.4%; 0.5 149M / 1.3M / 63.7%; 0.25 41M / 0.5M / 50.6%.  Width 1.0 at 192 / 160 / 128 px (Table 7):
    418M / 290M / 186M MACs.
    """

    #: torchvision's head: Sequential(Dropout, Linear)
    head_layout = HeadLayout(classifier="classifier.1", dropout=None, logits="classifier")


    small_input_policy = (
        "stem conv stride 2 -> 1 and the first stride-2 depthwise layer (to 128 channels) stride 2 -> 1: "
        "total stride 8 instead of 32 (28 px -> 4x4)"
    )

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 1e-3,
        in_chans: int = 3,
        small_input: bool = False,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | str | None = nn.ReLU,
        padding: str = "symmetric",
        stem_padding: str | None = None,
        bn_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.padding = check_padding(padding)
        stem_padding = self.padding if stem_padding is None else check_padding(stem_padding)
        act_layer = resolve_act_layer(act_layer)
        norm_layer = batchnorm_with_eps(norm_layer, bn_eps)
        self.width_mult = check_width_mult(width_mult)
        dropout = check_dropout(dropout)
        in_chans = check_positive_int("in_chans", in_chans)
        self.small_input = bool(small_input)

        channels = make_divisible(STEM_CHANNELS * width_mult, 8)
        stem_stride = 1 if small_input else 2
        layers: list[nn.Module] = [
            ConvNormAct(
                in_chans, channels, 3, stem_stride, norm_layer=norm_layer, act_layer=act_layer,
                padding=stem_padding,
            )
        ]
        first_stride2 = True
        for row in MOBILENET_V1_LAYERS:
            out_channels = make_divisible(row.out_channels * width_mult, 8)
            for i in range(row.repeats):
                stride = row.stride if i == 0 else 1
                if stride == 2 and first_stride2:
                    first_stride2 = False
                    stride = 1 if small_input else 2
                layers.append(
                    DepthwiseSeparable(channels, out_channels, stride, norm_layer, act_layer, self.padding)
                )
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), new_linear(channels, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    return MobileNetV1(**kwargs)


def mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    """MobileNetV1; ``width_mult`` (default 1.0) is the paper's alpha.  Keywords go to ``MobileNetV1``."""
    return _mobilenet_v1(**kwargs)


# --- registrations: every row of Tables 6 and 7 -------------------------------------------------------------

_TABLE6 = "Howard et al. 2017, arXiv:1704.04861, Table 6"
_TABLE7 = "Howard et al. 2017, arXiv:1704.04861, Table 7"


class _V1Row(NamedTuple):
    """One published row: name, width multiplier, input size and the paper's numbers."""

    name: str
    source: str
    width_mult: float
    input_size: int
    macs: float
    params: float
    top1: float


_V1_ROWS: tuple[_V1Row, ...] = (
    _V1Row("mobilenet_v1", _TABLE6, 1.0, 224, macs=569e6, params=4.2e6, top1=70.6),
    _V1Row("mobilenet_v1_x0_75", _TABLE6, 0.75, 224, macs=325e6, params=2.6e6, top1=68.4),
    _V1Row("mobilenet_v1_x0_5", _TABLE6, 0.5, 224, macs=149e6, params=1.3e6, top1=63.7),
    _V1Row("mobilenet_v1_x0_25", _TABLE6, 0.25, 224, macs=41e6, params=0.5e6, top1=50.6),
    _V1Row("mobilenet_v1_192", _TABLE7, 1.0, 192, macs=418e6, params=4.2e6, top1=69.1),
    _V1Row("mobilenet_v1_160", _TABLE7, 1.0, 160, macs=290e6, params=4.2e6, top1=67.2),
    _V1Row("mobilenet_v1_128", _TABLE7, 1.0, 128, macs=186e6, params=4.2e6, top1=64.4),
)

for _row in _V1_ROWS:
    register_model(
        _row.name,
        mobilenet_v1,
        family="mobilenet_v1",
        kwargs={"width_mult": _row.width_mult},
        description=f"MobileNetV1 {_row.width_mult}x at {_row.input_size} px ({_row.source})",
        input_size=_row.input_size,
        refs=(
            PaperRef(
                source=_row.source,
                input_size=_row.input_size,
                macs=_row.macs,
                params=_row.params,
                top1=_row.top1,
                macs_rtol=0.02,
                params_rtol=0.05,
                params_round=0.1e6,
            ),
        ),
    )
