"""ShuffleNetV1: paper (Tables 1-2) and official-model numbers for every registry card, the channel tables
and width policy, the unit's wiring (ungrouped first conv, shuffle order, avg-pool concat), the fine-tuning
interface, input sizes and validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import count_macs, count_params
from lightnets.models.layers import ChannelShuffle, channel_shuffle, channel_unshuffle
from lightnets.models.shufflenet_v1 import (
    OFFICIAL_CHANNELS,
    V1_GROUPS,
    ShuffleNetV1,
    ShuffleV1Unit,
    shufflenet_v1,
    shufflenet_v1_channels,
)
from lightnets.registry import PaperRef, get_card

NAMES = lightnets.list_models(family="shufflenet_v1")


def _within(measured: float, expected: float, rtol: float, rounding: float | None) -> bool:
    """Within ``rtol`` of the published value, or equal to it at the published rounding."""
    if abs(measured - expected) <= rtol * expected:
        return True
    return rounding is not None and abs(measured - expected) <= rounding / 2


def _assert_ref(name: str, ref: PaperRef, params: int, macs: int) -> None:
    if ref.exact_params is not None:
        assert params == ref.exact_params, f"{name}: {params} params != {ref.exact_params} ({ref.source})"
    if ref.params is not None:
        assert _within(params, ref.params, ref.params_rtol, ref.params_round), (
            f"{name}: {params} params vs {ref.params:.0f} ({ref.source})"
        )
    if ref.macs is not None:
        assert _within(macs, ref.macs, ref.macs_rtol, ref.macs_round), (
            f"{name}: {macs} MACs vs {ref.macs:.0f} (rtol {ref.macs_rtol}, {ref.source})"
        )


def test_registry_has_every_paper_and_official_row() -> None:
    expected = {f"shufflenet_v1_g{g}_x1_0" for g in (1, 2, 3, 4, 8)}
    expected |= {f"shufflenet_v1_g{g}_x{w}" for g in (3, 8) for w in ("0_5", "1_5", "2_0")}
    expected |= {"shufflenet_v1", "shufflenet_v1_g3_x0_25"}
    assert set(NAMES) == expected


@pytest.mark.parametrize("name", NAMES)
def test_card_refs(name: str) -> None:
    card = get_card(name)
    assert card.refs, f"{name} has no reference numbers"
    for ref in card.refs:
        assert ref.macs_rtol <= 0.03 and ref.params_rtol <= 0.05
    # On the meta device nothing is computed; shapes, parameter counts and counted MACs are the same.
    with torch.device("meta"):
        model = lightnets.create_model(name)
        params = count_params(model)
        macs = count_macs(model, card.input_size)
    for ref in card.refs:
        _assert_ref(name, ref, params, macs)


def test_paper_and_official_refs_present() -> None:
    # Both sources where both publish a number: Table 1 (137M) and the official table (138M / 1.9M) for g=3 1x.
    sources = {ref.source.split()[0] for ref in get_card("shufflenet_v1_g3_x1_0").refs}
    assert sources == {"Zhang", "megvii-model/ShuffleNet-Series"}
    macs = {ref.macs for ref in get_card("shufflenet_v1_g8_x1_0").refs}
    assert macs == {137e6, 138e6}
    assert get_card("shufflenet_v1_g3_x0_25").refs[0].macs == 13e6


@pytest.mark.parametrize("row", V1_GROUPS, ids=lambda r: f"g{r.groups}")
def test_table1_channels(row) -> None:
    stem, stages = shufflenet_v1_channels(row.groups, 1.0)
    assert (stem, stages) == (24, row.stage_channels)
    model = shufflenet_v1(groups=row.groups)
    outs = []
    for stage in (model.stage2, model.stage3, model.stage4):
        first = stage[0]
        outs.append(first.conv3.out_channels + first.conv1[0].in_channels)  # concat: shortcut + branch
        assert first.conv1.out_channels == outs[-1] // 4  # bottleneck = out / 4
    assert tuple(outs) == row.stage_channels
    assert model.num_features == row.stage_channels[-1]
    assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]


@pytest.mark.parametrize("official", OFFICIAL_CHANNELS, ids=lambda o: f"g{o.groups}_{o.width_mult}")
def test_width_policy_reproduces_official_channel_lists(official) -> None:
    assert shufflenet_v1_channels(official.groups, official.width_mult) == (
        official.stem_channels,
        official.stage_channels,
    )


def test_width_policy_for_other_widths() -> None:
    for groups in (1, 2, 3, 4, 8):
        for width in (0.25, 0.3, 0.5, 0.75, 1.25, 3.0):
            stem, stages = shufflenet_v1_channels(groups, width)
            assert all(c % (4 * groups) == 0 for c in stages), (groups, width, stages)
            assert (stages[0] - stem) % groups == 0 and stem % groups == 0
            assert stages[1] == 2 * stages[0] and stages[2] == 4 * stages[0]
    assert shufflenet_v1_channels(3, 0.25) == (12, (60, 120, 240))
    # builds at an unusual width, with the residual branches divisible by groups
    model = shufflenet_v1(groups=4, width_mult=0.5, num_classes=3).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_grouping_layout() -> None:
    model = shufflenet_v1(groups=3)
    units = [u for stage in (model.stage2, model.stage3, model.stage4) for u in stage]
    assert units[0].conv1[0].groups == 1  # Sec. 3.3: first pointwise conv of stage 2 not grouped
    assert all(u.conv1[0].groups == 3 for u in units[1:])
    assert all(u.conv3[0].groups == 3 for u in units)
    assert all(u.conv2[0].groups == u.conv2[0].in_channels for u in units)  # depthwise
    assert all(isinstance(u.shuffle, ChannelShuffle) and u.shuffle.groups == 3 for u in units)
    assert all(isinstance(u.shuffle, nn.Identity) for u in shufflenet_v1(groups=1).stage2)  # g=1: no shuffle
    strided = [u for u in units if u.stride == 2]
    assert len(strided) == 3 and all(isinstance(u.shortcut, nn.AvgPool2d) for u in strided)


def test_shuffle_uses_paper_order() -> None:
    # The unit's shuffle is layers.channel_shuffle (paper order), not its inverse (the megvii code's order).
    unit = ShuffleV1Unit(24, 24, 1, groups=3).eval()
    x = torch.arange(12.0).view(1, 12, 1, 1)
    shuffled = unit.shuffle(x)
    torch.testing.assert_close(shuffled, channel_shuffle(x, 3))
    assert shuffled.flatten().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert not torch.equal(shuffled, channel_unshuffle(x, 3))


def test_unit_wiring() -> None:
    # stride 2: [avg-pooled input, relu(branch)] concatenated; stride 1: relu(input + branch)
    unit = ShuffleV1Unit(24, 120, 2, groups=3, first_groups=1).eval()
    x = torch.relu(torch.randn(2, 24, 9, 11))
    with torch.no_grad():
        out = unit(x)
        branch = unit.conv3(unit.conv2(unit.shuffle(unit.conv1(x))))
    assert out.shape == (2, 120, 5, 6)
    torch.testing.assert_close(out[:, :24], nn.functional.avg_pool2d(x, 3, 2, 1))
    torch.testing.assert_close(out[:, 24:], torch.relu(branch))

    unit = ShuffleV1Unit(48, 48, 1, groups=4).eval()
    x = torch.randn(1, 48, 6, 6)
    with torch.no_grad():
        branch = unit.conv3(unit.conv2(unit.shuffle(unit.conv1(x))))
        torch.testing.assert_close(unit(x), torch.relu(x + branch))


@pytest.fixture(scope="module")
def small_model() -> ShuffleNetV1:
    torch.manual_seed(0)
    return lightnets.create_model("shufflenet_v1_g3_x0_5", num_classes=7).eval()


@pytest.mark.parametrize("size", [(96, 96), (128, 160), (160, 112), (97, 131)])
def test_forward_shapes(small_model: ShuffleNetV1, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = small_model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 32])
def test_small_input(size: int) -> None:
    model = lightnets.create_model("shufflenet_v1_g8_x0_5", small_input=True, num_classes=10).eval()
    reference = lightnets.create_model("shufflenet_v1_g8_x0_5", num_classes=10)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert model.small_input_policy
    with torch.no_grad():
        x = torch.randn(2, 3, size, size)
        features = model.forward_features(x)
        out = model(x)
    assert features.shape[-1] == -(-size // 8)  # total stride 8
    assert out.shape == (2, 10)


def test_fine_tuning_interface(small_model: ShuffleNetV1) -> None:
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        features = small_model.forward_features(x)
        pooled = small_model.forward_head(features, pre_logits=True)
    assert features.shape[1] == small_model.num_features == 480
    assert pooled.shape == (1, small_model.num_features)
    assert small_model.get_classifier() is small_model.fc
    assert small_model.classifier_name() == "fc"

    model = lightnets.create_model("shufflenet_v1_g8_x0_5")
    model.reset_classifier(3)
    assert model.fc.out_features == 3 and model.num_classes == 3
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)

    dropped = lightnets.create_model("shufflenet_v1_g8_x0_5", dropout=0.3)
    assert list(dropped.state_dict()) == list(lightnets.create_model("shufflenet_v1_g8_x0_5").state_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": -1.0}, "width_mult"),
        ({"width_mult": 0.05}, "0.05"),  # stage 2 no wider than the stem
        ({"groups": 5}, "5"),
        ({"groups": 0}, "groups"),
        ({"groups": True}, "groups"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lightnets.create_model("shufflenet_v1", **kwargs)


def test_bad_explicit_channels() -> None:
    with pytest.raises(ValueError, match="4 \\* groups = 12.*250"):
        ShuffleNetV1(groups=3, stem_channels=24, stage_channels=(250, 480, 960))
    with pytest.raises(ValueError, match="divisible by groups"):
        ShuffleNetV1(groups=3, stem_channels=25, stage_channels=(240, 480, 960))
    with pytest.raises(ValueError, match="widen"):
        ShuffleNetV1(groups=3, stem_channels=24, stage_channels=(24, 48, 96))


@pytest.mark.parametrize("groups", [1, 8])
def test_all_parameters_get_gradients(groups: int) -> None:
    torch.manual_seed(0)
    model = shufflenet_v1(groups=groups, width_mult=0.25, num_classes=4).train()
    out = model(torch.randn(3, 3, 64, 64))
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
