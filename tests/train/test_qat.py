"""Quantization-aware training (``lightnets train --qat --weights RUN_OR_FILE``, lightnets.train.qat)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from lightnets import cli, create_model  # noqa: E402
from lightnets.data import load_dataset  # noqa: E402
from lightnets.train import TrainConfig, eval_loader, train  # noqa: E402
from lightnets.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from lightnets.train.engine import evaluate  # noqa: E402
from lightnets.train.qat import QATModel, check_qat_source, distillation_loss, norms_in_eval  # noqa: E402

TINY = dict(model="shufflenet_v2_x0_5", data="digits", input_size=16, batch_size=32, workers=0, progress=False)
SMALL = dict(num_classes=10, in_chans=1, small_input=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(qat=True), "needs --weights"),
        (dict(qat=True, weights="W", freeze=True), "cannot be combined with freeze"),
        (dict(qat=True, weights="W", lp_ft=True), "cannot be combined with freeze or lp_ft"),
        (dict(qat=True, weights="W", ema_decay=0.99), "drop --ema"),
        (dict(qat=True, weights="W", amp="bf16"), "trains in fp32"),
    ],
)
def test_config_refuses_what_qat_cannot_do(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings).validate()


def test_cli_qat_without_weights_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["train", "--qat", "--model", "shufflenet_v2_x0_5", "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --weights" in err[0], err


def test_weights_directory_that_is_no_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no best.pt or last.pt"):
        TrainConfig(qat=True, weights=str(tmp_path)).validate()


def _qat_model(seed: int = 0) -> tuple[torch.nn.Module, QATModel]:
    torch.manual_seed(seed)
    model = create_model("shufflenet_v2_x0_5", **SMALL).eval()
    return model, QATModel(model, torch.zeros(4, 1, 16, 16))


def test_state_dict_maps_back_to_the_original_keys_and_round_trips() -> None:
    model, qat = _qat_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert list(qat.state_dict()) == list(before)  # the same keys, in the same order
    assert all(torch.equal(qat.state_dict()[k], before[k]) for k in before)
    qat.train()
    opt = torch.optim.SGD(qat.parameters(), lr=0.1)
    x = torch.randn(6, 1, 16, 16)  # another batch than traced: the batch dimension is dynamic
    loss = torch.nn.functional.cross_entropy(qat(x), torch.arange(6)) + distillation_loss(qat(x), qat.teacher_logits(x))
    loss.backward()
    opt.step()
    qat(x)  # one more forward in train mode: BatchNorm statistics move too
    after = qat.state_dict()
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before), "the source model is left untouched"
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert any(k.endswith("running_mean") for k in changed) and any(k.endswith(".weight") for k in changed)
    plain = create_model("shufflenet_v2_x0_5", **SMALL)
    plain.load_state_dict(after, strict=True)
    assert all(torch.equal(plain.state_dict()[k], after[k]) for k in after)
    # the whole graph state (observers, fake-quantize scales: what resume restores) round-trips exactly
    _, fresh = _qat_model(seed=1)
    fresh.load_state_dict(qat.graph_state_dict())
    qat.eval(), fresh.eval()
    assert torch.equal(qat(x), fresh(x))
    # a float state_dict loads into the graph too, under the original keys
    fresh.load_state_dict(after)
    assert all(torch.equal(fresh.state_dict()[k], after[k]) for k in after)


def test_eval_mode_and_fake_quantization_are_real() -> None:
    model, qat = _qat_model()
    qat.eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        diff = (qat(x) - model(x)).abs().max().item()
    assert 0 < diff < 1, "fake quantization changes the output a little, not nothing and not everything"
    assert not qat.training and qat.train().training
    # --bn-eval (the default with --weights): training-mode steps leave the BatchNorm statistics as they were
    norms_in_eval(qat)
    before = {k: v.clone() for k, v in qat.state_dict().items() if "running" in k}
    qat(torch.randn(8, 1, 16, 16))
    assert all(torch.equal(qat.state_dict()[k], v) for k, v in before.items())


def test_refuses_weights_for_another_head(tmp_path: Path) -> None:
    other = create_model("shufflenet_v2_x0_5", **{**SMALL, "num_classes": 5})
    path = tmp_path / "five.pt"
    torch.save(other.state_dict(), path)
    model = create_model("shufflenet_v2_x0_5", **SMALL)
    with pytest.raises(ValueError, match="replaced head is pointless"):
        check_qat_source(model, str(path), [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch source run and a one-epoch QAT run from its directory, both on a small subset of digits."""
    root = tmp_path_factory.mktemp("qat")
    src = root / "src"
    train(TrainConfig(**TINY, lr=0.05, epochs=1, max_train_samples=128, out=str(src)))
    qat = root / "qat"
    train(TrainConfig(**TINY, epochs=1, max_train_samples=64, qat=True, weights=str(src), out=str(qat)))
    return src, qat


