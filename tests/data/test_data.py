"""Image decoding, image folders, splits, IDX / CIFAR / digits datasets, the tensor batch loader and the
dispatching load_dataset.  Synthetic files are written into tmp_path; the real data in ../shared/data is used
through the ``shared_data`` fixture (skipped when absent)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data import (
    DataFormatError,
    FolderLoader,
    ImageFiles,
    ImageFolder,
    ImageReadError,
    TensorBatchLoader,
    TensorImageDataset,
    collate_skip_none,
    epoch_batches,
    find_classes,
    find_splits,
    list_image_files,
    load_cifar,
    load_dataset,
    load_digits_dataset,
    load_image,
    load_split,
    make_loader,
    pad_crop_flip,
    read_cifar_batch,
    read_idx,
    save_split,
    stratified_split,
)
from lightnets.data.transforms import make_preprocessing

# =========================================================================== synthetic image files


def _noise(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_odd_images(d: Path) -> dict[str, Path]:
    """One file per awkward case; returns name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([0, 0, 0, 200, 30, 30])
    pal.putpixel((5, 3), 1)
    files["palette_transparent"] = d / "palette.png"
    pal.save(files["palette_transparent"], transparency=0)

    files["rgba"] = d / "alpha.png"
    Image.new("RGBA", (5, 5), (0, 0, 255, 0)).save(files["rgba"])

    files["cmyk"] = d / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(files["cmyk"], quality=100)

    files["gray16"] = d / "gray16.png"
    Image.fromarray(np.full((4, 6), 65535, dtype=np.uint16)).save(files["gray16"])

    files["gray"] = d / "gray.bmp"
    Image.new("L", (7, 3), 100).save(files["gray"])

    files["exif6"] = d / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(_noise(40, 20)).save(files["exif6"], exif=exif)

    files["animated"] = d / "anim.gif"
    frames = [Image.new("RGB", (9, 9), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=50, loop=0)

    files["webp"] = d / "pic.webp"
    Image.fromarray(_noise(10, 10)).save(files["webp"])

    files["tiff"] = d / "pic.TIFF"  # upper-case extension
    Image.fromarray(_noise(10, 10)).save(files["tiff"])

    files["unicode"] = d / "été photo ñ 1.jpg"
    Image.fromarray(_noise(12, 12)).save(files["unicode"])
    return files


def _write_bad_images(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "zero": d / "empty.jpg",
        "text": d / "notes.jpg",
        "trunc_jpg": d / "cut.jpg",
        "trunc_png": d / "cut.png",
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    for key, fmt in (("trunc_jpg", "JPEG"), ("trunc_png", "PNG")):
        full = d / f"full.{fmt.lower()}.tmp"
        Image.fromarray(_noise(64, 64, seed=3)).save(full, fmt)
        data = full.read_bytes()
        files[key].write_bytes(data[: len(data) * 2 // 3])
        full.unlink()
    return files


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return _write_odd_images(tmp_path_factory.mktemp("odd"))


def test_every_mode_decodes_to_rgb_and_l(odd_files: dict[str, Path]) -> None:
    for name, path in odd_files.items():
        for mode in ("RGB", "L"):
            img = load_image(path, mode)
            assert img.mode == mode, name
            assert img.size[0] > 0
    assert load_image(odd_files["palette_transparent"]).getpixel((0, 0)) == (
        255,
        255,
        255,
    )  # transparent -> white
    assert load_image(odd_files["palette_transparent"]).getpixel((5, 3)) == (200, 30, 30)
    assert load_image(odd_files["rgba"]).getpixel((2, 2)) == (255, 255, 255)
    r, g, b = load_image(odd_files["cmyk"]).getpixel((4, 4))
    assert r > 240 and g < 15 and b > 240
    assert (
        load_image(odd_files["gray16"], "L").getpixel((0, 0)) == 255
    )  # scaled, not clipped to 255 by accident
    assert load_image(odd_files["gray"]).getpixel((0, 0)) == (100, 100, 100)
    assert load_image(odd_files["animated"]).getpixel((4, 4)) == (255, 0, 0)  # first frame
    assert load_image(odd_files["unicode"]).size == (12, 12)


def test_exif_orientation_is_applied(odd_files: dict[str, Path]) -> None:
    with Image.open(odd_files["exif6"]) as raw:
        assert raw.size == (40, 20)
    assert load_image(odd_files["exif6"]).size == (20, 40)


def test_16_bit_png_keeps_its_gradations(tmp_path: Path) -> None:
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)).save(path)
    assert np.asarray(load_image(path, "L")).tolist() == [[0, 64, 128, 255]]


def test_unreadable_files_raise_image_read_error_with_path(tmp_path: Path) -> None:
    bad = _write_bad_images(tmp_path)
    expect = {"zero": "empty", "text": "identify", "trunc_jpg": "truncated", "trunc_png": "truncated"}
    for key, path in bad.items():
        with pytest.raises(ImageReadError, match=expect[key]) as info:
            load_image(path)
        assert info.value.path == str(path) and str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ImageReadError, match="cannot open"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch, caplog) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is > 2x: refused
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 6000
    )  # between 1x and 2x: decoded, with a warning naming the file
    with (
        caplog.at_level(logging.WARNING, logger="lightnets.data"),
        pytest.warns(Image.DecompressionBombWarning),
    ):
        assert load_image(path).size == (100, 100)
    assert "big.png" in caplog.text and "decompression bomb" in caplog.text


