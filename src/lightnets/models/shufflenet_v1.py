"""ShuffleNetV1 (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices", arXiv:1707.01083, Tables 1-2), with the channel lists of the official retrained models
(megvii-model/ShuffleNet-Series, ``ShuffleNetV1/network.py``).

Architecture (Table 1): a 3x3 stride-2 stem conv (24 channels at 1x) and a 3x3 stride-2 max-pool, then
stages 2/3/4 of 4/8/4 ShuffleNet units, global average pooling and a fully connected classifier.  The
output channels of stages 2/3/4 depend on the number of groups g (``V1_GROUPS``).

Unit (paper Fig. 2b/c): grouped 1x1 conv -> BN -> ReLU -> channel shuffle -> 3x3 depthwise conv -> BN ->
grouped 1x1 conv -> BN, with a bottleneck of ``out_channels / 4`` channels.  Stride 1 adds the identity
and applies ReLU; stride 2 concatenates a 3x3 stride-2 average-pooled shortcut (first) with the residual
branch (second) and applies ReLU, so the residual branch produces ``out - in`` channels.  The first 1x1 conv of
stage 2 is not grouped (its input, the stem, is narrow; Sec. 3.3).  The official code also shuffles in that
unit (a fixed permutation there), and so does this one.

Channel-shuffle order: ``layers.channel_shuffle`` -- the paper's order (Sec. 3.1: reshape to
(groups, channels_per_group), transpose, flatten), so output channel ``i * g + k`` is input channel
``k * C/g + i``.  It is applied right after the first 1x1 conv's ReLU, as in Fig. 2.  The megvii code
differs in both respects: it shuffles after the depthwise conv (equivalent, the depthwise conv and BN act
per channel) and views channels as (channels_per_group, groups), i.e. ``layers.channel_unshuffle``, the
inverse permutation.  Together with other module names and a bias-free classifier there, megvii checkpoints
do not load into this layout; no ShuffleNetV1 weights are shipped.  With g = 1 the shuffle is the identity
and is left out.

Width policy for ``width_mult`` = s (Table 2, "scaling the number of filters by s"):

* stage channels: stage 2 gets ``make_divisible(s * table_channels, 4 * g)`` -- a multiple of 4g, so the
  bottleneck (out / 4) and every grouped conv divide by g -- and stages 3 / 4 twice and four times that,
  as in Table 1.  For the paper's and the official widths no rounding happens.
* stem: ``max(12, 24 * 2**floor(log2 s))`` rounded up to a multiple of g (so that the stride-2 residual
  branch of stage 2, ``stage2 - stem`` channels, divides by g).  This reproduces every official model: 12
  at 0.5x for g = 3 but 16 for g = 8, 24 at 1x and 1.5x, 48 at 2x (``OFFICIAL_CHANNELS``).  Below 0.5x the
  stem stays at 12 (the narrowest official stem): with it g = 3 0.25x costs 13.3M MACs, Table 2's 13M (a
  stem of 6 would give 11.0M).  A width so small that stage 2 would not be wider than the stem is refused.
* head: none (the classifier reads stage 4 directly); no SE.

``padding="same"`` (``layers.PADDING_MODES``) pads the stem conv, the max-pool, the stride-2 depthwise convs
and the avg-pooled shortcut by TF's SAME rule (the average then counts real pixels only, as TF's ``avg_pool``);
no ShuffleNetV1 weights come from TF, the option is for models trained there by their users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..registry import PaperRef, register_model
from .layers import (
    ChannelShuffle,
    ClassifierModel,
    ConvNormAct,
    LayerFactory,
    _make_act,
    check_dropout,
    check_num_classes,
    check_padding,
    check_positive_int,
    check_width_mult,
    init_weights,
    make_divisible,
    make_pool2d,
    new_linear,
)

__all__ = [
    "OFFICIAL_CHANNELS",
    "ShuffleNetV1",
    "ShuffleV1Unit",
    "V1_GROUPS",
    "shufflenet_v1",
    "shufflenet_v1_channels",
]


class V1Groups(NamedTuple):
    """One row of the paper's Table 1: output channels of stages 2-4 at 1x for a group count."""

    groups: int
    stage_channels: tuple[int, int, int]
    macs_1x: float  # complexity column of Table 1 (the paper's "FLOPs" are multiply-adds)
    top1_error_1x: float  # Table 2, ShuffleNet 1x


class V1Stage(NamedTuple):
    """A stage row of Table 1 (the first unit of every stage has stride 2)."""

    name: str
    repeats: int


