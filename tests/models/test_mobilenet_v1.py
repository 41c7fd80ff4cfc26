"""MobileNetV1: the paper's numbers (Tables 3, 6, 7) from the registry cards, the architecture of Table 1 and
the fine-tuning interface."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import count_macs, count_params
from lightnets.models.layers import ConvNormAct
from lightnets.models.mobilenet_v1 import DepthwiseSeparable, MobileNetV1, mobilenet_v1
from lightnets.registry import PaperRef, get_card

NAMES = lightnets.list_models(family="mobilenet_v1")


def macs_match(measured: float, ref: PaperRef) -> bool:
    """Within ``macs_rtol`` of the paper; with ``macs_round``, also ``0 <= measured - paper < macs_round``
    (a figure printed truncated to that unit)."""
    diff = measured - ref.macs
    return abs(diff) <= ref.macs_rtol * ref.macs or (
        ref.macs_round is not None and 0 <= diff < ref.macs_round
    )


def params_match(measured: int, ref: PaperRef) -> bool:
    """Exact where the card is exact; else within ``params_rtol``, or equal at the paper's printed rounding
    (``|measured - paper| <= params_round / 2``)."""
    if ref.exact_params is not None and measured != ref.exact_params:
        return False
    if ref.params is None:
        return True
    diff = abs(measured - ref.params)
    return diff <= ref.params_rtol * ref.params or (
        ref.params_round is not None and diff <= ref.params_round / 2 * (1 + 1e-9)
    )


def test_every_paper_row_is_registered() -> None:
    assert NAMES == sorted(
        [
            "mobilenet_v1",
            "mobilenet_v1_x0_75",
            "mobilenet_v1_x0_5",
            "mobilenet_v1_x0_25",
            "mobilenet_v1_192",
            "mobilenet_v1_160",
            "mobilenet_v1_128",
        ]
    )
    for name in ("mobilenet_v1_192", "mobilenet_v1_160", "mobilenet_v1_128"):
        card = get_card(name)
        assert card.input_size == int(name.rsplit("_", 1)[1])
        assert [r.input_size for r in card.refs] == [card.input_size]


@pytest.mark.parametrize("name", NAMES)
def test_card_refs_match_measured_params_and_macs(name: str) -> None:
    card = get_card(name)
    model = card.builder(**card.kwargs)
    params = count_params(model)
    assert card.refs
    for ref in card.refs:
        macs = count_macs(model, ref.input_size)
        assert macs_match(macs, ref), (
            f"{name} @ {ref.input_size}: {macs / 1e6:.2f}M MACs vs {ref.macs / 1e6}M"
        )
        assert not macs_match(macs * 1.04 + 1e6, ref)  # the bar is tight enough to catch a wrong table
        assert params_match(params, ref), f"{name}: {params} params vs {ref.params}"
        assert ref.macs_rtol <= 0.02 and ref.params_rtol <= 0.05  # the bar promised in the brief


def test_width_1_counts_exactly() -> None:
    # Table 1 by hand: 4,231,976 parameters (1000-way Linear with bias) and 568,740,352 MACs at 224 px.
    model = mobilenet_v1()
    assert count_params(model) == 4_231_976
    assert count_macs(model, 224) == 568_740_352


def _conv(c_in: int, c_out: int, kernel: int, groups: int = 1) -> ConvNormAct:
    return ConvNormAct(c_in, c_out, kernel, groups=groups, norm_layer=None, act_layer=None, bias=False)


def _separable(channels: int) -> nn.Sequential:
    return nn.Sequential(_conv(channels, channels, 3, groups=channels), _conv(channels, channels, 1))


@pytest.mark.parametrize(
    ("layer", "size", "macs_m", "macs_unit", "params_m", "exact_macs"),
    [
        # Table 3: 3x3 standard conv, M = N = 512 at 14x14: 462M MAdds / 2.36M params
        (lambda: _conv(512, 512, 3), 14, 462, 1, 2.36, 9 * 512 * 512 * 14 * 14),
        # depthwise separable: 52.3M / 0.27M
        (lambda: _separable(512), 14, 52.3, 0.1, 0.27, (9 * 512 + 512 * 512) * 14 * 14),
        # width multiplier alpha = 0.75 (384 channels): 29.6M / 0.15M
        (lambda: _separable(384), 14, 29.6, 0.1, 0.15, (9 * 384 + 384 * 384) * 14 * 14),
        # and resolution multiplier rho = 0.714 (14 -> 10): 15.1M / 0.15M
        (lambda: _separable(384), 10, 15.1, 0.1, 0.15, (9 * 384 + 384 * 384) * 10 * 10),
    ],
)
def test_table3_layer_example(layer, size, macs_m, macs_unit, params_m, exact_macs) -> None:
    module = layer()
    macs, params = count_macs(module, size), count_params(module)
    assert macs == exact_macs  # the paper's formula, term by term
    assert abs(macs / 1e6 - macs_m) <= macs_unit / 2  # equal at the paper's printed precision
    assert abs(params / 1e6 - params_m) <= 0.005


def test_table1_structure() -> None:
    model = mobilenet_v1()
    blocks = [m for m in model.features if isinstance(m, DepthwiseSeparable)]
    assert len(blocks) == 13 and len(model.features) == 14
    assert [b.pw[0].out_channels for b in blocks] == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    assert [b.dw[0].stride[0] for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    for b in blocks:
        assert b.dw[0].groups == b.dw[0].in_channels == b.dw[0].out_channels
        assert isinstance(b.dw[2], nn.ReLU) and isinstance(b.pw[2], nn.ReLU)  # the paper's ReLU
    assert model.features[0][0].out_channels == 32 and model.features[0][0].stride == (2, 2)
    assert model.num_features == 1024
    assert model.classifier[0].p == pytest.approx(1e-3)
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


@pytest.mark.parametrize(
    ("width", "stem", "last"),
    # make_divisible(c * width, 8): nearest multiple of 8, at least 8, never more than 10% below c * width
    [(0.25, 8, 256), (0.3, 16, 304), (0.6, 24, 616), (1.3, 40, 1328), (0.01, 8, 16)],
)
def test_width_policy(width: float, stem: int, last: int) -> None:
    model = MobileNetV1(width_mult=width)
    assert all(c.out_channels % 8 == 0 for c in model.modules() if isinstance(c, nn.Conv2d))
    assert model.features[0][0].out_channels == stem
    assert model.num_features == last


def test_activation_is_configurable() -> None:
    model = MobileNetV1(act_layer=nn.ReLU6, width_mult=0.25)
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 27


@pytest.mark.parametrize("size", [(96, 96), (160, 128), (113, 97), (128, 160)])
def test_forward_shapes(size: tuple[int, int]) -> None:
    model = MobileNetV1(num_classes=11, width_mult=0.25).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
        feats = model.forward_features(torch.randn(1, 3, *size))
    assert out.shape == (2, 11) and torch.isfinite(out).all()
    assert feats.shape[-2:] == tuple(-(-s // 32) for s in size)


@pytest.mark.parametrize("size", [28, 32])
def test_small_input_gives_4x4(size: int) -> None:
    model = MobileNetV1(num_classes=10, width_mult=0.25, in_chans=1, small_input=True).eval()
    assert "stride" in model.small_input_policy
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, size, size)).shape == (2, 256, 4, 4)
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    # same keys and shapes as the ImageNet stem: small_input changes strides only
    big = MobileNetV1(num_classes=10, width_mult=0.25, in_chans=1)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in big.state_dict().items()
    }


def test_classifier_interface() -> None:
    model = MobileNetV1(num_classes=5, width_mult=0.5).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, model.num_features) == (2, 512)
        assert model.get_classifier().in_features == model.num_features
        assert torch.allclose(model.get_classifier()(pre), model(x), atol=1e-6)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, 512)
    assert model.classifier_name() == "classifier.1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": -0.5}, "-0.5"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MobileNetV1(**kwargs)


def test_train_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = MobileNetV1(num_classes=6).train()
    out = model(torch.randn(2, 3, 48, 40))
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_macs_scale_with_resolution_squared() -> None:
    # Sizes divisible by 32 scale every feature map exactly; the Linear layer is the only constant term.
    model = MobileNetV1(width_mult=0.25)
    linear = model.num_features * model.num_classes
    small, large = count_macs(model, 64), count_macs(model, 128)
    assert large - linear == 4 * (small - linear)
    assert count_macs(model, (64, 128)) - linear == 2 * (small - linear)
