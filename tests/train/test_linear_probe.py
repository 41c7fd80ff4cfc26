"""The linear probe: L-BFGS reaches the optimum of its convex objective, folding the standardisation keeps
the logits, the weight decay is chosen on validation, and the head it writes is an ordinary classifier."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lightnets import create_model
from lightnets.train import linear_probe as lp


def _blobs(n: int, d: int, classes: int, seed: int, spread: float = 1.0) -> lp.Features:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 2
    y = torch.arange(n) % classes
    x = centres[y] + spread * torch.randn(n, d, generator=g)
    return lp.Features(x * 0.03 + 0.5, y, torch.arange(n), 0.0)  # small, offset features like a real backbone's


def _objective(f: lp.Features, w: torch.Tensor, b: torch.Tensor, wd: float) -> torch.Tensor:
    mean, std = lp._stats(f.x)
    z = (f.x - mean) / std
    return F.cross_entropy(z @ w.T + b, f.y) + 0.5 * wd * (w * w).sum()


def test_lbfgs_reaches_the_optimum_of_the_regularised_objective() -> None:
    train = _blobs(300, 20, 3, seed=0, spread=2.5)  # overlapping classes: a finite, non-trivial optimum
    wd = 1e-3
    w, b = lp.fit_logistic(train, 3, wd)
    w.requires_grad_(True)
    b.requires_grad_(True)
    loss = _objective(train, w, b, wd)
    gw, gb = torch.autograd.grad(loss, [w, b])
    # the objective is wd-strongly convex in w, so a gradient norm g bounds the gap to the optimum:
    # f - f* <= g^2 / (2 wd) (the bias direction is not penalised; its gradient is tested alongside)
    g = torch.cat([gw.flatten(), gb]).norm().item()
    assert g < 1e-4 and g * g / (2 * wd) < 1e-5, g
    zero = torch.zeros_like(w), torch.zeros_like(b)
    assert loss.item() < _objective(train, *zero, wd).item() - 0.1, "it moved far from the start"


def test_folded_head_acts_on_raw_features() -> None:
    train = _blobs(120, 8, 2, seed=1)
    w, b = lp.fit_logistic(train, 2, 1e-2)
    mean, std = lp._stats(train.x)
    w_raw, b_raw = lp.fold_standardisation(w, b, mean, std)
    torch.testing.assert_close(train.x @ w_raw.T + b_raw, ((train.x - mean) / std) @ w.T + b, rtol=1e-4, atol=1e-4)


def test_weight_decay_is_chosen_on_validation() -> None:
    # 24 training samples in 200 dimensions, one informative: weak regularisation interpolates the noise
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> lp.Features:
        y = torch.arange(n) % 2
        x = torch.randn(n, 200, generator=g)
        x[:, 0] += 3.0 * (2 * y - 1)
        return lp.Features(x, y, torch.arange(n), 0.0)

    train, val = split(24), split(400)
    fit = lp.select_and_fit(train, val, 2)
    rows = {r["weight_decay"]: r for r in fit.grid}
    assert set(rows) == set(lp.WEIGHT_DECAY_GRID)
    best_acc = max(r["val_acc"] for r in fit.grid)
    ties = [r for r in fit.grid if r["val_acc"] == best_acc]
    assert fit.val_acc == best_acc and fit.val_loss == pytest.approx(min(r["val_loss"] for r in ties))
    by_loss = lp.select_and_fit(train, val, 2, select_by="loss")
    assert by_loss.val_loss == pytest.approx(min(r["val_loss"] for r in by_loss.grid))
    weakest = rows[min(lp.WEIGHT_DECAY_GRID)]
    assert by_loss.weight_decay > min(lp.WEIGHT_DECAY_GRID) and weakest["val_loss"] > by_loss.val_loss + 0.1, (
        "the weakest penalty interpolates the noise: validation prefers a stronger one"
    )
    assert weakest["train_loss"] < by_loss.train_loss
    no_val = lp.select_and_fit(train, None, 2)
    assert no_val.weight_decay == lp.DEFAULT_WEIGHT_DECAY and no_val.val_acc is None
    with pytest.raises(ValueError, match="select_by"):
        lp.select_and_fit(train, val, 2, select_by="f1")


def test_probe_head_is_the_models_classifier() -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_x0_35", num_classes=2, small_input=True).eval()
    images = torch.rand(40, 3, 32, 32)
    images[20:, 0] += 0.5  # class 1 is redder
    labels = (torch.arange(40) >= 20).long()
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 40, 16)]
    out = lp.run_probe(model, batches, batches, ["a", "b"], device=torch.device("cpu"))
    assert out.images == 80 and out.fit.train_acc == 1.0
    with torch.no_grad():
        logits = model(images)
    # the model with the copied head gives what the fit computed on the cached features
    assert out.val is not None and out.val.top1 == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert out.val.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)
