"""The training pipeline end to end on real data: it learns, checkpoints carry what eval / predict need,
resume continues the same run, fine-tuning freezes what it should, the CLI runs through its main function,
and a 2-process DDP run equals a single-process run with the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightnets import cli
from lightnets.train import RunDirError, TrainConfig, train
from lightnets.train.checkpoint import load_checkpoint, model_from_checkpoint

TINY = dict(model="shufflenet_v2_x0_5", data="digits", input_size=16, batch_size=32, lr=0.05, workers=0,
            progress=False)


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real run shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(**TINY, epochs=4, warmup_epochs=0.3, out=str(out)))
    return out


def test_run_directory_contents(digits_run: Path) -> None:
    for name in ["config.json", "classes.json", "split.json", "last.pt", "best.pt", "metrics.csv",
                 "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "eval.json", "report.html",
                 "curves.png"]:  # fmt: skip
        assert (digits_run / name).is_file(), name
    assert list((digits_run / "tb").glob("events.out.tfevents.*")), "TensorBoard events"
    assert not (digits_run / ".lock").exists(), "the lock is released at the end"
    assert json.loads((digits_run / "classes.json").read_text()) == [str(i) for i in range(10)]
    rows = _metrics(digits_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    html = (digits_run / "report.html").read_text()
    assert "shufflenet_v2_x0_5" in html and "data:image/png;base64," in html


def test_checkpoint_is_self_describing(digits_run: Path) -> None:
    ckpt = load_checkpoint(digits_run / "best.pt")
    assert ckpt["arch"] == "shufflenet_v2_x0_5" and ckpt["classes"] == [str(i) for i in range(10)]
    assert ckpt["kwargs"]["in_chans"] == 1 and ckpt["kwargs"]["small_input"] is True
    assert ckpt["preprocessing"]["input_size"] == [16, 16]
    model, _ = model_from_checkpoint(digits_run / "best.pt")
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_digits_learns_far_above_chance(digits_run: Path) -> None:
    ev = json.loads((digits_run / "eval.json").read_text())
    # 4 epochs of 1,617 images; chance is 0.10.  Measured 0.80 here.
    assert ev["top1"] > 0.5, ev["top1"]


def test_eval_cli_writes_outputs(digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["eval", str(digits_run), "digits", "--out", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    assert rc == 0 and "top-1" in out and "precision" in out
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    header = (tmp_path / "ev" / "confusion_matrix.csv").read_text().splitlines()[0]
    assert header.split(",")[1:] == [str(i) for i in range(10)]
    rc = cli.main(["eval", str(digits_run / "best.pt"), "digits", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["num_samples"] == 1797 and 0 <= data["top1"] <= 1


def test_predict_cli_table_json_and_annotate(digits_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from PIL import Image

    from lightnets.data import load_digits_dataset

    data = load_digits_dataset()
    paths = []
    for i in range(4):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(data.images[i, 0].numpy(), mode="L").save(p)
        paths.append(str(p))
    rc = cli.main(["predict", str(digits_run), *paths, "--format", "json", "--topk", "3",
                   "--annotate", str(tmp_path / "ann")])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(result["predictions"]) == 4 and result["errors"] == []
    for pred in result["predictions"]:
        assert len(pred["top"]) == 3
        probs = [t["prob"] for t in pred["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert len(list((tmp_path / "ann").glob("*.png"))) == 4
    rc = cli.main(["predict", str(digits_run), paths[0]])
    assert rc == 0 and paths[0] in capsys.readouterr().out


def test_existing_run_is_not_overwritten(digits_run: Path) -> None:
    before = (digits_run / "last.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        train(TrainConfig(**TINY, epochs=1, out=str(digits_run)))
    assert (digits_run / "last.pt").read_bytes() == before


class _Interrupt(Exception):
    pass


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    """A run interrupted after epoch 2 and resumed ends with exactly the metrics of an uninterrupted run."""
    cfg = dict(TINY, epochs=3, max_train_samples=256, ema_decay=0.9)
    full = train(TrainConfig(**cfg, out=str(tmp_path / "full")))

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch 2/3"):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(TrainConfig(**cfg, out=str(tmp_path / "cut")), log_fn=stop_after_two)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    lines: list[str] = []
    resumed = train(resume=tmp_path / "cut", log_fn=lines.append)
    # the run's opening lines (precision chosen, ...) come first; "resumed" is said before any epoch line
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    resumed_at = [i for i, line in enumerate(lines) if line.startswith("resumed")]
    assert len(resumed_at) == 1 and resumed_at[0] < first_epoch and "epoch 2/3" in lines[resumed_at[0]], lines
    a, b = _metrics(tmp_path / "full"), _metrics(tmp_path / "cut")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_top1", "lr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-6, abs=1e-7), (ra["epoch"], key)
    wa = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    assert resumed.final.top1 == pytest.approx(full.final.top1)


def test_fine_tune_frozen_backbone(tmp_path: Path) -> None:
    from lightnets import create_model

    torch.manual_seed(3)
    src = create_model("mobilenet_v2_x0_35", num_classes=1000)
    weights = tmp_path / "imagenet_like.pth"
    torch.save(src.state_dict(), weights)
    out = tmp_path / "ft"
    with pytest.warns(UserWarning, match="classifier"):
        train(TrainConfig(**{**TINY, "model": "mobilenet_v2_x0_35"}, epochs=1, out=str(out), weights=str(weights),
                          freeze=True, max_train_samples=128))  # fmt: skip
    tuned = load_checkpoint(out / "last.pt")
    before = src.state_dict()
    # every backbone tensor, BatchNorm running statistics included, is unchanged; the head was trained
    for k, v in tuned["model"].items():
        if k.startswith("classifier."):
            continue
        assert torch.equal(v, before[k]), k
    assert tuned["model"]["classifier.1.weight"].shape == (10, src.num_features)
    # --freeze fits the head as a linear probe on features computed once (no SGD steps; tests/train/test_probe_runs.py)
    assert tuned["train_state"]["step"] == 0 and tuned["epoch"] == 1
    opt_groups = tuned["train_state"]["optimizer"]["param_groups"]
    assert sum(len(g["params"]) for g in opt_groups) == 2, "only the head's weight and bias are trainable"


def test_bad_configs_fail_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1, got -1"):
        train(TrainConfig(**TINY, epochs=-1, out=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="unknown model"):
        train(TrainConfig(**{**TINY, "model": "nope"}, out=str(tmp_path / "b")))
    with pytest.raises(ValueError, match="freeze needs pretrained weights"):
        train(TrainConfig(**TINY, freeze=True, out=str(tmp_path / "c")))
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        train(TrainConfig(**{**TINY, "data": "folder:no/such/dir"}, out=str(tmp_path / "d")))
    assert not (tmp_path / "a").exists()


def test_fashion_mnist_short_run_learns(shared_data: Path, tmp_path: Path) -> None:
    """A short real run on Fashion-MNIST, scored on the official 10,000-image test set."""
    result = train(TrainConfig(model="shufflenet_v2_x0_5", data=f"fashion-mnist:{shared_data / 'fashion-mnist'}",
                               epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.2, max_train_samples=6000,
                               val_fraction=0.05,
                               workers=0, progress=False, out=str(tmp_path / "fm")))  # fmt: skip
    assert result.final_split == "test" and result.final.num_samples == 10000
    # chance is 0.10; one epoch on 6,000 images measured 0.70-0.75
    assert result.final.top1 > 0.55, result.final.top1


def _torchrun(args: list[str], nproc: int, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lightnets.cli", "train", *args] if nproc > 1 else [sys.executable, "-m", "lightnets.cli", "train", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _param_distance(a: dict, b: dict) -> float:
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k]
    num = sum(((a[k].double() - b[k].double()) ** 2).sum() for k in keys)
    den = sum((a[k].double() ** 2).sum() for k in keys)
    return float((num / den).sqrt())


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes x batch 16 vs 1 process x batch 32: same data order, augmentation,
    synchronised BatchNorm and averaged gradients, so the runs agree to float tolerance.

    On these 8x8 digits, float rounding alone (1 vs 2 threads in one process) moves the weights of a short
    run by a measurable amount, because BatchNorm on near-constant channels amplifies it; the DDP run must
    agree with the 1-process run as closely as that, and far more closely than a run with another seed."""
    common = ["--model", "mobilenet_v2_x0_35", "--data", "digits", "--input-size", "16", "--epochs", "1",
              "--dropout", "0", "--workers", "0", "--no-progress", "--max-train-samples", "128",
              "--lr", "0.0125", "--amp", "bf16"]  # fmt: skip  # the rate and precision the tolerances were set at
    _torchrun([*common, "--batch-size", "32", "--out", "single"], 1, tmp_path)
    _torchrun([*common, "--batch-size", "16", "--out", "ddp"], 2, tmp_path)
    _torchrun([*common, "--batch-size", "32", "--seed", "1", "--out", "other_seed"], 1, tmp_path)
    single = load_checkpoint(tmp_path / "single" / "last.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    other = load_checkpoint(tmp_path / "other_seed" / "last.pt")
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    d_ddp = _param_distance(single["model"], ddp["model"])
    d_seed = _param_distance(single["model"], other["model"])
    assert d_ddp < 0.05 * d_seed, (d_ddp, d_seed)
    for key in ("train_loss", "val_loss"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], rel=5e-3), key
