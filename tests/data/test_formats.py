"""IDX, CIFAR and digits datasets (lightnets.data.formats), read directly and through load_dataset; the real
Fashion-MNIST files through the ``shared_data`` fixture (skipped when absent)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightnets.data import (
    DataFormatError,
    load_cifar,
    load_dataset,
    load_digits_dataset,
    read_cifar_batch,
    read_idx,
)

# =========================================================================== IDX


def _write_idx(path: Path, arr: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    data = (
        bytes([0, 0, code, arr.ndim])
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    )
    path.write_bytes(gzip.compress(data) if compress else data)


def test_read_idx_raw_gzip_and_types(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    _write_idx(tmp_path / "a", imgs)
    _write_idx(tmp_path / "a.gz", imgs, compress=True)
    assert np.array_equal(read_idx(tmp_path / "a"), imgs) and np.array_equal(
        read_idx(tmp_path / "a.gz"), imgs
    )
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    _write_idx(tmp_path / "i", ints, code=0x0C)
    out = read_idx(tmp_path / "i")
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == ints.tolist()


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataFormatError, match="magic number 0x12340801"):
        read_idx(tmp_path / "bad")
    (tmp_path / "type").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(tmp_path / "type")
    _write_idx(tmp_path / "cut", np.zeros((4, 2, 2), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "cut").read_bytes()[:-3])
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "tiny").write_bytes(b"\x00")
    with pytest.raises(DataFormatError, match="too short"):
        read_idx(tmp_path / "tiny")


def test_idx_folder_through_load_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(3, dtype=np.uint8), 10)
    _write_idx(
        tmp_path / "train-images-idx3-ubyte.gz",
        rng.integers(0, 256, (30, 6, 5), dtype=np.uint8),
        compress=True,
    )
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, compress=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 6, 5), dtype=np.uint8))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:6])
    s = load_dataset(str(tmp_path), val_fraction=0.2)
    assert s.kind == "idx" and s.in_memory and s.image_size == (6, 5) and s.in_chans == 1
    assert (len(s.train), len(s.val), len(s.test)) == (24, 6, 6)
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (1, 6, 5)
    assert s.classes == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert load_dataset(f"mnist:{tmp_path}", in_chans=3).train.images.shape[1] == 3
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5])
    with pytest.raises(DataFormatError, match="6 images but"):
        load_dataset(f"idx:{tmp_path}")


def test_fashion_mnist(shared_data: Path) -> None:
    root = shared_data / "fashion-mnist"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    s = load_dataset(f"fashion-mnist:{root}", val_fraction=0)
    assert s.kind == "fashion-mnist" and s.val is None
    assert s.train.images.shape == (60000, 1, 28, 28) and s.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(s.train.labels).tolist() == [6000] * 10
    assert torch.bincount(s.test.labels).tolist() == [1000] * 10
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert s.train.images.max() == 255 and 60 < s.train.images.float().mean() < 90  # mean ~0.286 * 255


# =========================================================================== CIFAR


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(obj, path: Path, protocol: int, byte_keys: bool) -> None:
    if byte_keys:
        obj = {
            k.encode(): ([v.encode() for v in val] if k.endswith("names") else val) for k, val in obj.items()
        }
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol,byte_keys", [(2, True), (2, False), (pickle.HIGHEST_PROTOCOL, False)])
def test_cifar10_batches(tmp_path: Path, protocol: int, byte_keys: bool) -> None:
    for i in range(1, 6):
        rows = _cifar_rows(4, i)
        _dump(
            {"batch_label": f"training batch {i}", "labels": [i % 10, 2, 3, 4], "data": rows},
            tmp_path / f"data_batch_{i}",
            protocol,
            byte_keys,
        )
    test_rows = _cifar_rows(3, 9)
    test_rows[0, :1024], test_rows[0, 1024:2048], test_rows[0, 2048:] = 10, 20, 30
    test_rows[0, 1 * 32 + 2] = 99  # red channel, row 1, column 2
    _dump({"labels": [9, 8, 7], "data": test_rows}, tmp_path / "test_batch", protocol, byte_keys)
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump({"label_names": names, "num_cases_per_batch": 4}, tmp_path / "batches.meta", protocol, byte_keys)
    splits = load_cifar(tmp_path)
    assert splits["train"].images.shape == (20, 3, 32, 32) and splits["train"].labels[:4].tolist() == [
        1,
        2,
        3,
        4,
    ]
    img = splits["test"].images[0]
    assert img[:, 0, 0].tolist() == [10, 20, 30] and img[0, 1, 2] == 99
    s = load_dataset(str(tmp_path), val_fraction=0.25)
    assert s.kind == "cifar10" and s.classes == names and len(s.test) == 3 and len(s.train) + len(s.val) == 20


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    for split, n in (("train", 8), ("test", 4)):
        batch = {
            "data": _cifar_rows(n, n),
            "fine_labels": list(range(n)),
            "coarse_labels": [i % 2 for i in range(n)],
        }
        (tmp_path / split).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        "fine_label_names": [f"f{i}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (tmp_path / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    fine = load_dataset(f"cifar100:{tmp_path}", val_fraction=0)
    assert (
        fine.kind == "cifar100" and len(fine.classes) == 100 and fine.train.labels.tolist() == list(range(8))
    )
    coarse = load_dataset(f"cifar100:{tmp_path}", val_fraction=0, cifar100_labels="coarse")
    assert coarse.classes[:2] == ["c0", "c1"] and coarse.test.labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataFormatError, match="cifar100 batches, not cifar10"):
        load_dataset(f"cifar10:{tmp_path}")


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_cifar_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    evil = _Evil()
    evil.target = str(tmp_path / "pwned")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": evil, "labels": []}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing global"):
        read_cifar_batch(tmp_path / "data_batch_1")
    assert not (tmp_path / "pwned").exists()
    # an object array may only hold objects that are themselves allowed
    arr = np.empty(1, dtype=object)
    arr[0] = evil
    (tmp_path / "x").write_bytes(pickle.dumps({"data": arr}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing global"):
        read_cifar_batch(tmp_path / "x")
    assert not (tmp_path / "pwned").exists()


# =========================================================================== digits


def test_digits() -> None:
    pytest.importorskip("sklearn")
    ds = load_digits_dataset()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.images.max() == 255 and ds.classes == [str(i) for i in range(10)]
    assert torch.bincount(ds.labels).min() >= 170
    s = load_dataset("digits", val_fraction=0.2, seed=0)
    assert s.kind == "digits" and s.test is None and len(s.train) + len(s.val) == 1797
    assert abs(len(s.val) - 360) <= 5 and torch.bincount(s.val.labels).min() >= 34