class V1Channels(NamedTuple):
    """The channel list of one official retrained model (megvii ShuffleNet-Series ``network.py``)."""

    groups: int
    width_mult: float
    stem_channels: int
    stage_channels: tuple[int, int, int]


# Table 1 of arXiv:1707.01083 (channels and complexity at 1x); top-1 errors from Table 2.
V1_GROUPS: tuple[V1Groups, ...] = (
    V1Groups(groups=1, stage_channels=(144, 288, 576), macs_1x=143e6, top1_error_1x=33.6),
    V1Groups(groups=2, stage_channels=(200, 400, 800), macs_1x=140e6, top1_error_1x=32.7),
    V1Groups(groups=3, stage_channels=(240, 480, 960), macs_1x=137e6, top1_error_1x=32.6),
    V1Groups(groups=4, stage_channels=(272, 544, 1088), macs_1x=133e6, top1_error_1x=32.8),
    V1Groups(groups=8, stage_channels=(384, 768, 1536), macs_1x=137e6, top1_error_1x=32.4),
)

# Table 1 of arXiv:1707.01083: stage repeats; names are this module's attribute names.
V1_STAGES: tuple[V1Stage, ...] = (
    V1Stage(name="stage2", repeats=4),
    V1Stage(name="stage3", repeats=8),
    V1Stage(name="stage4", repeats=4),
)

STEM_CHANNELS = 24  # Table 1, at 1x
MIN_STEM_CHANNELS = 12  # the narrowest official stem (0.5x); with it 0.25x g=3 matches Table 2's 13M MACs

# megvii-model/ShuffleNet-Series ShuffleNetV1/network.py: the retrained models' channel lists.  The width
# policy above reproduces every one of them (checked by the tests); they are data, not a lookup.
OFFICIAL_CHANNELS: tuple[V1Channels, ...] = (
    V1Channels(groups=3, width_mult=0.5, stem_channels=12, stage_channels=(120, 240, 480)),
    V1Channels(groups=3, width_mult=1.0, stem_channels=24, stage_channels=(240, 480, 960)),
    V1Channels(groups=3, width_mult=1.5, stem_channels=24, stage_channels=(360, 720, 1440)),
    V1Channels(groups=3, width_mult=2.0, stem_channels=48, stage_channels=(480, 960, 1920)),
    V1Channels(groups=8, width_mult=0.5, stem_channels=16, stage_channels=(192, 384, 768)),
    V1Channels(groups=8, width_mult=1.0, stem_channels=24, stage_channels=(384, 768, 1536)),
    V1Channels(groups=8, width_mult=1.5, stem_channels=24, stage_channels=(576, 1152, 2304)),
    V1Channels(groups=8, width_mult=2.0, stem_channels=48, stage_channels=(768, 1536, 3072)),
)


def _groups_row(groups: int) -> V1Groups:
    for row in V1_GROUPS:
        if row.groups == groups and not isinstance(groups, bool):
            return row
    allowed = ", ".join(str(r.groups) for r in V1_GROUPS)
    raise ValueError(f"ShuffleNetV1 groups must be one of {{{allowed}}} (paper Table 1), got {groups!r}")


