"""Runs through the linear probe: a --freeze run is one probe with a normal run directory whose checkpoint
``eval`` and ``predict`` read like any other; LP-FT records the probe as epoch 0 and fine-tunes after it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import cli, create_model
from lightnets.train import TrainConfig, train
from lightnets.train.checkpoint import load_checkpoint

ARCH = "mobilenet_v2_x0_35"


@pytest.fixture(scope="module")
def folder_and_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two classes of 32x32 photos-to-be (reddish vs bluish noise) in train/val folders, and 'pretrained'
    weights (a seeded random 1000-class model)."""
    root = tmp_path_factory.mktemp("probe") / "folder"
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 12)):
        for k, name in enumerate(("red", "blue")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 160, (32, 32, 3), dtype=np.uint8)
                arr[..., 0 if k == 0 else 2] += 90
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    torch.manual_seed(0)
    weights = root.parent / "weights.pth"
    torch.save(create_model(ARCH, num_classes=1000).state_dict(), weights)
    return root, weights


def _cfg(root: Path, weights: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(model=ARCH, data=str(root), weights=str(weights), input_size=32, workers=0, progress=False,
                       out=str(out), **kw)  # fmt: skip


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_frozen_run_is_a_probe_with_a_normal_run_directory(folder_and_weights, tmp_path: Path, capsys) -> None:
    root, weights = folder_and_weights
    out = tmp_path / "frozen"
    with pytest.warns(UserWarning, match="classifier"):
        result = train(_cfg(root, weights, out, freeze=True, epochs=3))
    for name in ("config.json", "classes.json", "last.pt", "best.pt", "metrics.csv", "eval.json", "report.html"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1"], "the probe is the whole run, whatever --epochs says"
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["method"] == "linear probe" and resolved["amp_resolved"] in ("fp32", "bf16")
    assert result.best_val_top1 == pytest.approx(float(rows[0]["val_top1"]))
    assert result.best_val_top1 >= 0.9, "red vs blue is linearly separable in any features"
    # the probe's own validation numbers are the model's: best.pt re-evaluated from images agrees
    assert result.final.top1 == pytest.approx(result.best_val_top1)
    assert result.final.loss == pytest.approx(float(rows[0]["val_loss"]), rel=0.2, abs=1e-3)
    before = torch.load(weights, weights_only=True)
    tuned = load_checkpoint(out / "best.pt")["model"]
    assert all(torch.equal(v, before[k]) for k, v in tuned.items() if not k.startswith("classifier."))
    capsys.readouterr()
    assert cli.main(["eval", str(out), str(root), "--split", "val", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(result.best_val_top1)
    assert cli.main(["predict", str(out), str(root / "val" / "red" / "0.png"), "--format", "json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    assert {t["class"] for t in pred["top"]} == {"red", "blue"}
    assert sum(t["prob"] for t in pred["top"]) == pytest.approx(1.0, abs=1e-4)


def test_lp_ft_records_the_probe_then_fine_tunes(folder_and_weights, tmp_path: Path) -> None:
    root, weights = folder_and_weights
    out = tmp_path / "lpft"
    with pytest.warns(UserWarning, match="classifier"):
        result = train(_cfg(root, weights, out, epochs=2))
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["lr"]) == 0.0 and float(rows[1]["lr"]) > 0
    assert [float(r["elapsed_s"]) for r in rows] == sorted(float(r["elapsed_s"]) for r in rows)
    config = json.loads((out / "config.json").read_text())
    resolved = config["resolved"]
    assert resolved["method"] == "LP-FT" and resolved["head_lr_mult"] == 1.0
    assert resolved["batch_size"] == 16 and config["config"]["batch_size"] == 16  # 48 images: the small batch
    assert resolved["steps_per_epoch"] == 3 and resolved["warmup_steps"] == 1
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and result.best_epoch in (0, 1, 2)
    assert load_checkpoint(out / "best.pt")["epoch"] == result.best_epoch
    # every layer trained after the probe (LP-FT), at one rate
    before = torch.load(weights, weights_only=True)
    assert not torch.equal(last["model"]["features.0.0.weight"], before["features.0.0.weight"])
    assert {g["lr_mult"] for g in last["train_state"]["optimizer"]["param_groups"]} == {1.0}


def test_plain_fine_tuning_without_the_probe(folder_and_weights, tmp_path: Path) -> None:
    root, weights = folder_and_weights
    out = tmp_path / "plain"
    with pytest.warns(UserWarning, match="classifier"):
        train(_cfg(root, weights, out, epochs=1, lp_ft=False))
    assert [r["epoch"] for r in _rows(out)] == ["1"]
    assert json.loads((out / "config.json").read_text())["resolved"]["head_lr_mult"] == 10.0
    with pytest.raises(ValueError, match="lp_ft needs pretrained weights"):
        train(TrainConfig(model=ARCH, data=str(root), lp_ft=True, out=str(tmp_path / "x")))
