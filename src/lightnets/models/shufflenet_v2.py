"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
arXiv:1807.11164, Table 5), laid out so that torchvision's ``shufflenet_v2_x*`` weight files load unchanged.

Architecture (Table 5): a 3x3 stride-2 stem conv with 24 channels and a 3x3 stride-2 max-pool, three stages
of 4 / 8 / 4 units whose output channels depend on the width (below), a 1x1 ``conv5`` head, global average
pooling and a fully connected classifier.

Units (paper Fig. 3c/d):

* stride 1 -- *channel split*: the input is cut into two halves; the first half passes through untouched,
  the second goes through 1x1 conv -> BN -> ReLU -> 3x3 depthwise conv -> BN -> 1x1 conv -> BN -> ReLU;
* stride 2 -- no split: ``branch1`` (3x3 depthwise s2 -> BN -> 1x1 conv -> BN -> ReLU) and ``branch2`` (as
  above, with the depthwise conv at stride 2) both see the whole input, each producing half the output
  channels.

Where and how it shuffles: in every unit, *after* the two branches are concatenated (pass-through / branch1
first, branch2 second), the result is channel-shuffled with 2 groups using ``layers.channel_shuffle`` --
the (groups, channels_per_group) view transposed, i.e. output channel ``2 * i + g`` is input channel
``g * C/2 + i``, which interleaves the two branches.  This is the order torchvision uses, so its weights
give its outputs here.  The next unit's split then takes the even-indexed channels of the concatenation
(a mix of both branches) as its pass-through half.

Width policy: there is no width formula in the paper -- the four widths of Table 5 each have their own
channel list (stage 2/3/4 and ``conv5``), kept verbatim in ``V2_WIDTHS``; the stem stays at 24 channels and
``conv5`` at 1024 except for 2.0x (2048).  Other multipliers are refused; a custom network is built by passing
``stage_channels`` (three even numbers) and optionally ``head_channels``.  There is no SE.

``padding="same"`` (``layers.PADDING_MODES``) pads the stem conv, the max-pool and the stride-2 depthwise convs
by TF's SAME rule, for networks trained in TensorFlow; keys and parameters are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..registry import PaperRef, register_model
from .layers import (
    ClassifierModel,
    ConvNormAct,
    LayerFactory,
    _make_act,
    channel_shuffle,
    check_dropout,
    check_num_classes,
    check_padding,
    check_positive_int,
    init_weights,
    make_conv2d,
    make_pool2d,
    new_linear,
)

__all__ = [
    "V2_WIDTHS",
    "ShuffleNetV2",
    "ShuffleV2Unit",
    "V2Width",
    "shufflenet_v2",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
]


class V2Width(NamedTuple):
    """One column of the paper's Table 5: channels at one width multiplier."""

    width_mult: float
    stage_channels: tuple[int, int, int]  # output channels of stages 2, 3, 4
    head_channels: int  # conv5


class V2Stage(NamedTuple):
    """One stage row of Table 5 (the first unit of every stage has stride 2)."""

    name: str
    repeats: int


# Table 5 of arXiv:1807.11164 (output channels per width).
V2_WIDTHS: tuple[V2Width, ...] = (
    V2Width(width_mult=0.5, stage_channels=(48, 96, 192), head_channels=1024),
    V2Width(width_mult=1.0, stage_channels=(116, 232, 464), head_channels=1024),
    V2Width(width_mult=1.5, stage_channels=(176, 352, 704), head_channels=1024),
    V2Width(width_mult=2.0, stage_channels=(244, 488, 976), head_channels=2048),
)

# Table 5 of arXiv:1807.11164 (repeats per stage); stage names are torchvision's module names.
V2_STAGES: tuple[V2Stage, ...] = (
    V2Stage(name="stage2", repeats=4),
    V2Stage(name="stage3", repeats=8),
    V2Stage(name="stage4", repeats=4),
)

STEM_CHANNELS = 24  # Table 5, all widths


def _conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    groups: int,
    norm_layer: LayerFactory,
    act_layer: LayerFactory | None,
    padding: str = "symmetric",
) -> list[nn.Module]:
    """Conv -> norm (-> act) as a flat list, so a branch is one ``nn.Sequential`` with torchvision's indices."""
    conv = make_conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
    layers = [conv, norm_layer(out_channels)]
    if act_layer is not None:
        layers.append(_make_act(act_layer))
    return layers