# =========================================================================== image folders


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for c, cls in enumerate(["zèbre", "cat", "big dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_noise(16 + i, 12, seed=10 * c + i)).save(root / cls / f"img {i}.png")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "cat" / "readme.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "sub" / "nested.JPG")
    bad = _write_bad_images(root / "big dog")
    return root, bad


def test_image_folder_classes_and_files(folder) -> None:
    root, bad = folder
    assert find_classes(root) == ["big dog", "cat", "zèbre"]  # sorted, hidden skipped
    ds = ImageFolder(root)
    assert ds.classes == ["big dog", "cat", "zèbre"]
    names = [Path(p).name for p, _ in ds.samples]
    assert "nested.JPG" in names and ".hidden.png" not in names and "readme.txt" not in names
    assert len(ds) == 6 * 3 + 1 + len(bad)
    assert sorted(set(ds.targets)) == [0, 1, 2]
    assert find_splits(root) == {}
    with pytest.raises(ValueError, match="not among the classes"):
        ImageFolder(root, classes=["cat"])


def test_bad_files_are_skipped_and_reported_never_ending_the_epoch(folder, caplog) -> None:
    root, bad = folder
    ds = ImageFolder(root)
    pp = make_preprocessing("small", 16)
    loader = make_loader(ds, batch_size=4, train=True, preprocessing=pp, drop_last=False)
    seen = 0
    with caplog.at_level(logging.WARNING, logger="lightnets.data"):
        for images, labels in loader:
            assert images.shape[1:] == (3, 16, 16) and len(images) == len(labels)
            seen += len(images)
    assert seen == len(ds) - len(bad)
    # the same with worker processes (each worker logs and drops its bad files)
    loader = make_loader(ds, batch_size=4, train=False, preprocessing=pp, num_workers=2)
    assert sum(len(labels) for _, labels in loader) == len(ds) - len(bad)
    for path in bad.values():
        assert str(path) in caplog.text
    # the dataset object itself records (path, reason) and returns None
    idx = [i for i, (p, _) in enumerate(ds.samples) if p == str(bad["text"])][0]
    assert ds[idx] is None
    assert ds.skipped == [(str(bad["text"]), ds.skipped[0][1])] and "identify" in ds.skipped[0][1]
    assert collate_skip_none([None, None]) is None
    assert collate_skip_none([None, (torch.zeros(2), 1)])[0].shape == (1, 2)


def test_scan_finds_bad_files_up_front(folder) -> None:
    root, bad = folder
    ds = ImageFolder(root)
    assert {p for p, _ in ds.scan(check=False, drop=False)} == {str(bad["zero"])}
    cheap = {p for p, _ in ds.scan(check=True, drop=False)}
    assert {
        str(bad["zero"]),
        str(bad["text"]),
        str(bad["trunc_png"]),
    } <= cheap  # verify() misses truncated JPEG data
    full = ds.scan(full_decode=True)
    assert {p for p, _ in full} == {str(p) for p in bad.values()}
    assert len(ds) == 6 * 3 + 1 and all(ds[i] is not None for i in range(len(ds)))


def test_image_files_for_prediction(folder) -> None:
    root, bad = folder
    paths = list_image_files(root / "big dog")
    assert len(paths) == 6 + len(bad)
    ds = ImageFiles(paths, mode="L")
    pp = make_preprocessing("small", 8, in_chans=1)
    got = []
    for images, index in make_loader(ds, batch_size=5, train=False, preprocessing=pp):
        assert images.shape[1:] == (1, 8, 8)
        got += index.tolist()
    assert sorted(paths[i].name for i in got) == [f"img {i}.png" for i in range(6)]


def test_split_folders_detected(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    assert find_splits(tmp_path) == {
        s: tmp_path / d for s, d in [("train", "train"), ("val", "validation"), ("test", "test")]
    }
    splits = load_dataset(str(tmp_path))
    assert splits.kind == "folder" and splits.classes == ["a", "b"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 6)
    assert splits.split.startswith("folder")


# =========================================================================== splits


def test_stratified_split_is_stratified_seeded_and_complete() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 20, 1])
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert sorted(tr + va) == list(range(len(labels))) and not set(tr) & set(va)
    assert np.bincount(labels[va], minlength=4).tolist() == [
        20,
        10,
        4,
        0,
    ]  # the single-sample class stays in train
    assert (tr, va) == stratified_split(labels, 0.2, seed=1)
    assert va != stratified_split(labels, 0.2, seed=2)[1]
    assert stratified_split(torch.tensor(labels), 0.2, seed=1) == (tr, va)
    assert stratified_split(labels, 0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0)


