"""Issue 9: what a hostile first user still broke.  One test (or a few) per numbered case of the issue, each
reproducing the input that used to crash, lose data or be silently accepted, and asserting the answer now:
one line on stderr, exit status 2 (or the run succeeding where it should), nothing half-written.

Models are tiny (shufflenet_v2_x0_5 with ``small_input`` at 8 to 16 px) and checkpoints are built by hand
where no training is needed, so the file runs in well under a minute.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import cli, create_model
from lightnets.data import DataFormatError, ImageFolder, load_dataset
from lightnets.data.transforms import make_preprocessing
from lightnets.evaluation.predict import evaluate_checkpoint, predict
from lightnets.train import TrainConfig, train
from lightnets.train.checkpoint import CheckpointError, build_checkpoint, load_checkpoint

ARCH = "shufflenet_v2_x0_5"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


def _fails(argv: list[str], capsys, *needles: str) -> str:
    """Run the CLI; it must exit 2 with one stderr line containing every needle."""
    rc = cli.main(argv)
    line = _one_line(capsys.readouterr().err)
    assert rc == 2, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _image(path: Path, seed: int, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG")
    return path


def _folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(root / name / f"{i}.png", seed * 1000 + c * 100 + i)
    return root


def _checkpoint(path: Path, names: list[str], **changes) -> Path:
    """An untrained checkpoint for RGB folders at 16 px; ``changes`` overwrite top-level fields."""
    model = create_model(ARCH, num_classes=len(names), small_input=True)
    ckpt = build_checkpoint(model, arch=ARCH, kwargs={"num_classes": len(names), "small_input": True},
                            classes=names, preprocessing=make_preprocessing("imagenet", 16), epoch=1)  # fmt: skip
    ckpt.update(changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _train_argv(out: Path, data: str, *extra: str, size: int = 16, batch: int = 4) -> list[str]:
    return ["train", "--model", ARCH, "--data", data, "--out", str(out), "--epochs", "1", "--batch-size",
            str(batch), "--input-size", str(size), "--small-input", "--workers", "0", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished one-epoch run on the digits."""
    out = tmp_path_factory.mktemp("digits") / "run"
    cfg = TrainConfig(model=ARCH, data="digits", out=str(out), epochs=1, batch_size=16, input_size=8,
                      small_input=True, workers=0, progress=False, max_train_samples=64, seed=3)  # fmt: skip
    train(cfg, log_fn=lambda _: None)
    return out


# =========================================================================== 1. subset / reordered / superset