def shufflenet_v1_channels(groups: int, width_mult: float) -> tuple[int, tuple[int, int, int]]:
    """(stem channels, stage 2-4 channels) for ``groups`` at ``width_mult`` under this module's width policy."""
    row = _groups_row(groups)
    width_mult = check_width_mult(width_mult)
    first = row.stage_channels[0]
    scaled_first = make_divisible(first * width_mult, 4 * groups)
    stages = tuple(c // first * scaled_first for c in row.stage_channels)  # stages keep Table 1's 1:2:4
    _, exponent = math.frexp(width_mult)  # width_mult = m * 2**exponent with 0.5 <= m < 1
    stem_target = max(MIN_STEM_CHANNELS, STEM_CHANNELS * 2.0 ** (exponent - 1))
    stem = math.ceil(stem_target / groups) * groups
    if stages[0] <= stem:
        raise ValueError(
            f"width_mult={width_mult!r} is too small for groups={groups}: stage 2 would have {stages[0]} channels, "
            f"not more than the {stem}-channel stem it must widen"
        )
    return stem, stages  # type: ignore[return-value]


class ShuffleV1Unit(nn.Module):
    """ShuffleNet unit (Fig. 2b, stride 1: add; Fig. 2c, stride 2: concat with a 3x3 avg-pooled shortcut).

    ``first_groups`` is the group count of the first 1x1 conv (1 in the first unit of stage 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int,
        first_groups: int | None = None,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleNet unit keeps its width: in_channels={in_channels}, out_channels={out_channels}"
            )
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        if branch_channels <= 0:
            raise ValueError(
                f"a stride-2 ShuffleNet unit must widen its input: in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        mid_channels = out_channels // 4  # bottleneck = 1/4 of the unit's output (official: also at stride 2)
        for name, c in (("bottleneck", mid_channels), ("residual branch", branch_channels)):
            if c % groups:
                raise ValueError(f"{name} channels ({c}) must be divisible by groups ({groups})")
        self.stride = stride
        self.conv1 = ConvNormAct(
            in_channels,
            mid_channels,
            1,
            groups=first_groups or groups,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.conv2 = ConvNormAct(
            mid_channels, mid_channels, 3, stride, groups=mid_channels, norm_layer=norm_layer, act_layer=None,
            padding=padding,
        )
        self.conv3 = ConvNormAct(
            mid_channels, branch_channels, 1, groups=groups, norm_layer=norm_layer, act_layer=None
        )
        self.shortcut = make_pool2d("avg", 3, 2, padding) if stride == 2 else nn.Identity()
        self.act = _make_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv3(self.conv2(self.shuffle(self.conv1(x))))
        if self.stride == 1:
            return self.act(x + residual)
        # Fig. 2c: ReLU after the concat.  The megvii code applies it to the residual only, the same thing
        # with ReLU: the shortcut is pooled from a ReLU output and is non-negative already.
        return self.act(torch.cat((self.shortcut(x), residual), dim=1))


def _check_channels(groups: int, stem_channels: int, stage_channels: Sequence[int]) -> tuple[int, ...]:
    """``stage_channels`` as a tuple once groups, counts and divisibility (4 * groups: the bottleneck is out / 4,
    split into ``groups``) are checked; ValueError naming the bad value otherwise."""
    _groups_row(groups)
    stage_channels = tuple(stage_channels)
    if len(stage_channels) != len(V1_STAGES):
        raise ValueError(f"stage_channels needs {len(V1_STAGES)} values (stages 2-4), got {stage_channels!r}")
    for c in (stem_channels, *stage_channels):
        check_positive_int("channel count", c)
    for c in stage_channels:
        if c % (4 * groups):
            raise ValueError(
                f"ShuffleNetV1 stage channels must be divisible by 4 * groups = {4 * groups} "
                f"(bottleneck out/4 split into {groups} groups), got {c}"
            )
    return stage_channels


class ShuffleNetV1(ClassifierModel):
    """ShuffleNetV1 with explicit channels (``shufflenet_v1`` derives them from groups and width_mult)."""

    small_input_policy = "conv1 and the max-pool at stride 1 (total stride 8, not 32); layers, keys unchanged"

    def __init__(
        self,
        groups: int,
        stem_channels: int,
        stage_channels: Sequence[int],
        num_classes: int = 1000,
        dropout: float = 0.0,
        in_chans: int = 3,
        small_input: bool = False,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.padding = padding = check_padding(padding)
        stage_channels = _check_channels(groups, stem_channels, stage_channels)
        check_positive_int("in_chans", in_chans)
        check_num_classes(num_classes)
        self.groups = groups
        self.stage_channels = stage_channels
        self.dropout_rate = check_dropout(dropout)
        self.small_input = bool(small_input)

        stride = 1 if small_input else 2
        self.conv1 = ConvNormAct(
            in_chans, stem_channels, 3, stride, norm_layer=norm_layer, act_layer=act_layer, padding=padding
        )
        self.maxpool = make_pool2d("max", 3, stride, padding)
        in_channels = stem_channels
        for stage_index, (stage, out_channels) in enumerate(zip(V1_STAGES, stage_channels, strict=True)):
            units = []
            for i in range(stage.repeats):
                first_groups = 1 if stage_index == 0 and i == 0 else groups  # Sec. 3.3
                units.append(ShuffleV1Unit(in_channels, out_channels, 2 if i == 0 else 1, groups, first_groups,
                                           norm_layer, act_layer, padding))  # fmt: skip
                in_channels = out_channels
            self.add_module(stage.name, nn.Sequential(*units))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.num_features = in_channels
        self.num_classes = num_classes
        self.fc = new_linear(in_channels, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))


def _shufflenet_v1(groups: int, width_mult: float, **kwargs) -> ShuffleNetV1:
    stem, stages = shufflenet_v1_channels(groups, width_mult)
    return ShuffleNetV1(groups=groups, stem_channels=stem, stage_channels=stages, **kwargs)


def shufflenet_v1(groups: int = 3, width_mult: float = 1.0, **kwargs) -> ShuffleNetV1:
    """ShuffleNetV1 with ``groups`` in {1, 2, 3, 4, 8} at any positive ``width_mult`` (see the width policy).

    Other keywords go to ``ShuffleNetV1`` (num_classes, dropout, in_chans, small_input, norm_layer, act_layer,
    padding).
    """
    return _shufflenet_v1(groups, width_mult, **kwargs)


# --- registrations ----------------------------------------------------------------------------------------

_PAPER = "Zhang et al. 2018, arXiv:1707.01083, Tables 1-2"
_OFFICIAL = "megvii-model/ShuffleNet-Series ShuffleNetV1 (retrained), README table"


class _OfficialResult(NamedTuple):
    """One row of the official repository's results table (MACs, params, top-1 error)."""

    groups: int
    width_mult: float
    macs: float
    params: float
    top1_error: float


_OFFICIAL_RESULTS: tuple[_OfficialResult, ...] = (
    _OfficialResult(groups=3, width_mult=0.5, macs=38e6, params=0.7e6, top1_error=42.7),
    _OfficialResult(groups=3, width_mult=1.0, macs=138e6, params=1.9e6, top1_error=32.2),
    _OfficialResult(groups=3, width_mult=1.5, macs=292e6, params=3.4e6, top1_error=28.4),
    _OfficialResult(groups=3, width_mult=2.0, macs=524e6, params=5.4e6, top1_error=25.9),
    _OfficialResult(groups=8, width_mult=0.5, macs=40e6, params=1.0e6, top1_error=41.2),
    _OfficialResult(groups=8, width_mult=1.0, macs=138e6, params=2.4e6, top1_error=32.0),
    _OfficialResult(groups=8, width_mult=1.5, macs=290e6, params=4.3e6, top1_error=29.0),
    _OfficialResult(groups=8, width_mult=2.0, macs=522e6, params=6.5e6, top1_error=27.1),
)

# Table 2's complexity for the narrower g = 3 networks (the 1x values are Table 1's, in V1_GROUPS).
_PAPER_NARROW_MACS = {0.5: 38e6, 0.25: 13e6}

_MACS_RTOL = 0.03


def _refs_for(groups: int, width_mult: float) -> tuple[PaperRef, ...]:
    refs = []
    if width_mult == 1.0:
        row = _groups_row(groups)
        refs.append(
            PaperRef(source=_PAPER, macs=row.macs_1x, top1=100 - row.top1_error_1x, macs_rtol=_MACS_RTOL)
        )
    elif groups == 3 and width_mult in _PAPER_NARROW_MACS:
        refs.append(PaperRef(source=_PAPER, macs=_PAPER_NARROW_MACS[width_mult], macs_rtol=_MACS_RTOL))
    for res in _OFFICIAL_RESULTS:
        if (res.groups, res.width_mult) == (groups, width_mult):
            refs.append(
                PaperRef(
                    source=_OFFICIAL,
                    macs=res.macs,
                    params=res.params,
                    top1=round(100 - res.top1_error, 1),
                    macs_rtol=_MACS_RTOL,
                    params_rtol=0.05,
                    params_round=0.1e6,
                )
            )
    return tuple(refs)


def _entry_name(groups: int, width_mult: float) -> str:
    whole, frac = f"{width_mult:.2f}".rstrip("0").split(".")
    return f"shufflenet_v1_g{groups}_x{whole}_{frac or '0'}"


_ENTRIES: tuple[tuple[int, float], ...] = (
    *((row.groups, 1.0) for row in V1_GROUPS),  # Table 1 at 1x
    (3, 0.25),  # Table 2
    *((res.groups, res.width_mult) for res in _OFFICIAL_RESULTS if res.width_mult != 1.0),  # official widths
)

for _groups, _width in _ENTRIES:
    register_model(
        _entry_name(_groups, _width),
        shufflenet_v1,
        family="shufflenet_v1",
        kwargs={"groups": _groups, "width_mult": _width},
        description=f"ShuffleNetV1 {_width}x, g={_groups}",
        refs=_refs_for(_groups, _width),
    )

register_model(
    "shufflenet_v1",
    shufflenet_v1,
    family="shufflenet_v1",
    kwargs={"groups": 3, "width_mult": 1.0},
    description="ShuffleNetV1, groups in {1, 2, 3, 4, 8}, any positive width_mult (default g=3, 1x)",
    refs=_refs_for(3, 1.0),
)
