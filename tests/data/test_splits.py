"""Train / val splits and split files (lightnets.data.splits)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data import (
    DataFormatError,
    load_dataset,
    load_split,
    save_split,
    stratified_split,
)


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
