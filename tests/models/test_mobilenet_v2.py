"""MobileNetV2: the paper's and the released checkpoints' numbers from the registry cards, the width policy,
the block cost formula and the fine-tuning interface.  torchvision parity (keys, shapes, logits) is in
test_torchvision_parity.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import count_macs, count_params
from lightnets.models.mobilenet_v2 import InvertedResidual, MobileNetV2, mobilenet_v2
from lightnets.registry import PaperRef, get_card

NAMES = lightnets.list_models(family="mobilenet_v2")
GRID_SOURCE = "TF-slim released"


def macs_match(measured: float, ref: PaperRef) -> bool:
    """Within ``macs_rtol`` of the published figure; with ``macs_round``, also ``0 <= measured - published <
    macs_round`` (a figure printed truncated to that unit, as the released grid is)."""
    diff = measured - ref.macs
    return abs(diff) <= ref.macs_rtol * ref.macs or (
        ref.macs_round is not None and 0 <= diff < ref.macs_round
    )


def params_match(measured: int, ref: PaperRef) -> bool:
    """Exact where the card is exact; else within ``params_rtol``, or equal at the printed rounding."""
    if ref.exact_params is not None and measured != ref.exact_params:
        return False
    if ref.params is None:
        return True
    diff = abs(measured - ref.params)
    return diff <= ref.params_rtol * ref.params or (
        ref.params_round is not None and diff <= ref.params_round / 2 * (1 + 1e-9)
    )


def _grid_refs(name: str) -> list[PaperRef]:
    return [r for r in get_card(name).refs if r.source.startswith(GRID_SOURCE)]


def test_registered_names_and_grid_coverage() -> None:
    assert NAMES == sorted(
        ["mobilenet_v2", "mobilenet_v2_x1_4", "mobilenet_v2_x0_75", "mobilenet_v2_x0_5", "mobilenet_v2_x0_35"]
    )
    assert get_card("mobilenet_v2").torchvision_name == "mobilenet_v2"
    for name in NAMES:
        sizes = [r.input_size for r in _grid_refs(name)]
        assert sizes == ([224] if name == "mobilenet_v2_x1_4" else [224, 192, 160, 128, 96])
    published = {name: [round(r.macs / 1e6) for r in _grid_refs(name)] for name in NAMES}
    assert published == {  # PAPERS.md, released checkpoint grid
        "mobilenet_v2": [300, 221, 154, 99, 56],
        "mobilenet_v2_x0_75": [209, 153, 107, 69, 39],
        "mobilenet_v2_x0_5": [97, 71, 50, 32, 18],
        "mobilenet_v2_x0_35": [59, 43, 30, 20, 11],
        "mobilenet_v2_x1_4": [582],
    }
    table4 = {r.macs for n in NAMES for r in get_card(n).refs if "Table 4" in r.source}
    assert table4 == {300e6, 585e6}


@pytest.mark.parametrize("name", NAMES)
def test_card_refs_match_measured_params_and_macs(name: str) -> None:
    card = get_card(name)
    model = card.builder(**card.kwargs)
    params = count_params(model)
    macs_at = {size: count_macs(model, size) for size in {r.input_size for r in card.refs}}
    for ref in card.refs:
        macs = macs_at[ref.input_size]
        assert macs_match(macs, ref), (
            f"{name} @ {ref.input_size}: {macs / 1e6:.2f}M MACs vs {ref.macs / 1e6}M"
        )
        assert not macs_match(macs * 1.04 + 1e6, ref)  # the bar is tight enough to catch a wrong table
        assert params_match(params, ref), f"{name}: {params} params vs {ref}"
        assert ref.macs_rtol <= 0.03 and ref.params_rtol <= 0.05
        if ref.source.startswith(GRID_SOURCE):
            # stricter than the bar: the grid is these counts truncated to whole millions, in all 21 cells
            assert math.floor(macs / 1e6) == round(ref.macs / 1e6), (name, ref.input_size, macs)


def test_torchvision_card_exact() -> None:
    model = mobilenet_v2()
    assert count_params(model) == 3_504_872
    assert count_macs(model, 224) == 300_774_272
    assert model.classifier[0].p == pytest.approx(0.2)


@pytest.mark.parametrize("name", NAMES)
def test_released_parameter_counts_exactly(name: str) -> None:
    # The released grid counts conv and Linear weights of a 1001-class model, without BatchNorm parameters;
    # with that convention every width matches to the printed 0.01M.
    card = get_card(name)
    model = card.builder(**{**card.kwargs, "num_classes": 1001})
    norm = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    released = _grid_refs(name)[0].params
    assert round((count_params(model) - norm) / 1e4) == round(released / 1e4)


@pytest.mark.parametrize(
    ("width", "stem", "rows", "head"),
    [
        (1.0, 32, [16, 24, 32, 64, 96, 160, 320], 1280),
        (1.4, 48, [24, 32, 48, 88, 136, 224, 448], 1792),  # head scaled above 1
        (0.75, 24, [16, 24, 24, 48, 72, 120, 240], 1280),  # head kept at 1280 below 1
        (0.5, 16, [8, 16, 16, 32, 48, 80, 160], 1280),
        (0.35, 16, [8, 8, 16, 24, 32, 56, 112], 1280),
        (0.01, 8, [8] * 7, 1280),  # any positive width builds
        (2.0, 64, [32, 48, 64, 128, 192, 320, 640], 2560),
    ],
)
def test_width_policy(width: float, stem: int, rows: list[int], head: int) -> None:
    model = MobileNetV2(width_mult=width)
    assert model.features[0][0].out_channels == stem
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    first_of_row = [0, 1, 3, 6, 10, 13, 16]
    assert [blocks[i].out_channels for i in first_of_row] == rows
    assert model.num_features == model.features[-1][0].out_channels == head
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, nn.Conv2d))


def test_table2_structure() -> None:
    model = mobilenet_v2()
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17 and len(model.features) == 19
    strides = [b.conv[-3][0].stride[0] for b in blocks]
    assert strides == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert sum(b.use_residual for b in blocks) == 10  # n - 1 per row
    # linear bottleneck: the projection (last two modules) has no activation; others use ReLU6
    for b in blocks:
        assert isinstance(b.conv[-2], nn.Conv2d) and isinstance(b.conv[-1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 1 + 1 + 16 * 2 + 1
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


@pytest.mark.parametrize(("t", "c_in", "c_out"), [(6, 32, 32), (6, 64, 96), (1, 32, 16)])
def test_bottleneck_cost_formula(t: int, c_in: int, c_out: int) -> None:
    # Paper Sec. 3.3: h * w * d' * t * (d' + k^2 + d'') for a stride-1 block (no expansion term when t = 1).
    block = InvertedResidual(c_in, c_out, 1, t)
    expand = c_in if t != 1 else 0
    assert count_macs(block, 14) == 14 * 14 * c_in * t * (expand + 9 + c_out)


@pytest.mark.parametrize("size", [(96, 96), (160, 128), (113, 97), (128, 160)])
def test_forward_shapes(size: tuple[int, int]) -> None:
    model = MobileNetV2(num_classes=11, width_mult=0.35).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
        feats = model.forward_features(torch.randn(1, 3, *size))
    assert out.shape == (2, 11) and torch.isfinite(out).all()
    assert feats.shape[-2:] == tuple(-(-s // 32) for s in size)


@pytest.mark.parametrize("size", [28, 32])
def test_small_input_gives_4x4(size: int) -> None:
    model = MobileNetV2(num_classes=10, width_mult=0.5, in_chans=1, small_input=True).eval()
    assert "stride" in model.small_input_policy
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, size, size)).shape == (2, 1280, 4, 4)
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    big = MobileNetV2(num_classes=10, width_mult=0.5, in_chans=1)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in big.state_dict().items()
    }


def test_classifier_interface() -> None:
    model = MobileNetV2(num_classes=5, width_mult=0.5).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (2, model.num_features) == (2, 1280)
        assert model.get_classifier().in_features == model.num_features
        assert torch.allclose(model.get_classifier()(pre), model(x), atol=1e-6)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, 1280)
    assert model.classifier_name() == "classifier.1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width_mult": 0.0}, "width_mult"),
        ({"width_mult": -1}, "-1"),
        ({"num_classes": -2}, "num_classes"),
        ({"in_chans": -3}, "in_chans"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MobileNetV2(**kwargs)


def test_train_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=6).train()
    out = model(torch.randn(2, 3, 48, 40))
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_macs_scale_with_resolution_squared() -> None:
    model = MobileNetV2(width_mult=0.35)
    linear = model.num_features * model.num_classes
    small, large = count_macs(model, 64), count_macs(model, 128)
    assert large - linear == 4 * (small - linear)
    assert count_macs(model, (64, 128)) - linear == 2 * (small - linear)
