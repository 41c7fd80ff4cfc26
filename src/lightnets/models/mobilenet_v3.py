"""MobileNetV3-Large and -Small (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244).

The architectures are the paper's Table 1 (Large) and Table 2 (Small), declared below as typed rows; the
reference numbers are the paper's Table 3 (top-1, MAdds, params at 224 px) and torchvision's model cards.
The "minimalistic" variants of the authors' release (no squeeze-and-excite, ReLU in place of h-swish, every
depthwise kernel 3x3, same widths) are the ``minimalistic=True`` keyword.

Layer layout and state_dict keys are torchvision's (``features.N.block.M``, ``classifier.0`` / ``classifier.3``),
so torchvision's weight files load unchanged.  BatchNorm uses eps=1e-3 and momentum=0.01 (TF's decay 0.99), as
torchvision does for this family, which its weights depend on.

Width multiplier policy: ``width_policy=`` chooses how ``width_mult`` turns the tables' widths into layer
widths -- torchvision's (the default), the authors' TF-slim rule (``paper``, registered for the 0.75 models) or
Keras's; ``lightnets.models.mobilenet_v3_widths`` states each rule layer by layer.

``small_input=True`` (28-64 px images): the stem conv and the first stride-2 bottleneck get stride 1, so the
total stride is 8 instead of 32.  Residual connections stay where the table puts them; channels and
state_dict keys are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import nn

from ..registry import PaperRef, register_model
from .layers import (
    ClassifierModel,
    ConvNormAct,
    HeadLayout,
    LayerFactory,
    SqueezeExcite,
    check_dropout,
    check_num_classes,
    check_padding,
    check_positive_int,
    check_width_mult,
    init_weights,
    new_linear,
)
from .mobilenet_v3_widths import BlockWidths, WidthPolicy, check_width_policy, resolve_widths, se_channels

__all__ = [
    "Bneck",
    "MobileNetV3Arch",
    "LARGE",
    "SMALL",
    "WidthPolicy",
    "BlockWidths",
    "resolve_widths",
    "se_channels",
    "InvertedResidual",
    "MobileNetV3",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v3_norm",
]

#: BatchNorm as in the reference implementations (TF's epsilon 1e-3, decay 0.99); torchvision's weights need it.
mobilenet_v3_norm: LayerFactory = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


class Bneck(NamedTuple):
    """One "bneck" row of Table 1 / Table 2 at width 1.0 (the input width is the previous row's output)."""

    kernel: int  # depthwise kernel size
    expansion: int  # "exp size": channels of the expanded (hidden) layer
    out_channels: int  # "#out"
    use_se: bool  # "SE"
    activation: type[nn.Module]  # "NL": nn.ReLU ("RE") or nn.Hardswish ("HS")
    stride: int  # "s", of the depthwise conv


@dataclass(frozen=True)
class MobileNetV3Arch:
    """A whole network at width 1.0: stem conv 3x3/s2 (h-swish), bnecks, 1x1 conv, pool, 1x1 "NBN" head, classifier."""

    name: str
    stem_channels: int
    blocks: tuple[Bneck, ...]
    last_conv_channels: int  # the 1x1 conv after the last bneck (with BN, h-swish)
    head_channels: int  # the layer after global pooling (no BN, h-swish): 1280 / 1024


RE, HS = nn.ReLU, nn.Hardswish  # the tables' "NL" column

# Paper Table 1: MobileNetV3-Large (input 224^2; the first row's input is the 16-channel stem).
LARGE = MobileNetV3Arch(
    name="large",
    stem_channels=16,
    blocks=(
        Bneck(kernel=3, expansion=16, out_channels=16, use_se=False, activation=RE, stride=1),
        Bneck(kernel=3, expansion=64, out_channels=24, use_se=False, activation=RE, stride=2),
        Bneck(kernel=3, expansion=72, out_channels=24, use_se=False, activation=RE, stride=1),
        Bneck(kernel=5, expansion=72, out_channels=40, use_se=True, activation=RE, stride=2),
        Bneck(kernel=5, expansion=120, out_channels=40, use_se=True, activation=RE, stride=1),
        Bneck(kernel=5, expansion=120, out_channels=40, use_se=True, activation=RE, stride=1),
        Bneck(kernel=3, expansion=240, out_channels=80, use_se=False, activation=HS, stride=2),
        Bneck(kernel=3, expansion=200, out_channels=80, use_se=False, activation=HS, stride=1),
        Bneck(kernel=3, expansion=184, out_channels=80, use_se=False, activation=HS, stride=1),
        Bneck(kernel=3, expansion=184, out_channels=80, use_se=False, activation=HS, stride=1),
        Bneck(kernel=3, expansion=480, out_channels=112, use_se=True, activation=HS, stride=1),
        Bneck(kernel=3, expansion=672, out_channels=112, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=672, out_channels=160, use_se=True, activation=HS, stride=2),
        Bneck(kernel=5, expansion=960, out_channels=160, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=960, out_channels=160, use_se=True, activation=HS, stride=1),
    ),
    last_conv_channels=960,
    head_channels=1280,
)

# Paper Table 2: MobileNetV3-Small.
SMALL = MobileNetV3Arch(
    name="small",
    stem_channels=16,
    blocks=(
        Bneck(kernel=3, expansion=16, out_channels=16, use_se=True, activation=RE, stride=2),
        Bneck(kernel=3, expansion=72, out_channels=24, use_se=False, activation=RE, stride=2),
        Bneck(kernel=3, expansion=88, out_channels=24, use_se=False, activation=RE, stride=1),
        Bneck(kernel=5, expansion=96, out_channels=40, use_se=True, activation=HS, stride=2),
        Bneck(kernel=5, expansion=240, out_channels=40, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=240, out_channels=40, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=120, out_channels=48, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=144, out_channels=48, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=288, out_channels=96, use_se=True, activation=HS, stride=2),
        Bneck(kernel=5, expansion=576, out_channels=96, use_se=True, activation=HS, stride=1),
        Bneck(kernel=5, expansion=576, out_channels=96, use_se=True, activation=HS, stride=1),
    ),
    last_conv_channels=576,
    head_channels=1024,
)

class InvertedResidual(nn.Module):
    """The MobileNetV3 bneck (paper Section 5, Figure 4): 1x1 expand -> kxk depthwise -> [SE] -> 1x1 linear
    project, with an identity shortcut when stride is 1 and widths match.

    The expand conv is left out when the expansion equals the input width (the first row of both tables).
    SE sits after the depthwise conv, with ReLU inside and a hard-sigmoid gate.
    """

    def __init__(
        self, cfg: BlockWidths, norm_layer: LayerFactory, stride: int | None = None, padding: str = "symmetric"
    ) -> None:
        super().__init__()
        stride = cfg.stride if stride is None else stride
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        act = cfg.activation
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(ConvNormAct(cfg.in_channels, cfg.expanded, 1, norm_layer=norm_layer, act_layer=act))
        layers.append(
            ConvNormAct(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                stride=stride,
                groups=cfg.expanded,
                norm_layer=norm_layer,
                act_layer=act,
                padding=padding,
            )
        )
        if cfg.se_channels is not None:
            layers.append(SqueezeExcite(cfg.expanded, cfg.se_channels, nn.ReLU, nn.Hardsigmoid))
        layers.append(ConvNormAct(cfg.expanded, cfg.out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = cfg.residual
        self.out_channels = cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class _FeatureSpec(NamedTuple):
    """What ``MobileNetV3.features`` is built from, after the width policy."""

    in_chans: int
    stem: int
    blocks: list[BlockWidths]
    last_conv: int
    outer_act: type[nn.Module]  # stem and last conv (and head): h-swish, ReLU when minimalistic
    small_input: bool
    padding: str
    stem_padding: str


def _features(spec: _FeatureSpec, norm_layer: LayerFactory) -> nn.Sequential:
    """Stem conv, the bnecks, the last 1x1 conv (torchvision's ``features.N`` indices).  ``small_input``:
    the stem and the first stride-2 bneck get stride 1."""
    layers: list[nn.Module] = [
        ConvNormAct(
            spec.in_chans, spec.stem, 3, stride=1 if spec.small_input else 2, norm_layer=norm_layer,
            act_layer=spec.outer_act, padding=spec.stem_padding,
        )
    ]  # fmt: skip
    blocks = spec.blocks
    first_downsample = (
        next((i for i, b in enumerate(blocks) if b.stride == 2), None) if spec.small_input else None
    )
    for i, cfg in enumerate(blocks):
        stride = 1 if i == first_downsample else None
        layers.append(InvertedResidual(cfg, norm_layer, stride=stride, padding=spec.padding))
    layers.append(
        ConvNormAct(blocks[-1].out_channels, spec.last_conv, 1, norm_layer=norm_layer, act_layer=spec.outer_act)
    )
    return nn.Sequential(*layers)


class MobileNetV3(ClassifierModel):
    """MobileNetV3 (Large or Small, any width), with torchvision's module layout.

    ``features`` holds the stem, the bnecks and the last 1x1 conv; after global average pooling,
    ``classifier`` is Linear (head, 1280/1024) -> act -> Dropout -> Linear (classes).  The head is a linear
    layer on the pooled vector, equivalent to the paper's 1x1 "NBN" conv.  ``num_features`` is the head width.
    """

    #: torchvision's head: Sequential(Linear, activation, Dropout, Linear); pre_logits includes its dropout
    head_layout = HeadLayout(
        classifier="classifier.3",
        dropout=None,
        pre_logits=("classifier.0", "classifier.1", "classifier.2"),
        pool="avgpool",
    )
    small_input_policy = (
        "stem conv and first stride-2 bneck get stride 1 (total stride 8, not 32); widths/keys unchanged"
    )

    def __init__(
        self,
        arch: MobileNetV3Arch,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        in_chans: int = 3,
        small_input: bool = False,
        norm_layer: LayerFactory | None = None,
        minimalistic: bool = False,
        width_policy: WidthPolicy | str = WidthPolicy.TORCHVISION,
        padding: str = "symmetric",
        stem_padding: str | None = None,
    ) -> None:
        super().__init__()
        self.padding = padding = check_padding(padding)
        stem_padding = padding if stem_padding is None else check_padding(stem_padding)
        width_mult = check_width_mult(width_mult)
        dropout = check_dropout(dropout)
        in_chans = check_positive_int("in_chans", in_chans)
        check_num_classes(num_classes)
        width_policy = check_width_policy(width_policy)
        norm_layer = norm_layer or mobilenet_v3_norm
        stem, blocks, last_conv, head = resolve_widths(arch, width_mult, width_policy, minimalistic)
        outer_act = nn.ReLU if minimalistic else nn.Hardswish  # stem, last conv, head
        self.features = _features(
            _FeatureSpec(in_chans, stem, blocks, last_conv, outer_act, small_input, padding, stem_padding), norm_layer
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, head),
            outer_act(inplace=True),
            nn.Dropout(p=dropout),  # not in place: ReLU (minimalistic) needs its output for backward
            new_linear(head, num_classes),
        )
        self.arch = arch
        self.width_mult = width_mult
        self.width_policy = width_policy
        self.minimalistic = minimalistic
        self.small_input = small_input
        self.last_conv_channels = last_conv
        self.num_features = head
        self.num_classes = num_classes
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _mobilenet_v3(arch: MobileNetV3Arch, **kwargs: Any) -> MobileNetV3:
    return MobileNetV3(arch, **kwargs)


def mobilenet_v3_large(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Large (Table 1).  Keywords: num_classes, width_mult, dropout, in_chans, small_input,
    norm_layer, minimalistic, width_policy, padding, stem_padding."""
    return _mobilenet_v3(LARGE, **kwargs)


def mobilenet_v3_small(**kwargs: Any) -> MobileNetV3:
    """MobileNetV3-Small (Table 2).  Same keywords as ``mobilenet_v3_large``."""
    return _mobilenet_v3(SMALL, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Registry.  MAdds and params are at 224 px, 1000 classes.  "Table 3" is the paper's ImageNet table;
# the minimalistic rows come from the authors' checkpoint list (tensorflow/models
# research/slim/nets/mobilenet/README.md, repeated in Keras' MobileNetV3 docs).

_FAMILY = "mobilenet_v3"
_PAPER = "Howard et al. 2019, arXiv:1905.02244"
_SLIM = "tensorflow/models slim/nets/mobilenet README (authors' checkpoints)"
# plain strings in the cards (WidthPolicy is a str enum), so kwargs saved in checkpoints load with weights_only
_PAPER_WIDTHS = {"width_policy": WidthPolicy.PAPER.value}


def _register(
    name: str, builder: Any, kwargs: dict[str, Any], description: str, refs: Sequence[PaperRef], **extra: Any
) -> None:
    register_model(
        name, builder, family=_FAMILY, kwargs=kwargs, description=description, refs=tuple(refs), **extra
    )


_register(
    "mobilenet_v3_large",
    mobilenet_v3_large,
    {},
    "MobileNetV3-Large 1.0 (Table 1), torchvision layout and weights",
    [
        PaperRef(
            f"{_PAPER}, Table 3", macs=219e6, params=5.4e6, top1=75.2, macs_rtol=0.03, params_round=0.1e6
        ),
        PaperRef(f"{_PAPER}, appendix / {_SLIM}", macs=217e6, params=5.4e6, top1=75.2, macs_rtol=0.03),
        PaperRef(
            "torchvision MobileNet_V3_Large_Weights.IMAGENET1K_V1",
            macs=0.217e9,
            top1=74.042,
            macs_rtol=0.03,
            exact_params=5_483_032,
        ),
    ],
    torchvision_name="mobilenet_v3_large",
)
_register(
    "mobilenet_v3_small",
    mobilenet_v3_small,
    {},
    "MobileNetV3-Small 1.0 (Table 2), torchvision layout and weights",
    [
        PaperRef(
            f"{_PAPER}, Table 3", macs=56e6, params=2.5e6, top1=67.4, macs_rtol=0.03, params_round=0.1e6
        ),
        PaperRef(
            f"{_PAPER}, appendix", macs=57e6, params=2.5e6, top1=67.4, macs_rtol=0.03, params_round=0.1e6
        ),
        PaperRef(
            "torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1",
            macs=0.057e9,
            top1=67.668,
            macs_rtol=0.03,
            exact_params=2_542_856,
        ),
    ],
    torchvision_name="mobilenet_v3_small",
)
_register(
    "mobilenet_v3_large_075",
    mobilenet_v3_large,
    {"width_mult": 0.75, **_PAPER_WIDTHS},
    "MobileNetV3-Large 0.75, the paper's width policy (TF-slim)",
    [PaperRef(f"{_PAPER}, Table 3", macs=155e6, params=4.0e6, top1=73.3, macs_rtol=0.03, params_round=0.1e6)],
)
_register(
    "mobilenet_v3_small_075",
    mobilenet_v3_small,
    {"width_mult": 0.75, **_PAPER_WIDTHS},
    "MobileNetV3-Small 0.75, the paper's width policy (TF-slim)",
    [PaperRef(f"{_PAPER}, Table 3", macs=44e6, params=2.0e6, top1=65.4, macs_rtol=0.03, params_round=0.1e6)],
)
_register(
    "mobilenet_v3_large_minimal",
    mobilenet_v3_large,
    {"minimalistic": True},
    "MobileNetV3-Large minimalistic: no SE, ReLU only, 3x3 depthwise only",
    [PaperRef(_SLIM, macs=209e6, params=3.9e6, top1=72.3, macs_rtol=0.03, params_round=0.1e6)],
)
_register(
    "mobilenet_v3_small_minimal",
    mobilenet_v3_small,
    {"minimalistic": True},
    "MobileNetV3-Small minimalistic: no SE, ReLU only, 3x3 depthwise only",
    [
        # The published 65M MAdds cannot be this architecture's count: it is above full Small's own 56M
        # (Table 3), though the minimalistic model only removes work (SE, 5x5 kernels) at equal widths; the same
        # list gives full Small as 66M / 2.9M against the paper's 56M / 2.5M, so its Small-family MAdds are on
        # another basis.  Params are held to the published 2.0M; the MAdds are recorded, not tested (52.3M).
        PaperRef(
            _SLIM,
            params=2.0e6,
            top1=61.9,
            params_round=0.1e6,
            note="published 65M MAdds not comparable (above full Small's 56M); measured 52.3M",
        ),
    ],
)
