"""Every registered model, tested the same way (new models are covered by registering them)."""

from __future__ import annotations

import pytest
import torch

import lightnets
from lightnets.registry import get_card

ALL = lightnets.list_models()


def _build(name: str, **kwargs):
    torch.manual_seed(0)
    return lightnets.create_model(name, **kwargs)


def test_registry_covers_every_family() -> None:
    assert set(lightnets.list_families()) == {
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "shufflenet_v1", "shufflenet_v2"
    }
    for family in lightnets.list_families():
        assert lightnets.list_models(family=family), family


def test_list_models_glob_and_unknown_name() -> None:
    assert lightnets.list_models("shufflenet_v2_x*") == [
        "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"
    ]
    assert lightnets.list_models("no_such_*") == []
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'"):
        lightnets.create_model("mobilenet_v9")
    with pytest.raises(ValueError, match="bad arguments"):
        lightnets.create_model("mobilenet_v2", not_a_kwarg=1)


@pytest.mark.parametrize("name", ALL)
def test_card_has_paper_reference(name: str) -> None:
    card = get_card(name)
    info = lightnets.model_info(name)
    assert info["family"] == card.family and "builder" not in info
    assert card.refs, f"{name} has no paper reference"
    assert all(r.source for r in card.refs)


@pytest.mark.parametrize("name", ALL)
def test_forward_train_backward_reaches_every_parameter(name: str) -> None:
    model = _build(name, num_classes=7)
    model.train()
    x = torch.randn(2, 3, 72, 56)  # non-square, small
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(dim=1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_eval_forward_at_several_sizes(name: str) -> None:
    model = _build(name, num_classes=5).eval()
    with torch.no_grad():
        for h, w in [(96, 96), (160, 128), (113, 97)]:
            out = model(torch.randn(1, 3, h, w))
            assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_fine_tuning_interface(name: str) -> None:
    model = _build(name, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.dim() == 4
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
    assert model.classifier_name()


@pytest.mark.parametrize("name", ALL)
def test_small_input_grayscale(name: str) -> None:
    model = _build(name, num_classes=10, in_chans=1, small_input=True).eval()
    assert model.small_input_policy
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[-2:] == (4, 4), "small_input keeps total stride 8: 28 px -> 4x4"
        assert model(x).shape == (2, 10)
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 10)
    big = _build(name, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert big.forward_features(torch.randn(1, 1, 224, 224)).shape[-2:] == (7, 7)
    # small_input changes strides only: every key and shape is the ImageNet model's, so weights transfer
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in big.state_dict().items()}


@pytest.mark.parametrize("name", ALL)
def test_bad_arguments_fail_early_with_the_value(name: str) -> None:
    with pytest.raises(ValueError, match="-3"):
        lightnets.create_model(name, num_classes=-3)
    with pytest.raises(ValueError, match="in_chans"):
        lightnets.create_model(name, in_chans=0)
    with pytest.raises(ValueError, match="dropout"):
        lightnets.create_model(name, dropout=1.5)