def test_split_file_round_trip_and_folder_changes(folder, tmp_path: Path, caplog) -> None:
    root, bad = folder
    for p in bad.values():
        p.unlink()
    split_file = tmp_path / "run" / "split.json"
    first = load_dataset(f"folder:{root}", val_fraction=0.34, seed=5, split_file=split_file)
    doc = json.loads(split_file.read_text(encoding="utf-8"))
    assert doc["seed"] == 5 and len(doc["val_files"]) == len(first.val) == 6
    # a different seed with the same file reproduces the recorded split
    again = load_dataset(f"folder:{root}", val_fraction=0.5, seed=99, split_file=split_file)
    assert [p for p, _ in again.val.samples] == [p for p, _ in first.val.samples]
    assert [p for p, _ in again.train.samples] == [p for p, _ in first.train.samples]
    # a new file is left out (with a warning); a recorded file that disappeared is an error
    Image.new("RGB", (4, 4)).save(root / "cat" / "new.png")
    with caplog.at_level(logging.WARNING, logger="lightnets.data"):
        third = load_dataset(f"folder:{root}", split_file=split_file)
    assert "not in split file" in caplog.text and len(third.train) + len(third.val) == len(first.train) + len(
        first.val
    )
    Path(first.val.samples[0][0]).unlink()
    with pytest.raises(DataFormatError, match="no longer"):
        load_dataset(f"folder:{root}", split_file=split_file)


def test_save_load_split_by_index(tmp_path: Path) -> None:
    path = save_split(tmp_path / "s.json", [0, 2], [1], num_samples=3, seed=0, val_fraction=0.3)
    assert load_split(path, num_samples=3) == ([0, 2], [1])
    with pytest.raises(DataFormatError, match="3 samples"):
        load_split(path, num_samples=4)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataFormatError, match="not a lightnets split"):
        load_split(tmp_path / "x.json", num_samples=3)


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


