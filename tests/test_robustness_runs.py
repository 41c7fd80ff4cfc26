"""Runs that go wrong: bad arguments, prediction over a mix of good and bad files, training processes killed
at random moments and resumed, a disk that fills up while a checkpoint is written, and two runs started into
the same directory.  Every failure is created for real (a SIGKILL, a write that fails with ENOSPC, a second
live process) and the outcome is asserted.

The repeated-kill test starts ``lightnets train`` processes (OMP_NUM_THREADS=1, so the CPU arithmetic is
deterministic) and is marked slow; the rest runs in the normal suite.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightnets import cli
from lightnets.data.checks import check_model_config
from lightnets.train import RunLock, TrainConfig, train
from lightnets.train import checkpoint as ckpt_io
from lightnets.train.checkpoint import atomic_save, load_checkpoint, save_checkpoint

ARCH = "shufflenet_v2_x0_5"
# metrics.csv columns that are functions of the data, the seed and the arithmetic (the others time the run)
RESULT_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "test_loss",
                  "test_top1")  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # the tiny models here gain nothing from more threads, and on a busy machine OpenMP threads competing for
    # the cores make a training step many times slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def _train_argv(out: Path, epochs: int, *, samples: int = 64, size: int = 8, batch: int = 16) -> list[str]:
    return ["train", "--model", ARCH, "--data", "digits", "--out", str(out), "--epochs", str(epochs),
            "--batch-size", str(batch), "--input-size", str(size), "--small-input", "--workers", "0",
            "--no-progress", "--max-train-samples", str(samples), "--seed", "3"]  # fmt: skip


def _lightnets(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "lightnets.cli", *argv]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch run on the digits (8 x 8 grayscale) to predict with and to collide with."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = TrainConfig(model=ARCH, data="digits", out=str(out), epochs=1, batch_size=16, input_size=8,
                      small_input=True, workers=0, progress=False, max_train_samples=64, seed=3)  # fmt: skip
    train(cfg, log_fn=lambda _: None)
    return out


# =========================================================================== bad arguments


def _bad_argument_cases(tmp: Path) -> list[tuple[list[str], str]]:
    out = str(tmp / "never")
    base = ["--data", "digits", "--out", out, "--no-progress", "--workers", "0"]
    return [
        (["train", "--model", "mobilenet_v9", *base], "unknown model 'mobilenet_v9'"),
        (["train", "--model", "mobilenet_v2", "--model-arg", "width_mult=0", *base], "width_mult must be a finite number > 0, got 0"),
        (["train", "--model", "mobilenet_v2", "--model-arg", "width_mult=-0.5", *base], "got -0.5"),
        (["train", "--model", "mobilenet_v2", "--model-arg", "width_mult=inf", *base], "width_mult must be a finite number > 0, got inf"),
        (["train", "--model", "shufflenet_v1", "--model-arg", "groups=5", *base], "groups must be one of"),
        (["train", "--model", "shufflenet_v1", "--model-arg", "groups=0", *base], "got 0"),
        (["train", "--model", ARCH, "--model-arg", "wings=2", *base], "unexpected keyword argument 'wings'"),
        (["train", "--model", ARCH, "--epochs", "-3", *base], "epochs must be >= 1, got -3"),
        (["train", "--model", ARCH, "--batch-size", "0", *base], "batch_size must be >= 1, got 0"),
        (["train", "--model", ARCH, "--input-size", "4", *base], "input_size must be >= 8, got 4"),
        (["train", "--model", ARCH, "--input-size", "0", *base], "input_size must be >= 8, got 0"),
        (["train", "--model", ARCH, "--input-size", "8", "--batch-size", "1", "--no-small-input", *base],
         "cannot train on 8x8 images in batches of 1"),
        (["train", "--model", ARCH, "--data", str(tmp / "no_such_folder"), "--out", out], "no_such_folder"),
        (["train", "--model", ARCH, "--weights", str(tmp / "missing.pth"), *base], "missing.pth"),
        (["train", "--resume", str(tmp / "no_run")], "no_run"),
        (["predict", str(tmp / "no_ckpt.pt"), str(tmp)], "no_ckpt.pt"),
        (["eval", str(tmp / "no_ckpt.pt"), "digits"], "no_ckpt.pt"),
        (["profile", "mobilenet_v2", "--model-arg", "width_mult=0"], "width_mult must be a finite number > 0, got 0"),
        (["profile", "nope_net"], "unknown model 'nope_net'"),
    ]  # fmt: skip


def test_bad_arguments_fail_at_once_with_one_line(tmp_path: Path, capsys) -> None:
    for argv, expected in _bad_argument_cases(tmp_path):
        start = time.perf_counter()
        code = cli.main(argv)
        line = _one_line(capsys.readouterr().err)
        assert code == 2, (argv, line)
        assert expected in line and line.startswith(f"lightnets {argv[0]}: error: "), (argv, line)
        assert time.perf_counter() - start < 15, argv  # "at once": before any data is loaded
        # nothing left that would block the corrected command (a missing --data path is found only after the
        # run directory was made: it stays, empty)
        never = tmp_path / "never"
        assert not never.exists() or not any(never.iterdir()), (argv, list(never.iterdir()))


@pytest.mark.parametrize("argv", [["profile", "mobilenet_v2", "--input-size", "0"],
                                  ["profile", "mobilenet_v2", "--input-size", "4x-2"],
                                  ["train", "--epochs", "three"]])  # fmt: skip
def test_unparseable_values_are_argparse_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: argument" in err and argv[-1] in err


def test_check_model_config_names_the_problem() -> None:
    check_model_config(ARCH, {"small_input": True}, 8, 2)  # 1x1 maps in batches of two: fine
    check_model_config(ARCH, {"small_input": True}, 9, 1)  # 2x2 maps in batches of one: fine
    check_model_config(ARCH, {}, (224, 160), 1)
    with pytest.raises(
        ValueError, match=r"cannot train on 8x8 images in batches of 1: BatchNorm layer '[\w.]+'"
    ):
        check_model_config(ARCH, {"small_input": True}, 8, 1)
    with pytest.raises(ValueError, match="cannot train on 32x20 images"):
        check_model_config("mobilenet_v3_small", {}, (32, 20), 1)
    with pytest.raises(ValueError, match="width_mult must be a finite number > 0, got inf"):
        check_model_config("mobilenet_v2", {"width_mult": float("inf")})
    with pytest.raises(ValueError, match="input size must be positive, got 0x5"):
        check_model_config(ARCH, {}, (0, 5))


def test_a_failed_start_leaves_the_directory_startable(tmp_path: Path, capsys) -> None:
    # the run fails after its run directory was made (too few images for one batch): the same command, fixed,
    # must start rather than be told the directory "already holds a run"
    out = tmp_path / "run"
    argv = _train_argv(out, 1, samples=8)
    assert cli.main(argv) == 2
    assert "fewer than one batch" in _one_line(capsys.readouterr().err)
    assert not (out / "config.json").exists() and not (out / ".lock").exists()
    assert cli.main(_train_argv(out, 1, samples=32)) == 0
    assert (out / "last.pt").is_file()


# =========================================================================== predict on good and bad files


def test_predict_reports_each_bad_file_and_predicts_the_rest(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    good = []
    for name in ["zéro.png", "one two.jpg", "three.bmp"]:
        path = tmp_path / name
        Image.fromarray((torch.rand(12, 10) * 255).byte().numpy()).convert("RGB").save(path)
        good.append(path)
    cut = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (9, 99, 199)).save(cut, quality=90)
    cut.write_bytes(cut.read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    (tmp_path / "notes.txt").write_text("not an image extension")
    (tmp_path / "nothing").mkdir()
    bad = {
        str(cut): "truncated",
        str(tmp_path / "empty.png"): "empty file",
        str(tmp_path / "text.jpg"): "not an image Pillow can identify",
        str(tmp_path / "notes.txt"): "not an image file extension",
        str(tmp_path / "gone.png"): "no such file or directory",
        str(tmp_path / "nothing"): "directory holds no image files",
    }
    argv = ["predict", str(finished_run), *map(str, good), *bad]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    predicted = [line.split("\t")[0] for line in captured.out.splitlines()]
    assert predicted == [str(p) for p in good]
    errors = captured.err.splitlines()
    assert len(errors) == len(bad)
    for path, reason in bad.items():
        assert any(
            line.startswith(f"lightnets predict: cannot read {path}: ") and reason in line for line in errors
        )

    assert cli.main([*argv, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in doc["predictions"]] == [str(p) for p in good]
    assert {e["path"] for e in doc["errors"]} == set(bad)
    assert all(
        len(p["top"]) == 5 and abs(sum(t["prob"] for t in p["top"])) <= 1 + 1e-6 for p in doc["predictions"]
    )
    # only good files: exit status 0
    assert cli.main(["predict", str(finished_run), str(good[0])]) == 0


# =========================================================================== two runs, one directory


def test_existing_run_is_not_overwritten(finished_run: Path, capsys) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    assert cli.main(_train_argv(finished_run, 1)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "already holds a run" in line and f"--resume {finished_run}" in line
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_live_lock_refuses_and_dead_lock_is_taken_over(finished_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid} {socket.gethostname()}")
        assert cli.main(["train", "--resume", str(run)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"in use by process {holder.pid}" in line
        assert (run / ".lock").read_text() == f"{holder.pid} {socket.gethostname()}"  # left alone
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale and the resume goes ahead (here straight to the final report)
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert not (run / ".lock").exists()
    # a lock from another machine cannot be judged: refused
    (run / ".lock").write_text("4242 some-other-host")
    assert cli.main(["train", "--resume", str(run)]) == 2
    assert "in use by process 4242 on some-other-host" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("when", ["before_link", "after_link"])
def test_process_killed_while_taking_the_lock(tmp_path: Path, when: str) -> None:
    # SIGKILL lands inside RunLock.acquire: never an empty lock file that would block every later run
    code = f"""
