"""MobileNetV3 (Howard et al. 2019): published numbers from the registry cards, both width policies, the
minimalistic variants, the fine-tuning interface, small inputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import count_macs, count_params
from lightnets.models.layers import SqueezeExcite
from lightnets.models.mobilenet_v3 import (
    LARGE,
    SMALL,
    MobileNetV3,
    MobileNetV3Arch,
    WidthPolicy,
    mobilenet_v3_large,
    mobilenet_v3_small,
    resolve_widths,
)

FAMILY = "mobilenet_v3"
NAMES = lightnets.list_models(family=FAMILY)
REF_CASES = [(n, i) for n in NAMES for i in range(len(lightnets.get_card(n).refs))]
BUILDERS = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


def _within(measured: float, published: float, rtol: float, rounding: float | None) -> bool:
    """Relative tolerance, or agreement at the paper's printed rounding (4.0M means 3.95M-4.05M)."""
    if abs(measured - published) <= rtol * published:
        return True
    return rounding is not None and abs(measured - published) <= rounding / 2


def test_expected_entries_registered() -> None:
    expected = {
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "mobilenet_v3_large_075",
        "mobilenet_v3_small_075",
        "mobilenet_v3_large_minimal",
        "mobilenet_v3_small_minimal",
    }
    assert expected <= set(NAMES)
    # every paper row carries MACs and params; the torchvision models carry their exact counts
    for name in expected - {"mobilenet_v3_small_minimal"}:
        refs = lightnets.get_card(name).refs
        assert any(r.macs and (r.params or r.exact_params) for r in refs), name
    # the one published MAdds figure that cannot be compared says why on its card
    (ref,) = lightnets.get_card("mobilenet_v3_small_minimal").refs
    assert ref.macs is None and ref.params and "65M" in ref.note
    for name in ("mobilenet_v3_large", "mobilenet_v3_small"):
        card = lightnets.get_card(name)
        assert card.torchvision_name == name
        assert any(r.exact_params for r in card.refs)
    for name in ("mobilenet_v3_large_075", "mobilenet_v3_small_075"):
        assert WidthPolicy(lightnets.get_card(name).kwargs["width_policy"]) is WidthPolicy.PAPER
        assert lightnets.create_model(name).width_policy is WidthPolicy.PAPER


@pytest.mark.parametrize(("name", "index"), REF_CASES)
def test_published_numbers(name: str, index: int) -> None:
    card = lightnets.get_card(name)
    ref = card.refs[index]
    model = lightnets.create_model(name)
    params = count_params(model)
    if ref.exact_params is not None:
        assert params == ref.exact_params
    if ref.params is not None:
        assert _within(params, ref.params, ref.params_rtol, ref.params_round), (params, ref)
    if ref.macs is not None:
        macs = count_macs(model, ref.input_size)
        assert _within(macs, ref.macs, ref.macs_rtol, ref.macs_round), (macs, ref)


def test_paper_policy_is_needed_for_table3_at_075() -> None:
    """torchvision's policy misses Table 3's 0.75 rows by ~10%; the paper policy is why they hold."""
    for builder, macs, params in ((mobilenet_v3_large, 155e6, 4.0e6), (mobilenet_v3_small, 44e6, 2.0e6)):
        tv = builder(width_mult=0.75)
        assert count_macs(tv) < 0.93 * macs
        assert count_params(tv) < 0.87 * params
        paper = builder(width_mult=0.75, width_policy="paper")
        assert abs(count_macs(paper) / macs - 1) < 0.03


@pytest.mark.parametrize("arch", [LARGE, SMALL], ids=["large", "small"])
def test_policies_agree_at_width_one(arch: MobileNetV3Arch) -> None:
    builder = BUILDERS[arch.name]
    tv = {k: v.shape for k, v in builder().state_dict().items()}
    paper = {k: v.shape for k, v in builder(width_policy=WidthPolicy.PAPER).state_dict().items()}
    assert tv == paper


def test_width_policy_rules() -> None:
    # Large at 0.75, block 9 (exp 184 on an 80-channel input): torchvision scales 184, the paper scales the
    # factor 184/80 on the rounded input 64.
    _, tv_blocks, tv_last, tv_head = resolve_widths(LARGE, 0.75, WidthPolicy.TORCHVISION)
    stem, blocks, last, head = resolve_widths(LARGE, 0.75, WidthPolicy.PAPER)
    assert (tv_blocks[8].expanded, blocks[8].in_channels, blocks[8].expanded) == (136, 64, 144)
    assert (stem, last, head, tv_last, tv_head) == (16, 720, 1280, 720, 960)
    # the head keeps its width at every multiplier under the paper policy, and follows w under torchvision's
    for w in (0.35, 0.5, 1.25):
        assert resolve_widths(SMALL, w, WidthPolicy.PAPER)[3] == 1024
        assert resolve_widths(SMALL, w, WidthPolicy.TORCHVISION)[3] != 1024
    # SE squeeze = make_divisible(expanded / 4, 8): Small block 1 (16 -> 8), Large block 4 (72 -> 24)
    assert resolve_widths(SMALL)[1][0].se_channels == 8
    assert resolve_widths(LARGE)[1][3].se_channels == 24