def test_load_dataset_rejects_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither"):
        load_dataset("imagenet-please")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")


# =========================================================================== hymenoptera


def test_hymenoptera(shared_data: Path) -> None:
    root = shared_data / "hymenoptera_data"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    s = load_dataset(str(root))
    assert s.kind == "folder" and s.classes == ["ants", "bees"] and s.split.startswith("folder")
    assert (len(s.train), len(s.val)) == (245, 153) and s.test is None
    assert s.train.targets.count(0) == 124 and s.val.targets.count(1) == 83
    # imageNotFound.gif is a valid 300x300 palette GIF (a "we're sorry" graphic), not a broken file: it decodes,
    # passes the scan, and stays in train/ants as the original archive has it (a label-noise sample).
    placeholder = root / "train" / "ants" / "imageNotFound.gif"
    img = load_image(placeholder)
    assert img.mode == "RGB" and img.size == (300, 300)
    assert np.median(np.asarray(img)) == 247  # a flat light-grey card, not a photo
    assert s.train.scan(check=True, drop=False) == []
    assert str(placeholder) in [p for p, _ in s.train.samples]
    pp = make_preprocessing("imagenet", 64)
    images, labels = next(iter(make_loader(s.val, batch_size=4, train=False, preprocessing=pp)))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [0, 0, 0, 0]


# =========================================================================== tensor batches


def _tiny(n: int = 50, c: int = 3, h: int = 8, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n)


def test_batches_without_augmentation_are_exactly_normalised() -> None:
    images, labels = _tiny()
    pp = make_preprocessing("small", 8, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 0.125])
    loader = TensorBatchLoader(images, labels, 16, shuffle=True, seed=0, augment=False, preprocessing=pp)
    assert len(loader) == 4 and loader.num_samples == 50
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 8, 8)
        expect = (images[y].float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
            [0.5, 0.25, 0.125]
        ).view(1, 3, 1, 1)
        assert torch.allclose(x, expect, atol=1e-6)
        seen += y.tolist()
    assert sorted(seen) == list(range(50)) and seen != list(range(50))


