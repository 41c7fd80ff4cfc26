"""The shared layer vocabulary: rounding, conv-norm-act, squeeze-excite, channel shuffle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightnets.models.layers import (
    ChannelShuffle,
    ConvNormAct,
    SqueezeExcite,
    channel_shuffle,
    channel_unshuffle,
    check_width_mult,
    make_divisible,
    new_linear,
)


@pytest.mark.parametrize(
    "value, expected",
    [(32, 32), (32 * 0.75, 24), (16 * 0.35, 8), (24 * 0.35, 8), (320 * 0.35, 112), (1280 * 1.4, 1792), (3, 8), (60, 64), (36, 40)],
)
def test_make_divisible_examples(value: float, expected: int) -> None:
    assert make_divisible(value, 8) == expected


def test_make_divisible_never_drops_more_than_ten_percent() -> None:
    for tenths in range(10, 20000):
        v = tenths / 10
        out = make_divisible(v, 8)
        assert out % 8 == 0
        assert out >= 0.9 * v
        assert out <= v + 8  # and never overshoots by more than one step


def test_make_divisible_rejects_bad_divisor() -> None:
    with pytest.raises(ValueError, match="divisor"):
        make_divisible(10, 0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1.0", None, True])
def test_check_width_mult_names_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="width_mult"):
        check_width_mult(bad)  # type: ignore[arg-type]


def test_conv_norm_act_layout_and_switches() -> None:
    block = ConvNormAct(8, 16, kernel_size=3, stride=2)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert block[0].bias is None and block[0].padding == (1, 1)
    assert list(block.state_dict()) == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                        "1.num_batches_tracked"]
    plain = ConvNormAct(8, 16, kernel_size=1, norm_layer=None, act_layer=None)
    assert len(plain) == 1 and plain[0].bias is not None
    assert ConvNormAct(8, 8, 3, stride=2)(torch.zeros(1, 8, 15, 9)).shape == (1, 8, 8, 5)


def test_conv_norm_act_rejects_groups_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="groups=3"):
        ConvNormAct(8, 16, kernel_size=1, groups=3)


def test_squeeze_excite_keys_and_gate() -> None:
    se = SqueezeExcite(16, 8)
    assert sorted(se.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    x = torch.rand(2, 16, 5, 7)
    y = se(x)
    assert y.shape == x.shape
    gate = y / x
    # one gate per (sample, channel), in [0, 1] for hard-sigmoid
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-5)
    assert gate.min() >= 0 and gate.max() <= 1


@pytest.mark.parametrize("channels, groups", [(12, 3), (12, 4), (24, 2), (8, 8), (6, 1)])
def test_channel_shuffle_is_a_permutation_and_unshuffle_inverts(channels: int, groups: int) -> None:
    x = torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(2, channels, 3, 4).contiguous()
    y = channel_shuffle(x, groups)
    perm = y[0, :, 0, 0].long().tolist()
    assert sorted(perm) == list(range(channels))
    assert torch.equal(channel_unshuffle(y, groups), x)
    assert torch.equal(channel_shuffle(channel_unshuffle(x, groups), groups), x)


def test_channel_shuffle_order() -> None:
    # (groups, per_group) grid transposed: output i*groups + g comes from input g*per_group + i
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    # the other order in the wild is the inverse
    assert channel_unshuffle(x, 2).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_channel_shuffle_identity_for_one_group_and_module_form() -> None:
    x = torch.randn(2, 10, 3, 3)
    assert torch.equal(channel_shuffle(x, 1), x)
    assert torch.equal(ChannelShuffle(5)(x), channel_shuffle(x, 5))


def test_channel_shuffle_rejects_indivisible() -> None:
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(torch.zeros(1, 10, 2, 2), 3)


def test_new_linear() -> None:
    assert isinstance(new_linear(8, 0), nn.Identity)
    assert new_linear(8, 3).out_features == 3
    with pytest.raises(ValueError, match="num_classes"):
        new_linear(8, -1)