class ShuffleV2Unit(nn.Module):
    """The ShuffleNetV2 unit (paper Fig. 3c for stride 1, Fig. 3d for stride 2), torchvision's key layout.

    ``branch1`` exists only at stride 2 (keys ``branch1.0`` dw conv, ``.1`` norm, ``.2`` 1x1 conv, ``.3`` norm);
    ``branch2`` holds ``.0`` 1x1 conv, ``.1`` norm, ``.3`` dw conv, ``.4`` norm, ``.5`` 1x1 conv, ``.6`` norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"ShuffleNetV2 unit output channels must be even, got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleNetV2 unit keeps its width: in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        self.stride = stride
        half = out_channels // 2
        if stride == 2:
            self.branch1: nn.Module | None = nn.Sequential(
                *_conv_norm(in_channels, in_channels, 3, stride, in_channels, norm_layer, None, padding),
                *_conv_norm(in_channels, half, 1, 1, 1, norm_layer, act_layer),
            )
        else:
            self.branch1 = None
        self.branch2 = nn.Sequential(
            *_conv_norm(in_channels if stride == 2 else half, half, 1, 1, 1, norm_layer, act_layer),
            *_conv_norm(half, half, 3, stride, half, norm_layer, None, padding),
            *_conv_norm(half, half, 1, 1, 1, norm_layer, act_layer),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            keep, x2 = x.chunk(2, dim=1)  # channel split (Fig. 3c)
            out = torch.cat((keep, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(ClassifierModel):
    """ShuffleNetV2 with explicit channels (see ``shufflenet_v2`` for the paper's widths).

    ``stage_channels``: output channels of stages 2-4 (even numbers); ``head_channels``: the ``conv5`` width.
    """

    small_input_policy = "conv1 and the max-pool at stride 1 (total stride 8, not 32); layers, keys unchanged"

    def __init__(
        self,
        stage_channels: Sequence[int],
        head_channels: int = 1024,
        num_classes: int = 1000,
        dropout: float = 0.0,
        in_chans: int = 3,
        small_input: bool = False,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        stem_channels: int = STEM_CHANNELS,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.padding = padding = check_padding(padding)
        stage_channels = tuple(stage_channels)
        if len(stage_channels) != len(V2_STAGES):
            raise ValueError(
                f"stage_channels needs {len(V2_STAGES)} values (stages 2-4), got {stage_channels!r}"
            )
        for c in stage_channels:
            check_positive_int("stage channel count", c)
            if c % 2:
                raise ValueError(f"ShuffleNetV2 stage channels must be even (channel split), got {c}")
        check_positive_int("head_channels", head_channels)
        check_positive_int("in_chans", in_chans)
        check_positive_int("stem_channels", stem_channels)
        check_num_classes(num_classes)
        self.dropout_rate = check_dropout(dropout)
        self.small_input = bool(small_input)
        self.stage_channels = stage_channels

        stride = 1 if small_input else 2
        self.conv1 = ConvNormAct(
            in_chans, stem_channels, 3, stride, norm_layer=norm_layer, act_layer=act_layer, padding=padding
        )
        self.maxpool = make_pool2d("max", 3, stride, padding)
        in_channels = stem_channels
        for stage, out_channels in zip(V2_STAGES, stage_channels, strict=True):
            units = [ShuffleV2Unit(in_channels, out_channels, 2, norm_layer, act_layer, padding)]
            units += [
                ShuffleV2Unit(out_channels, out_channels, 1, norm_layer, act_layer, padding)
                for _ in range(stage.repeats - 1)
            ]
            self.add_module(stage.name, nn.Sequential(*units))
            in_channels = out_channels
        self.conv5 = ConvNormAct(in_channels, head_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(self.dropout_rate)  # no state: keys stay torchvision's
        self.num_features = head_channels
        self.num_classes = num_classes
        self.fc = new_linear(head_channels, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)


def _width_row(width_mult: float) -> V2Width:
    for row in V2_WIDTHS:
        if row.width_mult == width_mult and not isinstance(width_mult, bool):
            return row
    allowed = ", ".join(str(r.width_mult) for r in V2_WIDTHS)
    raise ValueError(
        f"ShuffleNetV2 width_mult must be one of {{{allowed}}} (paper Table 5), got {width_mult!r}"
    )


def _shufflenet_v2(
    width_mult: float,
    stage_channels: Sequence[int] | None,
    head_channels: int | None,
    **kwargs,
) -> ShuffleNetV2:
    row = _width_row(width_mult)
    return ShuffleNetV2(
        stage_channels=row.stage_channels if stage_channels is None else stage_channels,
        head_channels=row.head_channels if head_channels is None else head_channels,
        **kwargs,
    )


def shufflenet_v2(
    width_mult: float = 1.0,
    stage_channels: Sequence[int] | None = None,
    head_channels: int | None = None,
    **kwargs,
) -> ShuffleNetV2:
    """ShuffleNetV2 at one of the paper's widths (0.5, 1.0, 1.5, 2.0; Table 5).

    ``stage_channels`` / ``head_channels`` replace that width's stage 2-4 / ``conv5`` channels for a custom
    network.  Other keywords go to ``ShuffleNetV2`` (num_classes, dropout, in_chans, small_input, ...).
    """
    return _shufflenet_v2(width_mult, stage_channels, head_channels, **kwargs)


def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 0.5x (41M MACs); torchvision's ``shufflenet_v2_x0_5`` layout."""
    return _shufflenet_v2(0.5, None, None, **kwargs)


def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x (146M MACs); torchvision's ``shufflenet_v2_x1_0`` layout."""
    return _shufflenet_v2(1.0, None, None, **kwargs)


def shufflenet_v2_x1_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 1.5x (299M MACs); torchvision's ``shufflenet_v2_x1_5`` layout."""
    return _shufflenet_v2(1.5, None, None, **kwargs)


def shufflenet_v2_x2_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 2.0x (591M MACs); torchvision's ``shufflenet_v2_x2_0`` layout."""
    return _shufflenet_v2(2.0, None, None, **kwargs)


# --- registrations ----------------------------------------------------------------------------------------

_PAPER = "Ma et al. 2018, arXiv:1807.11164, Table 5"
_TV = "torchvision model card (IMAGENET1K_V1)"


class _V2Card(NamedTuple):
    """Published numbers for one width: paper Table 5 and torchvision's model card."""

    builder: Callable[..., ShuffleNetV2]
    width_mult: float
    macs: float
    params: float
    top1: float
    tv_params: int
    tv_top1: float


_V2_CARDS: tuple[_V2Card, ...] = (
    # Table 5 (MACs, params, top-1) and torchvision's IMAGENET1K_V1 cards (exact params, top-1)
    _V2Card(shufflenet_v2_x0_5, width_mult=0.5, macs=41e6, params=1.4e6, top1=60.3,
            tv_params=1_366_792, tv_top1=60.552),
    _V2Card(shufflenet_v2_x1_0, width_mult=1.0, macs=146e6, params=2.3e6, top1=69.4,
            tv_params=2_278_604, tv_top1=69.362),
    _V2Card(shufflenet_v2_x1_5, width_mult=1.5, macs=299e6, params=3.5e6, top1=72.6,
            tv_params=3_503_624, tv_top1=72.996),
    _V2Card(shufflenet_v2_x2_0, width_mult=2.0, macs=591e6, params=7.4e6, top1=74.9,
            tv_params=7_393_996, tv_top1=76.230),
)  # fmt: skip


def _refs(card: _V2Card) -> tuple[PaperRef, ...]:
    return (
        PaperRef(
            source=_PAPER,
            macs=card.macs,
            params=card.params,
            top1=card.top1,
            macs_rtol=0.02,
            params_round=0.1e6,
        ),
        PaperRef(source=_TV, exact_params=card.tv_params, top1=card.tv_top1),
    )


for _card in _V2_CARDS:
    _name = _card.builder.__name__
    register_model(
        _name,
        _card.builder,
        family="shufflenet_v2",
        description=f"ShuffleNetV2 {_card.width_mult}x (paper Table 5), torchvision's weight layout",
        refs=_refs(_card),
        torchvision_name=_name,
    )

register_model(
    "shufflenet_v2",
    shufflenet_v2,
    family="shufflenet_v2",
    kwargs={"width_mult": 1.0},
    description="ShuffleNetV2, width_mult in {0.5, 1.0, 1.5, 2.0} or explicit stage_channels",
    refs=_refs(_V2_CARDS[1]),
)