def test_pad_crop_flip_matches_per_image_ops() -> None:
    images, _ = _tiny(6, 2, 5, 7)
    dy, dx = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([4, 0, 2, 1, 3, 2])
    flip = torch.tensor([False, True, False, True, True, False])
    out = pad_crop_flip(images, 2, dy, dx, flip)
    for i in range(6):
        ref = torch.nn.functional.pad(images[i], (2, 2, 2, 2))[:, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_augmentation_changes_images_as_pad_crop_flip() -> None:
    images, labels = _tiny(64)
    pp = make_preprocessing("small", 8)
    plain = TensorBatchLoader(images, labels, 64, shuffle=False, augment=False, preprocessing=pp)
    aug = TensorBatchLoader(images, labels, 64, shuffle=False, augment=True, preprocessing=pp)
    assert aug.padding == 1
    (x0, _), (x1, y1) = next(iter(plain)), next(iter(aug))
    assert x1.shape == x0.shape and x1.dtype == torch.float32
    changed = (x0 != x1).flatten(1).any(1)
    assert changed.float().mean() > 0.7
    # every augmented image is one of the (2p+1)^2 x 2 pad/shift/flip variants of its source
    p = 1
    padded = torch.nn.functional.pad(images.float() / 255, (p, p, p, p))
    zero = (0 - 0.485) / 0.229  # how a padded pixel looks after normalisation, red channel
    flips = 0
    for i in range(16):
        src = padded[y1[i]]
        raw = x1[i] * torch.tensor(pp["std"]).view(3, 1, 1) + torch.tensor(pp["mean"]).view(3, 1, 1)
        matches = [
            (a, b, f)
            for a in range(3)
            for b in range(3)
            for f in (0, 1)
            if torch.allclose(
                raw, (src[:, a : a + 8, b : b + 8].flip(-1) if f else src[:, a : a + 8, b : b + 8]), atol=1e-5
            )
        ]
        assert matches, i
        flips += matches[0][2]
    assert 2 <= flips <= 14
    assert (x1[:, 0] == torch.tensor(zero)).any()  # some padding came in


def test_loader_is_deterministic_per_seed_and_epoch() -> None:
    images, labels = _tiny()

    def run(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = TensorBatchLoader(images, labels, 16, shuffle=True, seed=seed, augment=True)
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    a, b = run(0, 3), run(0, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(run(0, 4)[0], a[0]) and not torch.equal(run(1, 3)[0], a[0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_partition_reassembles_the_single_process_batch(drop_last: bool) -> None:
    images, labels = _tiny(50)
    world, b = 3, 4
    single = TensorBatchLoader(images, labels, b * world, seed=7, augment=True, drop_last=drop_last)
    ranks = [
        TensorBatchLoader(
            images, labels, b, seed=7, augment=True, drop_last=drop_last, rank=r, world_size=world
        )
        for r in range(world)
    ]
    for loader in [single, *ranks]:
        loader.set_epoch(2)
    ref = list(single)
    per_rank = [list(r) for r in ranks]
    assert len(ref) == (4 if drop_last else 5)
    for k, (x, y) in enumerate(ref):
        parts = [batches[k] for batches in per_rank if k < len(batches)]
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # augmentation included
        if k < 4:
            assert [len(p[1]) for p in parts] == [b] * world  # contiguous chunks of B
    if not drop_last:  # last global batch of 2 split as [1, 1, 0]: the third rank has one batch fewer
        assert [len(r) for r in ranks] == [5, 5, 4] and [len(p[-1][1]) for p in per_rank[:2]] == [1, 1]
        assert sorted(torch.cat([y for r in per_rank for _, y in r]).tolist()) == list(range(50))
    assert epoch_batches(10, 2, shuffle=False, rank=1, world_size=2)[1].tolist() == [6, 7]
    with pytest.raises(ValueError, match="rank"):
        epoch_batches(10, 2, rank=2, world_size=2)


def test_loader_resizes_to_model_input() -> None:
    images, labels = _tiny(10, 1, 28, 28)
    pp = make_preprocessing("small", 32, in_chans=1)
    x, _ = next(iter(TensorBatchLoader(images, labels, 10, augment=True, preprocessing=pp)))
    assert x.shape == (10, 1, 32, 32) and x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    imagenet = make_preprocessing("imagenet", 24, in_chans=1)  # shorter side to 27, centre crop 24
    x, _ = next(iter(TensorBatchLoader(images, labels, 10, preprocessing=imagenet)))
    assert x.shape == (10, 1, 24, 24)
    with pytest.raises(ValueError, match="channels"):
        TensorBatchLoader(images, labels, 10, preprocessing=make_preprocessing("small", 28))


def _measure_throughput():
    # measuring lives with the benchmark that uses it (benchmarks/train_speed.py), not in lightnets.data
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("_train_speed_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.measure_throughput


def test_make_loader_and_throughput() -> None:
    measure_throughput = _measure_throughput()
    images, labels = _tiny(40, 1, 8, 8)
    ds = TensorImageDataset(images, labels % 10, [str(i) for i in range(10)])
    pp = make_preprocessing("small", 8, in_chans=1)
    train = make_loader(ds, batch_size=16, train=True, preprocessing=pp)
    assert isinstance(train, TensorBatchLoader) and train.augment and train.drop_last and len(train) == 2
    val = make_loader(ds, batch_size=16, train=False, preprocessing=pp)
    assert not val.augment and len(val) == 3
    rate = measure_throughput(val, num_batches=2, warmup=1)
    assert rate > 0
    rgb = ds.with_chans(3)
    assert rgb.images.shape[1] == 3 and torch.equal(rgb.with_chans(1).images, images)
    fl = FolderLoader(ds, 16, shuffle=True, world_size=2, rank=1, drop_last=True)
    assert len(fl) == 1 and len(next(iter(fl))[0]) == 16
