"""The checkpoint format: a file carries everything needed to use it (architecture, its keyword arguments,
class names, preprocessing) and comes back equal; a file that was tampered with or does not fit is refused,
naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightnets.data.transforms import make_preprocessing
from lightnets.registry import create_model
from lightnets.train.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    atomic_save,
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

ARCH = "shufflenet_v2_x0_5"
KWARGS = {"num_classes": 3, "small_input": True, "in_chans": 1}
CLASSES = ["cat", "dog", "émeu"]


def _fields() -> dict:
    return dict(arch=ARCH, kwargs=KWARGS, classes=CLASSES, preprocessing=make_preprocessing("small", 28, in_chans=1))


def _saved(tmp_path: Path, **extra) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(ARCH, **KWARGS)
    return save_checkpoint(tmp_path / "c.pt", model, **_fields(), **extra), model


def test_round_trip_carries_arch_kwargs_classes_and_preprocessing(tmp_path: Path) -> None:
    path, model = _saved(tmp_path, epoch=4, metrics={"val_top1": 0.5})
    ckpt = load_checkpoint(path)
    assert (ckpt["format"], ckpt["version"]) == (FORMAT, VERSION)
    assert ckpt["arch"] == ARCH and ckpt["kwargs"] == KWARGS and ckpt["classes"] == CLASSES
    assert ckpt["preprocessing"] == make_preprocessing("small", 28, in_chans=1)
    assert ckpt["epoch"] == 4 and ckpt["metrics"] == {"val_top1": 0.5}
    rebuilt, _ = model_from_checkpoint(path)
    assert not rebuilt.training
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))  # the same network, from the file alone


def test_a_run_directory_resolves_to_its_best_then_last_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="without best.pt or last.pt"):
        load_checkpoint(tmp_path)
    path, _ = _saved(tmp_path)
    path.rename(tmp_path / "last.pt")
    assert Path(load_checkpoint(tmp_path)["path"]) == tmp_path / "last.pt"


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda c: c.update(format="something-else"), "not a lightnets checkpoint"),
        (lambda c: c.pop("preprocessing"), "lacks fields ['preprocessing']"),
        (lambda c: c.update(version=VERSION + 1), f"format version {VERSION + 1}"),
        (lambda c: c.update(arch=123), "field arch"),
        (lambda c: c.update(classes=["cat", "dog"]), "field classes"),  # 2 names, 3 outputs
        (lambda c: c["preprocessing"].update(input_size=[28]), "field preprocessing.input_size"),
        (lambda c: c["model"].update({"conv1.0.weight": "not a tensor"}), "field model"),
    ],
)  # fmt: skip
def test_a_tampered_checkpoint_is_refused_naming_the_field(tmp_path: Path, tamper, message: str) -> None:
    torch.manual_seed(0)
    ckpt = build_checkpoint(create_model(ARCH, **KWARGS), **_fields())
    tamper(ckpt)
    path = atomic_save(ckpt, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        model_from_checkpoint(path)


def test_weights_that_do_not_fit_the_recorded_architecture_are_refused(tmp_path: Path) -> None:
    ckpt = build_checkpoint(create_model(ARCH, **KWARGS), **_fields())
    ckpt["kwargs"] = {**KWARGS, "in_chans": 3}  # the stem's weights are for one channel
    ckpt["preprocessing"] = make_preprocessing("small", 28)
    with pytest.raises(CheckpointError, match="does not fit the weights"):
        model_from_checkpoint(atomic_save(ckpt, tmp_path / "m.pt"))
    ckpt = build_checkpoint(create_model(ARCH, **KWARGS), **_fields())
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("fc.")}  # head removed
    with pytest.raises(CheckpointError, match="does not fit"):
        model_from_checkpoint(atomic_save(ckpt, tmp_path / "h.pt"))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    plain = atomic_save(create_model(ARCH, **KWARGS).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain state_dict"):
        load_checkpoint(plain)
