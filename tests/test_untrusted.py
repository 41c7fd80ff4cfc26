"""Untrusted files: weights and checkpoints that carry code, downloads without (or with a wrong) hash, and state
dicts that do not fit.  Nothing may execute, nothing unverified may be used, and every refusal says why.

The malicious files are real: each pickles an object whose ``__reduce__`` makes the unpickler call a function
(os.system, exec, Path.write_text) that creates a marker file.  A sanity test shows that a naive
``pickle.load`` / ``torch.load(weights_only=False)`` of them does create it; every lightnets entry point must
refuse them with the marker left absent.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightnets import cli, create_model
from lightnets.data.transforms import make_preprocessing
from lightnets.evaluation.predict import predict
from lightnets.models.weights import WeightsError, fetch_url, load_into, read_state_dict
from lightnets.train.checkpoint import (
    CheckpointError,
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
)

ARCH = "shufflenet_v2_x0_5"

# torch warns that the raw pickles use protocol 4 before refusing them; the warning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class Payload:
    """Unpickling an instance calls ``fn(*args)``: the mechanism of a malicious pickle."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, (f"touch '{marker}'",)),
        "exec": Payload(builtins.exec, (f"open({str(marker)!r}, 'w').write('pwned')",)),
        "Path.write_text": Payload(Path.write_text, (marker, "pwned")),
    }


def _tiny_model(num_classes: int = 2) -> torch.nn.Module:
    return create_model(ARCH, num_classes=num_classes, small_input=True)


def _evil_files(d: Path, marker: Path) -> dict[str, Path]:
    """Every container a malicious payload can come in, for each payload."""
    d.mkdir(parents=True, exist_ok=True)
    state = _tiny_model().state_dict()
    pre = make_preprocessing("small", 16)
    files: dict[str, Path] = {}
    for name, payload in payloads(marker).items():
        tag = name.replace(".", "_")
        files[f"{tag}-zip.pth"] = d / f"{tag}-zip.pth"
        torch.save({**state, "extra": payload}, files[f"{tag}-zip.pth"])
        files[f"{tag}-legacy.pth"] = d / f"{tag}-legacy.pth"
        torch.save(
            {**state, "extra": payload}, files[f"{tag}-legacy.pth"], _use_new_zipfile_serialization=False
        )
        files[f"{tag}-raw.pth"] = d / f"{tag}-raw.pth"
        files[f"{tag}-raw.pth"].write_bytes(pickle.dumps(payload))
        ckpt = build_checkpoint(_tiny_model(), arch=ARCH, kwargs={"num_classes": 2, "small_input": True},
                                classes=["a", "b"], preprocessing=pre, epoch=1, train_state=payload)  # fmt: skip
        files[f"{tag}-checkpoint.pt"] = d / f"{tag}-checkpoint.pt"
        torch.save(ckpt, files[f"{tag}-checkpoint.pt"])
    return files


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    d = tmp_path_factory.mktemp("evil")
    marker = d / "PWNED"
    return _evil_files(d / "files", marker), marker


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    Image.new("RGB", (20, 20), (120, 30, 200)).save(path)
    return path


def test_the_payloads_are_live(tmp_path: Path) -> None:
    # without weights_only, unpickling these files runs their code: the refusals below are not vacuous
    for name in payloads(tmp_path / "m"):
        marker = tmp_path / f"m-{name}"
        files = _evil_files(tmp_path / f"f-{name}", marker)
        pickle.loads(pickle.dumps(payloads(marker)[name]))
        assert marker.exists(), name
        marker.unlink()
        torch.load(files[f"{name.replace('.', '_')}-zip.pth"], weights_only=False)
        assert marker.exists(), name
        marker.unlink()


def test_weights_files_never_execute_code(evil) -> None:
    files, marker = evil
    for name, path in files.items():
        with pytest.raises(WeightsError, match="weights_only=True") as info:
            read_state_dict(path)
        assert str(path) in str(info.value), name
        with pytest.raises(WeightsError, match="cannot read weights file"):
            create_model(ARCH, weights=str(path), num_classes=2)
        assert not marker.exists(), name


