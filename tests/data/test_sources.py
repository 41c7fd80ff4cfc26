"""The dispatching load_dataset (lightnets.data.sources): unknown sources refused, and the real hymenoptera
folder through the ``shared_data`` fixture (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightnets.data import (
    load_dataset,
    load_image,
    make_loader,
)
from lightnets.data.transforms import make_preprocessing


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