def test_1_eval_on_a_folder_with_a_subset_of_the_classes(tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "c.pt", ["ants", "bees", "wasps"])
    only_bees = _folder(tmp_path / "only_bees", {"bees": 3})
    result, ds, _ = evaluate_checkpoint(ckpt, str(only_bees))
    support = {r["class"]: r["support"] for r in result.per_class if r["kind"] == "class"}
    assert support == {"ants": 0, "bees": 3, "wasps": 0}
    assert ds.classes == ["ants", "bees", "wasps"] and set(ds.targets) == {1}
    # the CLI as the issue ran it
    assert cli.main(["eval", str(ckpt), str(only_bees), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["num_samples"] == 3


def test_1_labels_are_mapped_by_name_and_the_dataset_is_not_mutated(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "c.pt", ["wasps", "ants", "bees"])  # not in the folder's sorted order
    folder = _folder(tmp_path / "val", {"ants": 1, "bees": 2, "wasps": 3})
    own = ImageFolder(folder)
    result, ds, _ = evaluate_checkpoint(ckpt, str(folder))
    support = {r["class"]: r["support"] for r in result.per_class if r["kind"] == "class"}
    assert support == {"wasps": 3, "ants": 1, "bees": 2}
    assert own.classes == ["ants", "bees", "wasps"] and own.targets == [0, 1, 1, 2, 2, 2]


def test_1_a_superset_of_the_classes_names_the_unknown_ones(tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "c.pt", ["ants", "bees"])
    folder = _folder(tmp_path / "val", {"ants": 1, "bees": 1, "hornets": 1})
    _fails(["eval", str(ckpt), str(folder)], capsys, "hornets")


# =========================================================================== 2. file names that are not UTF-8


def test_2_json_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    from lightnets.util.atomic import json_text, write_json

    name = os.fsdecode(b"caf\xe9.png")  # '\udce9' inside
    path = write_json(tmp_path / "x.json", {"path": name, "class": "été"})
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8
    assert "été".encode() in raw  # readable text stays readable
    back = json.loads(raw)
    assert os.fsencode(back["path"]) == b"caf\xe9.png"
    assert json.loads(json_text(name)) == name


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_2_training_with_a_latin1_file_name_in_the_evaluated_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _folder(root / "train", {"a": 6, "b": 6})
    _folder(root / "val", {"a": 2, "b": 2}, seed=1)
    src = root / "val" / "b" / "0.png"
    bad = os.path.join(os.fsencode(root / "val" / "b"), b"caf\xe9.png")
    os.rename(src, bad)
    out = tmp_path / "run"
    cfg = TrainConfig(model=ARCH, data=str(root), out=str(out), epochs=1, batch_size=4, input_size=16,
                      small_input=True, workers=0, progress=False)  # fmt: skip
    result = train(cfg, log_fn=lambda _: None)
    assert result.report is not None and (out / "report.html").stat().st_size > 0
    ev = json.loads((out / "eval.json").read_bytes())
    paths = {os.fsencode(w["path"]) for w in ev["worst"] if w.get("path")} | set()
    # lossless: every listed path is a real file (the Latin-1 one included when it is among the worst)
    assert all(os.path.exists(p) for p in paths)
    with open(out / "per_class.csv", newline="") as f:
        assert [r["class"] for r in csv.DictReader(f)][:2] == ["a", "b"]
    # and the run can be resumed (it used to fail the same way every time)
    assert train(resume=out, log_fn=lambda _: None).report is not None


# =========================================================================== 3. checkpoint sizes are checked


@pytest.mark.parametrize(
    "change, field",
    [
        ({"kwargs": {"num_classes": 10**9, "small_input": True}}, "kwargs.num_classes"),
        ({"kwargs": {"num_classes": 5_000_000, "small_input": True}}, "kwargs.num_classes"),  # would fill RAM
        ({"classes": ["a", "b", "c"]}, "classes"),  # 3 names on a 2-output model
        ({"kwargs": {"num_classes": 3, "small_input": True}, "classes": ["a", "b", "c"]}, "kwargs.num_classes"),
        ({"kwargs": {"num_classes": 2, "small_input": True, "in_chans": 0}}, "kwargs.in_chans"),
        ({"preprocessing": {**make_preprocessing("imagenet", 16), "input_size": [10**7, 10**7]}},
         "preprocessing.input_size"),
        ({"preprocessing": {**make_preprocessing("imagenet", 16), "std": [0.2, 0.0, 0.2]}}, "preprocessing.std"),
    ],
)  # fmt: skip
def test_3_checkpoint_metadata_is_checked_before_anything_is_built(tmp_path: Path, capsys, change, field) -> None:
    ckpt = _checkpoint(tmp_path / "c.pt", ["a", "b"], **change)
    image = _image(tmp_path / "x.png", 0)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"field {field}"):
        predict(ckpt, [image])
    line = _fails(["predict", str(ckpt), str(image)], capsys, f"field {field}", str(ckpt))
    assert time.perf_counter() - start < 20, line


# =========================================================================== 4. full disk, export to a folder


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_4_eval_out_onto_a_full_disk(digits_run: Path, tiny_disk: Path, capsys) -> None:
    ev = tiny_disk / "ev"
    ev.mkdir()
    with open(tiny_disk / "filler", "wb") as f:  # leave a few hundred bytes
        try:
            f.write(b"\0" * (64 * 1024 - 600))
        except OSError:
            pass
    line = _fails(["eval", str(digits_run), "digits", "--out", str(ev)], capsys, "No space left on device")
    assert str(ev) in line and "could not write" in line
    # nothing half-written: no empty eval files, no temporaries
    assert all(p.stat().st_size > 0 for p in ev.iterdir()), list(ev.iterdir())
    assert not list(ev.glob(".*.tmp"))


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_4_export_to_a_directory(digits_run: Path, tmp_path: Path, capsys, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnx")
    target = tmp_path / "outdir"
    target.mkdir()
    _fails(["export", str(digits_run), "--format", fmt, "-o", str(target)], capsys, "is a directory", str(target))
    assert list(target.iterdir()) == []


# =========================================================================== 5. --resume with other options


def test_5_resume_refuses_conflicting_options(digits_run: Path, tmp_path: Path, capsys) -> None:
    before = (digits_run / "config.json").read_text()
    run = str(digits_run)
    _fails(["train", "--resume", run, "--model", "mobilenet_v2"], capsys, "model='mobilenet_v2'", f"model='{ARCH}'")
    _fails(["train", "--resume", run, "--data", "cifar10:/x"], capsys, "data='digits'")
    _fails(["train", "--resume", run, "--out", str(tmp_path / "elsewhere")], capsys, "stays in its directory")
    _fails(["train", "--resume", run, "--lr", "0.5"], capsys, "lr=0.5", "lr=None")
    assert (digits_run / "config.json").read_text() == before
    # repeating the original values is fine (and changes nothing)
    assert cli.main(["train", "--resume", run, "--model", ARCH, "--data", "digits", "--workers", "0"]) == 0


def test_5_resume_extends_a_finished_run_to_more_epochs(digits_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "extended from 1 to 3 epochs" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["epochs"] == 3 and saved["extensions"] == [{"from_epochs": 1, "to_epochs": 3}]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # the schedule is re-planned over 3 epochs (the recipe's steps and warm-up for the new total, the run's base
    # rate): the rows hold the rate of each epoch's last step
    from lightnets.train.engine import cosine_lr
    from lightnets.train.recipe import make_schedule

    resolved = saved["resolved"]
    spe = resolved["steps_per_epoch"]
    plan = make_schedule(spe, 3, saved["config"]["warmup_epochs"])
    assert plan.total_steps == 3 * spe
    lrs = [float(r["lr"]) for r in rows]
    for epoch in (2, 3):
        expected = cosine_lr(spe * epoch - 1, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps,
                             base_lr=resolved["lr"])  # fmt: skip
        assert lrs[epoch - 1] == pytest.approx(expected, rel=1e-6)
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    _fails(["train", "--resume", str(run), "--epochs", "2"], capsys, "epochs can only grow", "3 epochs")


# =========================================================================== 6. silently accepted inputs


def test_6_one_class_is_refused(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "data", {"only": 8})
    _fails(_train_argv(tmp_path / "run", str(root)), capsys, "single class", "'only'")


def test_6_an_empty_class_at_train_time_is_warned_about(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "data", {"a": 6, "b": 6})
    (root / "empty").mkdir()
    assert cli.main(_train_argv(tmp_path / "run", str(root), "--val-fraction", "0.25")) == 0
    out = capsys.readouterr().out
    assert "warning: class(es) ['empty'] have no readable training image" in out


def _write_idx(path: Path, arr: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_6_fashion_mnist_without_its_test_files(tmp_path: Path, capsys) -> None:
    root = tmp_path / "fashion"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte", np.zeros((20, 8, 8), dtype=np.uint8))
    _write_idx(root / "train-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
    with pytest.raises(DataFormatError, match="t10k"):
        load_dataset(f"fashion-mnist:{root}")
    assert load_dataset(f"idx:{root}").test is None  # the explicit way to train without a test split
    _fails(_train_argv(tmp_path / "run", f"fashion-mnist:{root}"), capsys, "t10k", "idx:")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--in-chans", "0"], "in_chans must be 1 or 3"),
        (["--in-chans", "2"], "in_chans must be 1 or 3"),
        (["--bn-eval"], "bn_eval keeps BatchNorm on pretrained statistics: it needs --weights"),
        (["--head-lr-mult", "5"], "head_lr_mult sets the rate of a new classifier"),
    ],
)
def test_6_options_that_do_nothing_or_the_wrong_thing(tmp_path: Path, capsys, extra, needle) -> None:
    _fails(_train_argv(tmp_path / "run", "digits", *extra, size=8), capsys, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_6_predict_batch_size_must_be_positive(digits_run: Path, tmp_path: Path, capsys, batch: str) -> None:
    image = _image(tmp_path / "x.png", 0)
    _fails(["predict", str(digits_run), str(image), "--batch-size", batch], capsys, f"batch_size must be >= 1, got {batch}")
    _fails(["eval", str(digits_run), "digits", "--batch-size", batch], capsys, f"batch_size must be >= 1, got {batch}")


# =========================================================================== 7. learning rates that diverge


@pytest.mark.parametrize("lr", ["inf", "1e30", "nan", "-1"])
def test_7_absurd_learning_rates_are_refused(tmp_path: Path, capsys, lr: str) -> None:
    _fails(_train_argv(tmp_path / "run", "digits", "--lr", lr, size=8), capsys, "lr must be a number > 0 and <= 10")


def test_7_a_diverging_run_ends_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from lightnets import train as train_mod

    def diverge(*args, **kwargs):
        raise FloatingPointError("loss became inf at step 3; lower the learning rate")

    monkeypatch.setattr(train_mod, "train", diverge)
    _fails(_train_argv(tmp_path / "run", "digits", size=8), capsys, "loss became inf at step 3")


# =========================================================================== 8. input sizes the machine cannot hold


@pytest.mark.parametrize("size", ["99999999999999999999", "40000"])
@pytest.mark.parametrize("command", ["train", "profile"])
def test_8_input_sizes_beyond_memory(tmp_path: Path, capsys, size: str, command: str) -> None:
    argv = (["profile", "mobilenet_v3_small", "--input-size", size] if command == "profile"
            else ["train", "--model", "mobilenet_v3_small", "--data", "digits", "--out", str(tmp_path / "r"),
                  "--input-size", size, "--no-progress"])  # fmt: skip
    _fails(argv, capsys, f"input size {size}x{size} is too large for this machine", "GB")


def test_8_the_estimate_scales_with_the_pixels() -> None:
    from lightnets.util.limits import check_fits

    model = create_model("mobilenet_v3_small")
    small = check_fits(model, (64, 64), 2)
    assert check_fits(model, (128, 128), 2) == pytest.approx(4 * small, rel=1e-6)
    assert check_fits(model, (64, 64), 8) == pytest.approx(4 * small, rel=1e-6)


# =========================================================================== 9. empty / truncated / missing best.pt


def test_9_empty_and_truncated_checkpoints_say_so(digits_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    image = _image(tmp_path / "x.png", 0)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(b"")
    _fails(["predict", str(run), str(image)], capsys, "is empty (0 bytes)", "best.pt")
    (run / "best.pt").write_bytes(data[: len(data) // 2])
    line = _fails(["predict", str(run), str(image)], capsys, "truncated or corrupt", "best.pt")
    assert "arbitrary code" not in line


def test_9_a_missing_best_pt_says_last_pt_is_used(digits_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    (run / "best.pt").unlink()
    image = _image(tmp_path / "x.png", 0)
    assert cli.main(["predict", str(run), str(image)]) == 0
    captured = capsys.readouterr()
    assert "has no best.pt; using" in _one_line(captured.err) and "last.pt" in captured.err
    assert captured.out.startswith(str(image))


# =========================================================================== 10. every image unreadable


def test_10_a_folder_whose_every_image_is_unreadable(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            (root / cls / f"{i}.jpg").write_text("not an image")
    line = _fails(_train_argv(tmp_path / "run", str(root), "--batch-size", "2"), capsys,
                  "all 10 image files", "unreadable", "lightnets check-data")  # fmt: skip
    assert "lower --batch-size" not in line


# =========================================================================== first-run polish


def test_no_progress_bar_frames_when_the_output_is_not_a_terminal(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    argv = ["train", "--model", ARCH, "--data", "digits", "--out", str(tmp_path / "run"), "--epochs", "2",
            "--batch-size", "16", "--input-size", "8", "--small-input", "--workers", "0", "--max-train-samples", "96"]  # fmt: skip
    # bytes, not text: universal newlines would turn the bars' carriage returns into line ends
    proc = subprocess.run([sys.executable, "-m", "lightnets.cli", *argv], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert b"\r" not in proc.stderr and b"\r" not in proc.stdout, proc.stderr[:200]
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]


def test_the_loss_panel_is_readable_after_a_huge_first_val_loss(tmp_path: Path, monkeypatch) -> None:
    from lightnets.evaluation import plots, report

    figures = []
    real = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig) or real(fig, path))
    history = [{"epoch": 1, "train_loss": 2.3, "val_loss": 380.0, "train_acc": 0.2, "val_top1": 0.1, "lr": 0.1},
               {"epoch": 2, "train_loss": 0.9, "val_loss": 0.8, "train_acc": 0.7, "val_top1": 0.7, "lr": 0.05},
               {"epoch": 3, "train_loss": 0.5, "val_loss": 0.45, "train_acc": 0.85, "val_top1": 0.85, "lr": 0.0}]  # fmt: skip
    report.plot_curves(history, tmp_path / "curves.png")
    loss_ax = next(ax for ax in figures[0].axes if ax.get_title() == "loss")
    assert loss_ax.get_yscale() == "log"
    # an ordinary history keeps its linear axis
    report.plot_curves([{**r, "val_loss": r["train_loss"] * 1.1} for r in history], tmp_path / "c2.png")
    assert next(ax for ax in figures[1].axes if ax.get_title() == "loss").get_yscale() == "linear"