@pytest.mark.parametrize("policy", list(WidthPolicy))
def test_any_positive_width_builds(policy: WidthPolicy) -> None:
    for arch in (LARGE, SMALL):
        for width in (0.05, 0.1, 0.35, 0.6, 1.0, 1.25, 2.5, 4.0):
            stem, blocks, last, head = resolve_widths(arch, width, policy)
            widths = [stem, last, head] + [c for b in blocks for c in (b.expanded, b.out_channels)]
            assert all(c % 8 == 0 and c >= 8 for c in widths), (arch.name, width)
    for arch, width in ((LARGE, 0.1), (SMALL, 0.6), (SMALL, 1.3)):
        model = BUILDERS[arch.name](width_mult=width, width_policy=policy, num_classes=7).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 48)).shape == (1, 7)


def test_minimalistic_variant() -> None:
    for arch in (LARGE, SMALL):
        full, minimal = BUILDERS[arch.name](), BUILDERS[arch.name](minimalistic=True)
        kinds = {type(m) for m in minimal.modules()}
        assert SqueezeExcite not in kinds and nn.Hardswish not in kinds and nn.Hardsigmoid not in kinds
        depthwise = [m for m in minimal.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert depthwise and all(m.kernel_size == (3, 3) for m in depthwise)
        assert any(m.kernel_size == (5, 5) for m in full.modules() if isinstance(m, nn.Conv2d))
        # same widths as the full model
        strip = lambda bs: [(b.in_channels, b.expanded, b.out_channels, b.stride) for b in bs]  # noqa: E731
        assert strip(resolve_widths(arch)[1]) == strip(resolve_widths(arch, minimalistic=True)[1])


@pytest.fixture(scope="module")
def small10() -> MobileNetV3:
    return mobilenet_v3_small(num_classes=10).eval()


@pytest.fixture(scope="module")
def large_small_input() -> MobileNetV3:
    return mobilenet_v3_large(num_classes=10, small_input=True).eval()


@pytest.mark.parametrize("size", [(96, 96), (128, 160), (160, 112)])
def test_forward_shapes(small10: MobileNetV3, size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = small10.forward_features(x)
        assert feats.shape == (2, small10.last_conv_channels, -(-size[0] // 32), -(-size[1] // 32))
        assert small10(x).shape == (2, 10)


def test_small_input_keeps_keys(large_small_input: MobileNetV3) -> None:
    plain = mobilenet_v3_large(num_classes=10)
    ours = {k: v.shape for k, v in large_small_input.state_dict().items()}
    assert ours == {k: v.shape for k, v in plain.state_dict().items()}
    assert large_small_input.small_input_policy


@pytest.mark.parametrize("size", [28, 32])
def test_small_input(large_small_input: MobileNetV3, size: int) -> None:
    with torch.no_grad():
        feats = large_small_input.forward_features(torch.randn(2, 3, size, size))
        assert feats.shape[-2:] == (-(-size // 8),) * 2
        assert large_small_input.forward_head(feats).shape == (2, 10)
    small = mobilenet_v3_small(small_input=True, in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 1, size, size)).shape[-1] == -(-size // 8)


def test_classifier_interface() -> None:
    model = mobilenet_v3_large(num_classes=5).eval()
    assert model.num_features == 1280 and model.num_classes == 5
    assert model.get_classifier() is model.classifier[3]
    assert model.get_classifier().in_features == model.num_features
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert torch.allclose(model.get_classifier()(pre), model(x), atol=1e-6)
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(x).shape == (2, model.num_features)
    # the paper-policy 0.75 model keeps the 1280-wide head
    assert lightnets.create_model("mobilenet_v3_large_075").num_features == 1280
    assert lightnets.create_model("mobilenet_v3_small", num_classes=0)(x).shape == (2, 1024)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width_mult": 0},
        {"width_mult": -0.5},
        {"num_classes": -1},
        {"in_chans": 0},
        {"dropout": 1.0},
        {"width_policy": "timm"},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        mobilenet_v3_small(**kwargs)


def test_dropout_default_matches_torchvision() -> None:
    model = mobilenet_v3_small()
    assert isinstance(model, MobileNetV3)
    assert model.classifier[2].p == 0.2


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_large", "mobilenet_v3_small_minimal", "mobilenet_v3_small_075"]
)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=4).train()
    out = model(torch.randn(2, 3, 48, 48))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
