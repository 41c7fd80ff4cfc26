"""ShuffleNetV2: paper / torchvision numbers for every registry card, the fine-tuning interface, input sizes,
validation, and the unit's split / concat / shuffle wiring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import count_macs, count_params
from lightnets.models.layers import channel_shuffle
from lightnets.models.shufflenet_v2 import V2_WIDTHS, ShuffleNetV2, ShuffleV2Unit, shufflenet_v2
from lightnets.registry import PaperRef, get_card

NAMES = lightnets.list_models(family="shufflenet_v2")
TORCHVISION_NAMES = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


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


def test_registry_has_every_width() -> None:
    assert set(TORCHVISION_NAMES) <= set(NAMES)
    assert "shufflenet_v2" in NAMES
    for name in TORCHVISION_NAMES:
        assert get_card(name).torchvision_name == name


@pytest.mark.parametrize("name", NAMES)
def test_card_refs(name: str) -> None:
    card = get_card(name)
    assert card.refs, f"{name} has no reference numbers"
    # On the meta device nothing is computed; shapes, parameter counts and counted MACs are the same.
    with torch.device("meta"):
        model = lightnets.create_model(name)
        params = count_params(model)
        macs = count_macs(model, card.input_size)
    for ref in card.refs:
        _assert_ref(name, ref, params, macs)


def test_exact_torchvision_param_counts() -> None:
    # Written out, so a changed card cannot silently loosen the check.
    expected = {"x0_5": 1_366_792, "x1_0": 2_278_604, "x1_5": 3_503_624, "x2_0": 7_393_996}
    for suffix, params in expected.items():
        assert count_params(lightnets.create_model(f"shufflenet_v2_{suffix}")) == params


def test_table5_channels() -> None:
    for row in V2_WIDTHS:
        model = shufflenet_v2(width_mult=row.width_mult)
        stage_out = [
            stage[-1].branch2[-3].out_channels * 2 for stage in (model.stage2, model.stage3, model.stage4)
        ]
        assert tuple(stage_out) == row.stage_channels
        assert model.conv5[0].out_channels == row.head_channels == model.num_features
        assert model.conv1[0].out_channels == 24
        assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]


@pytest.fixture(scope="module")
def small_model() -> ShuffleNetV2:
    torch.manual_seed(0)
    return lightnets.create_model("shufflenet_v2_x0_5", num_classes=7).eval()


@pytest.mark.parametrize("size", [(96, 96), (128, 160), (160, 112), (97, 131)])
def test_forward_shapes(small_model: ShuffleNetV2, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = small_model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 32])
def test_small_input(size: int) -> None:
    model = lightnets.create_model("shufflenet_v2_x0_5", small_input=True, num_classes=10).eval()
    reference = lightnets.create_model("shufflenet_v2_x0_5", num_classes=10)
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


def test_fine_tuning_interface(small_model: ShuffleNetV2) -> None:
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        features = small_model.forward_features(x)
        pooled = small_model.forward_head(features, pre_logits=True)
    assert features.shape[1] == small_model.num_features == 1024
    assert pooled.shape == (1, small_model.num_features)
    assert small_model.get_classifier() is small_model.fc

    model = lightnets.create_model("shufflenet_v2_x0_5")
    model.reset_classifier(3)
    assert model.fc.out_features == 3 and model.num_classes == 3
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)
    assert lightnets.create_model("shufflenet_v2_x0_5", num_classes=0)(torch.randn(1, 3, 64, 64)).shape == (
        1,
        1024,
    )


def test_dropout_adds_no_keys() -> None:
    plain = lightnets.create_model("shufflenet_v2_x1_0")
    dropped = lightnets.create_model("shufflenet_v2_x1_0", dropout=0.2)
    assert list(plain.state_dict()) == list(dropped.state_dict())
    assert plain.dropout.p == 0.0 and dropped.dropout.p == 0.2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width_mult": 0.75}, r"0\.5, 1\.0, 1\.5, 2\.0.*0\.75"),
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": "1.0"}, "width_mult"),
        ({"stage_channels": (48, 97, 192)}, "97"),
        ({"stage_channels": (48, 96)}, "stage_channels"),
        ({"head_channels": 0}, "head_channels"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lightnets.create_model("shufflenet_v2", **kwargs)


def test_stage_channel_override() -> None:
    model = shufflenet_v2(stage_channels=(32, 64, 128), head_channels=256, num_classes=5, in_chans=1)
    assert model.stage_channels == (32, 64, 128)
    assert model.num_features == 256
    assert model.stage4[0].branch1[2].out_channels == 64
    assert model.eval()(torch.randn(2, 1, 64, 80)).shape == (2, 5)


def test_all_parameters_get_gradients() -> None:
    torch.manual_seed(0)
    model = lightnets.create_model("shufflenet_v2_x0_5", num_classes=4).train()
    out = model(torch.randn(3, 3, 64, 64))
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_stride1_unit_passes_half_through_interleaved() -> None:
    # Split -> branch on the second half -> concat (pass-through first) -> shuffle with 2 groups: the
    # untouched half lands on the even output channels (torchvision's order).
    unit = ShuffleV2Unit(16, 16, 1).eval()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        out = unit(x)
        branch = unit.branch2(x[:, 8:])
    torch.testing.assert_close(out[:, 0::2], x[:, :8])
    torch.testing.assert_close(out[:, 1::2], branch)


def test_stride2_unit_concats_both_branches_then_shuffles() -> None:
    unit = ShuffleV2Unit(8, 16, 2).eval()
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        out = unit(x)
        first = unit.branch1(x)
        expected = channel_shuffle(torch.cat((first, unit.branch2(x)), 1), 2)
    assert out.shape == (1, 16, 5, 5)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:, 0::2], first)


def test_unit_validation() -> None:
    with pytest.raises(ValueError, match="15"):
        ShuffleV2Unit(16, 15, 2)
    with pytest.raises(ValueError, match="in_channels=16"):
        ShuffleV2Unit(16, 32, 1)
