"""Image folders and file lists (lightnets.data.folders): classes, bad files skipped and reported, scans,
split folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightnets.data import (
    ImageFiles,
    ImageFolder,
    collate_skip_none,
    find_classes,
    find_splits,
    list_image_files,
    load_dataset,
    make_loader,
)
from lightnets.data.transforms import make_preprocessing


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
