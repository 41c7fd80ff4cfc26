"""The training loop's pieces on a tiny network: the schedule, parameter groups, freezing, one training step,
and the sample ids evaluation numbers its batches with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightnets.train.engine import (
    IdBatches,
    all_norms_in_eval,
    batches_with_ids,
    cosine_lr,
    evaluate,
    freeze_backbone,
    keep_frozen_norms_in_eval,
    param_groups,
    set_lr,
    train_one_epoch,
)


class Tiny(nn.Module):
    """conv + BN + ReLU + pool, then a linear ``classifier``: the shape of every zoo model, small."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
        self.classifier = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _batches(n: int = 4, batch: int = 8, classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 1, 6, 6, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]  # fmt: skip


def _sgd(model: nn.Module, lr: float = 0.1, **kw) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, lr=lr, weight_decay=5e-4, **kw), lr=lr, momentum=0.9)


# ------------------------------------------------------------------------------------------- schedule


def test_cosine_lr_warms_up_linearly_then_decays_to_the_final_rate() -> None:
    kw = dict(total_steps=110, warmup_steps=10, base_lr=0.5)
    assert [cosine_lr(s, **kw) for s in range(3)] == pytest.approx([0.05, 0.1, 0.15])
    assert cosine_lr(9, **kw) == pytest.approx(0.5)  # warm-up ends at the base rate
    assert cosine_lr(10, **kw) == pytest.approx(0.5)
    assert cosine_lr(60, **kw) == pytest.approx(0.25)  # half way through the decay: half the rate
    assert cosine_lr(110, **kw) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(500, **kw) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at the final rate
    assert cosine_lr(110, **kw, final_lr=0.01) == pytest.approx(0.01)
    assert cosine_lr(0, total_steps=5, warmup_steps=0, base_lr=0.5) == pytest.approx(0.5)  # no warm-up


# ------------------------------------------------------------------------------------------- groups


def test_param_groups_decay_only_weights_and_scale_the_head() -> None:
    model = Tiny()
    groups = param_groups(model, lr=0.1, weight_decay=5e-4, head_prefix="classifier", head_lr_mult=10.0)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert len(by_id) == len(list(model.parameters()))  # every parameter exactly once
    conv, bn_w, bn_b = model.features[0].weight, model.features[1].weight, model.features[1].bias
    assert by_id[id(conv)]["weight_decay"] == 5e-4 and by_id[id(conv)]["lr"] == pytest.approx(0.1)
    for p in (bn_w, bn_b, model.classifier.bias):  # norms and biases: no weight decay
        assert by_id[id(p)]["weight_decay"] == 0.0
    head_w = by_id[id(model.classifier.weight)]
    assert head_w["lr"] == pytest.approx(1.0) and head_w["lr_mult"] == 10.0 and head_w["weight_decay"] == 5e-4
    assert by_id[id(model.classifier.bias)]["lr"] == pytest.approx(1.0)
    opt = torch.optim.SGD(groups, lr=0.1)
    set_lr(opt, 0.02)  # the schedule's rate, times each group's multiplier
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.02, 0.2])


def test_frozen_parameters_are_left_out_of_the_groups() -> None:
    model = Tiny()
    frozen = freeze_backbone(model, "classifier")
    assert frozen == 3  # conv weight, BN weight and bias
    grouped = [p for g in param_groups(model, lr=0.1, weight_decay=0.0) for p in g["params"]]
    assert {id(p) for p in grouped} == {id(model.classifier.weight), id(model.classifier.bias)}


# ------------------------------------------------------------------------------------------- one epoch


def test_one_training_step_changes_the_weights_and_advances_the_step() -> None:
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rates: list[int] = []
    stats = train_one_epoch(model, _batches(n=1), _sgd(model), step=7, lr_at=lambda s: rates.append(s) or 0.1)
    assert rates == [7] and stats["step"] == 8 and stats["seen"] == 8
    assert 0 <= stats["correct"] <= 8 and stats["loss_sum"] > 0 and stats["seconds"] > 0
    after = model.state_dict()
    for name in ("features.0.weight", "features.1.weight", "classifier.weight", "classifier.bias"):
        assert not torch.equal(before[name], after[name]), name
    assert not torch.equal(before["features.1.running_mean"], after["features.1.running_mean"])  # BN trained


def test_a_frozen_backbone_and_its_norms_do_not_change() -> None:
    torch.manual_seed(0)
    model = Tiny()
    freeze_backbone(model, "classifier")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(model, _batches(), _sgd(model), step=0, lr_at=lambda s: 0.1,
                    after_train_mode=keep_frozen_norms_in_eval)  # fmt: skip
    after = model.state_dict()
    assert not model.features[1].training  # the frozen BatchNorm stays on its running statistics
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == name.startswith("classifier"), name


def test_all_norms_in_eval_keeps_statistics_but_trains_the_affine_parameters() -> None:
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(model, _batches(), _sgd(model), step=0, lr_at=lambda s: 0.1, after_train_mode=all_norms_in_eval)
    after = model.state_dict()
    assert torch.equal(before["features.1.running_mean"], after["features.1.running_mean"])
    assert not torch.equal(before["features.1.weight"], after["features.1.weight"])


def test_a_diverging_loss_names_the_step() -> None:
    model = Tiny()
    images, targets = _batches(n=1)[0]
    with pytest.raises(FloatingPointError, match="at step 3"):
        train_one_epoch(model, [(images * float("nan"), targets)], _sgd(model), step=3, lr_at=lambda s: 0.1)


# ------------------------------------------------------------------------------------------- sample ids


def test_batches_carry_ids_as_their_loader_states() -> None:
    plain = _batches(n=3, batch=4)
    ids = [b[2].tolist() for b in batches_with_ids(plain)]  # (images, targets): ids are positions
    assert ids == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    indexed = [(x, y, torch.tensor([10, 3, 7, 1]) + i) for i, (x, y) in enumerate(plain)]
    wrapped = IdBatches(indexed, yields_ids=True)
    assert len(wrapped) == 3
    assert [b[2].tolist() for b in batches_with_ids(wrapped)] == [[10, 3, 7, 1], [11, 4, 8, 2], [12, 5, 9, 3]]
    with pytest.raises(ValueError):  # a loader said to yield ids that does not: an error, not a silent guess
        list(IdBatches(plain, yields_ids=True))


def test_evaluate_scores_every_sample_once_and_restores_the_mode() -> None:
    model = Tiny().train()
    result = evaluate(model, IdBatches(_batches(n=2, batch=5), yields_ids=False), ["a", "b", "c"])
    assert model.training
    assert int(result.confusion.sum()) == 10 and 0.0 <= result.top1 <= 1.0