import os, signal, sys
from pathlib import Path
from lightnets.train import RunLock
real_link = os.link
def link(src, dst):
    if {when == "after_link"!r}:
        real_link(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
os.link = link
RunLock(Path(sys.argv[1])).acquire()
"""
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=_env())
    assert proc.wait(timeout=120) == -signal.SIGKILL
    lock = tmp_path / ".lock"
    if when == "after_link":
        assert lock.read_text() == f"{proc.pid} {socket.gethostname()}"  # complete, and stale
    else:
        assert not lock.exists()
    fresh = RunLock(tmp_path)
    fresh.acquire()
    assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}"
    fresh.release()


def test_kill_before_the_first_checkpoint_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_lightnets(_train_argv(out, 2)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "config.json").exists() and not (out / "last.pt").exists()
    assert (out / ".lock").read_text().split()[0] == str(proc.pid)  # stale: its process is gone
    result = train(resume=out, log_fn=lambda _: None)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and not (out / ".lock").exists()


# =========================================================================== disk full


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails like a full disk (the bytes before it do reach the file)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        if len(b) > self.room:
            self.f.write(b[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        if not self.f.closed:
            self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


def _fill_disk_after(monkeypatch, room: int, skip: int = 0) -> list[int]:
    """Checkpoint writes (binary os.fdopen) after the first ``skip`` ones get ``room`` bytes, then ENOSPC."""
    real_fdopen = os.fdopen
    calls = [0]

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if "b" in mode and "w" in mode:
            calls[0] += 1
            if calls[0] > skip:
                return _FullDisk(f, room)
        return f

    monkeypatch.setattr(ckpt_io.os, "fdopen", fdopen)
    return calls


def _small_checkpoint(path: Path, fill: float) -> Path:
    from lightnets import create_model
    from lightnets.data.transforms import make_preprocessing

    model = create_model(ARCH, num_classes=2, small_input=True)
    torch.nn.init.constant_(model.get_classifier().weight, fill)
    return save_checkpoint(path, model, arch=ARCH, kwargs={"num_classes": 2, "small_input": True},
                           classes=["a", "b"], preprocessing=make_preprocessing("small", 16), epoch=1)  # fmt: skip


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch, where: str) -> None:
    path = _small_checkpoint(tmp_path / "last.pt", 0.25)
    before = path.read_bytes()
    if where == "write":
        _fill_disk_after(monkeypatch, room=4096)
    else:

        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ckpt_io.os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        _small_checkpoint(path, 0.75)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "No space left on device" in str(info.value)
    assert "previous file is intact" in str(info.value)
    assert path.read_bytes() == before
    assert float(load_checkpoint(path)["model"]["fc.weight"][0, 0]) == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the partial temporary file is gone


def test_real_full_file_system(tmp_path: Path) -> None:
    # where allowed (root with mount rights), a 256 kB tmpfs fills up for real
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        path = mnt / "last.pt"
        atomic_save({"w": torch.ones(8)}, path)
        with pytest.raises(OSError, match=f"could not write checkpoint {path} \\(No space left on device\\)"):
            atomic_save({"w": torch.zeros(1_000_000)}, path)
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(8))
        assert [p.name for p in mnt.iterdir()] == ["last.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_during_training_then_resume(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(model=ARCH, data="digits", out=str(out), epochs=2, batch_size=16, input_size=8,
                      small_input=True, workers=0, progress=False, max_train_samples=64, seed=3)  # fmt: skip
    calls = _fill_disk_after(monkeypatch, room=10_000, skip=2)  # epoch 1 saves best.pt and last.pt, then full
    with pytest.raises(
        OSError, match=r"could not write checkpoint .*(best|last)\.pt \(No space left on device\)"
    ):
        train(cfg, log_fn=lambda _: None)
    monkeypatch.undo()
    assert calls[0] == 3
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 1
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()
    with open(out / "metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] in (["1"], ["1", "2"])
    # space freed: the run continues from epoch 1 and finishes
    result = train(resume=out, log_fn=lambda _: None)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


# =========================================================================== killed again and again


def _read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_run_dir_readable(run: Path) -> dict[str, int]:
    """Every checkpoint in ``run`` loads (none is partial); metrics.csv parses.  Returns name -> epoch."""
    epochs = {}
    for path in sorted(run.glob("*.pt")):
        epochs[path.name] = load_checkpoint(path)["epoch"]
    if (run / "metrics.csv").exists():
        rows = _read_metrics(run / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    json.loads((run / "config.json").read_text())
    return epochs


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _epochs_done(run: Path) -> int:
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def _wait_for(condition, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.0005)
    return False


# When each process of the interrupted run is killed: right after its config is written (no checkpoint yet),
# in the middle of a checkpoint write, at a random moment after it made progress, at a random time after its
# start (often still importing), and while the last epoch's results are being written / the run finishes.
KILL_PLAN = ["config written", "checkpoint write", "after progress", "at random", "after progress", "at random",
             "finishing"]  # fmt: skip


@pytest.mark.slow
def test_killed_at_random_moments_resumes_to_the_same_result(tmp_path: Path, capsys) -> None:
    epochs = 5
    argv_ref = _train_argv(tmp_path / "reference", epochs, samples=384, size=16, batch=32)
    start = time.monotonic()
    subprocess.run(_lightnets(argv_ref), env=_env(), check=True, capture_output=True, timeout=600)
    uninterrupted = time.monotonic() - start

    run = tmp_path / "killed"
    rng = random.Random(20240611)
    argv = _train_argv(run, epochs, samples=384, size=16, batch=32)
    log: list[tuple[int, str, bool, dict[str, int]]] = []
    startup = epoch_time = uninterrupted / (epochs + 2)  # refined by the first attempt
    for attempt, plan in enumerate([*KILL_PLAN, "to the end"]):
        launched = time.monotonic()
        proc = subprocess.Popen(
            _lightnets(argv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        last0, done0 = _mtime(run / "last.pt"), _epochs_done(run)
        how = plan
        if plan == "config written":
            _wait_for(lambda: (run / "config.json").exists(), proc, 300)
            startup = time.monotonic() - launched
            epoch_time = max(0.2, (uninterrupted - 2 * startup) / epochs)
            # meanwhile a second run into the same directory, and a resume of it, must both refuse
            assert cli.main(_train_argv(run, epochs)) == 2
            assert "already holds a run" in capsys.readouterr().err
            assert cli.main(["train", "--resume", str(run)]) == 2
            assert f"in use by process {proc.pid}" in capsys.readouterr().err
        elif plan == "checkpoint write":
            if not _wait_for(lambda: bool(list(run.glob(".*.pt.*.tmp"))), proc, uninterrupted * 2):
                how += " (none caught)"
        elif plan == "after progress" and done0 < epochs:
            _wait_for(lambda last0=last0: _mtime(run / "last.pt") != last0, proc, uninterrupted * 2)
            delay = rng.uniform(0, epoch_time)
            _wait_for(lambda: False, proc, delay)
            how += f" + {delay:.2f} s"
        elif plan in ("at random", "after progress"):
            delay = rng.uniform(0.2, startup + epoch_time)
            _wait_for(lambda: False, proc, delay)
            how = f"at random, {delay:.2f} s after start"
        elif plan == "finishing":
            if done0 < epochs:
                _wait_for(lambda: _epochs_done(run) == epochs, proc, uninterrupted * 2)
            else:
                _wait_for(lambda: False, proc, startup)
            delay = rng.uniform(0, 1.0)
            _wait_for(lambda: False, proc, delay)
            how += f" + {delay:.2f} s"
        if plan != "to the end" and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=600)[0].decode(errors="replace")
        killed = proc.returncode == -signal.SIGKILL
        assert killed or proc.returncode == 0, output
        log.append((attempt, how, killed, _check_run_dir_readable(run)))  # every checkpoint loads, every time
        if not killed:
            break
        argv = ["train", "--resume", str(run)]
    print(
        "\n".join(
            f"attempt {a}: {'killed' if k else 'finished'} ({how}); checkpoints {e}" for a, how, k, e in log
        )
    )
    assert not log[-1][2], log  # the last resume ran to the end
    assert sum(k for _, _, k, _ in log) >= 5, log  # it really was interrupted, again and again

    # the same numbers as the run that was never interrupted
    ref_rows, rows = _read_metrics(tmp_path / "reference" / "metrics.csv"), _read_metrics(run / "metrics.csv")
    assert len(rows) == len(ref_rows) == epochs
    for ref, got in zip(ref_rows, rows, strict=True):
        assert ref.keys() == got.keys() and {"train_loss", "val_top1"} <= ref.keys()
        for key in ref.keys() & set(RESULT_COLUMNS):
            assert float(got[key]) == pytest.approx(float(ref[key]), rel=1e-6, abs=1e-9), (key, ref, got, log)
    for name in ("last.pt", "best.pt"):
        ref_ckpt, got_ckpt = load_checkpoint(tmp_path / "reference" / name), load_checkpoint(run / name)
        assert ref_ckpt["epoch"] == got_ckpt["epoch"]
        for key, value in ref_ckpt["model"].items():
            assert torch.equal(got_ckpt["model"][key], value), (name, key, log)
    ref_eval = json.loads((tmp_path / "reference" / "eval.json").read_text())
    got_eval = json.loads((run / "eval.json").read_text())
    assert got_eval["confusion"] == ref_eval["confusion"]
    assert got_eval["top1"] == pytest.approx(ref_eval["top1"], abs=1e-9)
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".lock*"))