@pytest.mark.slow  # two runs with export + prepare_qat_pt2e: ~50 s on the 2-core CI machine
def test_qat_run_records_itself(qat_run: tuple[Path, Path]) -> None:
    _, qat = qat_run
    resolved = json.loads((qat / "config.json").read_text())["resolved"]
    assert resolved["method"] == "QAT" and resolved["amp_resolved"] == "fp32" and resolved["head_lr_mult"] == 1.0
    assert resolved["lr"] == pytest.approx(0.1 * 0.01 * 32 / 256)
    ckpt = load_checkpoint(qat / "best.pt")
    assert ckpt["qat"] is True and ckpt["arch"] == TINY["model"] and ckpt["classes"] == [str(i) for i in range(10)]
    assert "raw_model" in load_checkpoint(qat / "last.pt")["train_state"]  # the graph state, for resume


@pytest.mark.slow
def test_qat_checkpoint_loads_strictly_and_evaluates(qat_run: tuple[Path, Path]) -> None:
    src, qat = qat_run
    model, ckpt = model_from_checkpoint(qat / "best.pt")  # create_model + strict load
    source = load_checkpoint(src / "best.pt")
    assert set(ckpt["model"]) == set(source["model"])
    assert any(not torch.equal(ckpt["model"][k], source["model"][k]) for k in source["model"]), "QAT trained"
    splits = load_dataset("digits", val_fraction=0.1, seed=0, in_chans=1)
    loader = eval_loader(splits.val, ckpt["preprocessing"], 64, 0, torch.device("cpu"))
    result = evaluate(model, loader, ckpt["classes"])
    # the plain model built from best.pt scores exactly what the run reported for it (accuracy itself is the
    # slow test's business: this run is far too short to be good)
    reported = json.loads((qat / "eval.json").read_text())
    assert result.num_samples == reported["num_samples"] and result.top1 == pytest.approx(reported["top1"])
    assert torch.isfinite(torch.tensor(result.loss))


@pytest.mark.slow
def test_qat_int8_is_not_worse_than_ptq(tmp_path: Path) -> None:
    """Real: a digits run and one QAT epoch from it, both exported to int8 ONNX by the same PTQ export.  The QAT
    checkpoint's int8 file is not less accurate than the plain run's (beyond the noise of 179 val images), and
    agrees with its own fp32 model on nearly every image."""
    from lightnets.deploy.to_device import export

    src, qat = tmp_path / "src", tmp_path / "qat"
    train(TrainConfig(**TINY, lr=0.05, epochs=4, out=str(src)))
    train(TrainConfig(**TINY, epochs=1, qat=True, weights=str(src), out=str(qat)))
    reports = {run.name: export(run, "onnx", quantize="int8", max_drop=100.0, latency_s=0.0,
                                output=tmp_path / f"{run.name}.int8.onnx") for run in (src, qat)}  # fmt: skip
    ptq, qat_int8 = reports["src"].accuracy, reports["qat"].accuracy
    assert ptq["fp32"] > 50, "the source run learned digits"  # accuracies here are in percent
    assert qat_int8["exported"] >= ptq["exported"] - 2.0, (ptq, qat_int8)  # 2 points: ~4 of 179 images
    assert reports["qat"].agreement >= 0.95, reports["qat"].agreement