def test_checkpoints_never_execute_code(evil, image: Path) -> None:
    files, marker = evil
    for name, path in files.items():
        with pytest.raises(CheckpointError, match="weights_only=True") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value), name
        with pytest.raises(CheckpointError):
            model_from_checkpoint(path)
        with pytest.raises(CheckpointError):
            predict(path, [image])
        assert not marker.exists(), name


def test_cli_refuses_malicious_files_with_one_line(evil, image: Path, tmp_path: Path, capsys) -> None:
    files, marker = evil
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / cls / "x.png")
    run_dir = tmp_path / "run"  # a run directory whose best.pt was replaced
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(files["os_system-checkpoint.pt"].read_bytes())
    for argv in (
        ["predict", str(files["os_system-checkpoint.pt"]), str(image)],
        ["predict", str(run_dir), str(image)],
        ["eval", str(files["exec-zip.pth"]), str(data)],
        ["eval", str(files["Path_write_text-legacy.pth"]), str(data)],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot read checkpoint" in err[0] and "weights_only" in err[0], err
    argv = ["train", "--model", ARCH, "--data", str(data), "--weights", str(files["os_system-raw.pth"]),
            "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "2", "--workers", "0", "--no-progress",
            "--input-size", "16"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read weights file" in err[0] and "os_system-raw.pth" in err[0]
    assert not marker.exists()


# =========================================================================== safetensors


def test_safetensors_weights_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _tiny_model(5)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = create_model(ARCH, weights=str(path), num_classes=5, small_input=True).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_project_exports_are_safetensors_that_load_back(tmp_path: Path, capsys) -> None:
    # `lightnets export --format safetensors` writes the code-free format; create_model(weights=...) reads it
    model = _tiny_model(3)
    ckpt = tmp_path / "model.pt"
    ckpt_kwargs = {"num_classes": 3, "small_input": True}
    ckpt_io_save = build_checkpoint(model, arch=ARCH, kwargs=ckpt_kwargs, classes=["a", "b", "c"],
                                    preprocessing=make_preprocessing("small", 16))  # fmt: skip
    torch.save(ckpt_io_save, ckpt)
    out = tmp_path / "model.safetensors"
    assert cli.main(["export", str(ckpt), "--format", "safetensors", "--output", str(out)]) == 0
    capsys.readouterr()
    assert out.read_bytes()[8:9] == b"{"  # a JSON header, not a pickle
    loaded = create_model(ARCH, weights=str(out), **ckpt_kwargs).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_bad_safetensors_files_are_refused(tmp_path: Path, evil) -> None:
    files, marker = evil
    cases = {
        "garbage.safetensors": os.urandom(256),
        "lying_header.safetensors": (10**12).to_bytes(8, "little") + b"{}",
        "pickle_inside.safetensors": files["os_system-raw.pth"].read_bytes(),
        "empty.safetensors": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError, match=f"cannot read safetensors file {path}"):
            read_state_dict(path)
    assert not marker.exists()


# =========================================================================== downloads


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch) -> Path:
    """A private torch hub cache (TORCH_HOME) and a weights file to 'download' through a file:// URL."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    src = tmp_path / "src"
    src.mkdir()
    torch.save(_tiny_model().state_dict(), src / "tiny.pth")
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_without_hash_is_refused_unless_the_user_opts_out(hub: Path, tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny.pth"
    url = src.as_uri()
    with pytest.raises(WeightsError, match="no sha256 to check it against"):
        fetch_url(url)
    with pytest.raises(WeightsError, match="no sha256"):
        create_model(ARCH, weights=url, num_classes=2, small_input=True)
    assert not (hub / "tiny.pth").exists()  # refused before downloading anything
    assert fetch_url(url, allow_unverified=True) == hub / "tiny.pth"
    # a cached copy fetched unverified is not used silently later either
    with pytest.raises(WeightsError, match="no sha256"):
        fetch_url(url)
    model = create_model(ARCH, weights=url, num_classes=2, small_input=True, allow_unverified=True)
    assert torch.equal(model.state_dict()["fc.weight"], torch.load(src, weights_only=True)["fc.weight"])


def test_url_with_matching_hash_loads(hub: Path, tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny.pth"
    digest = _sha(src)
    assert fetch_url(src.as_uri(), sha256=digest) == hub / "tiny.pth"
    assert fetch_url(src.as_uri(), sha256=digest[:12].upper()) == hub / "tiny.pth"  # a prefix, any case
    named = tmp_path / "src" / f"tiny-{digest[:10]}.pth"  # torch.hub's hash-in-the-name convention
    named.write_bytes(src.read_bytes())
    create_model(ARCH, weights=named.as_uri(), num_classes=2, small_input=True)
    assert (hub / named.name).is_file()


def test_url_with_wrong_hash_is_refused_and_removed(hub: Path, tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny.pth"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        fetch_url(src.as_uri(), sha256="0" * 64)
    assert not (hub / "tiny.pth").exists()
    lying = tmp_path / "src" / "tiny-deadbeef00.pth"
    lying.write_bytes(src.read_bytes())
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_model(ARCH, weights=lying.as_uri(), num_classes=2, small_input=True)
    assert not (hub / lying.name).exists()
    assert list(hub.iterdir()) == []  # no partial downloads either


def test_a_verified_download_of_a_malicious_file_is_still_refused(hub: Path, tmp_path: Path, evil) -> None:
    # a hash proves the file is the one published, not that it is safe
    files, marker = evil
    path = files["exec-zip.pth"]
    with pytest.raises(WeightsError, match="weights_only"):
        create_model(ARCH, weights=path.as_uri(), weights_sha256=_sha(path), num_classes=2)
    assert not marker.exists()


def test_cli_train_refuses_unverified_url(tmp_path: Path, hub: Path, capsys) -> None:
    url = (tmp_path / "src" / "tiny.pth").as_uri()
    argv = ["train", "--model", ARCH, "--data", "digits", "--weights", url, "--out", str(tmp_path / "run"),
            "--epochs", "1", "--workers", "0", "--no-progress", "--max-train-samples", "64", "--batch-size", "16"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sha256" in err[0] and url in err[0]
    assert not hub.exists() or list(hub.iterdir()) == []


# =========================================================================== state dicts that do not fit


def test_wrong_keys_and_shapes_are_all_named(tmp_path: Path) -> None:
    model = _tiny_model()
    state = dict(model.state_dict())
    conv_keys = [k for k in state if k.endswith(".weight") and state[k].dim() == 4]
    gone, reshaped = conv_keys[0], conv_keys[1]
    del state[gone]
    state["decoder.extra.weight"] = torch.zeros(3)
    state[reshaped] = torch.zeros(7, 7, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        create_model(ARCH, weights=str(path), num_classes=2, small_input=True)
    msg = str(info.value)
    assert "1 missing: " + gone in msg
    assert "1 unexpected: decoder.extra.weight" in msg
    expected_shape = tuple(model.state_dict()[reshaped].shape)
    assert f"1 mismatched: {reshaped} (file (7, 7, 1, 1), model {expected_shape})" in msg
    assert str(path) in msg


def test_many_missing_keys_are_counted(tmp_path: Path) -> None:
    model = _tiny_model()
    state = {k: v for i, (k, v) in enumerate(model.state_dict().items()) if i % 2}
    with pytest.raises(WeightsError, match=r"\d+ missing: .* and \d+ more"):
        load_into(_tiny_model(), state, source="half.pth")


def test_checkpoint_that_does_not_fit_its_architecture(tmp_path: Path) -> None:
    pre = make_preprocessing("small", 16)
    ckpt = build_checkpoint(_tiny_model(), arch=ARCH, kwargs={"num_classes": 2, "small_input": True},
                            classes=["a", "b"], preprocessing=pre)  # fmt: skip
    key = next(k for k in ckpt["model"] if k.endswith("running_mean"))
    ckpt["model"][key] = torch.zeros(1)
    path = tmp_path / "bent.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"mismatched: {key} \(file \(1,\)"):
        model_from_checkpoint(path)
