"""Real images for int8 calibration and for checking exports, preprocessed exactly as a model records.

``load_images(spec, preprocessing)`` takes a folder of images (every image file below it, any layout) or a
dataset source string (``fashion-mnist:PATH``, ``digits``, ... as ``lightnets.data.load_dataset`` reads them,
its training split), shuffles the pool with a fixed seed and cuts it into calibration images and disjoint check
images.  ``run_images(run_dir, preprocessing)`` reloads a training run's own split (its ``split.json``): the
labelled validation (or test) images, and calibration images from its training split.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_CALIB_IMAGES", "ImageSet", "load_images", "run_images"]

DEFAULT_CALIB_IMAGES = 64
SEED = 0


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W), normalised as the preprocessing says
    labels: torch.Tensor | None  # (N,) int64, or None for unlabelled images
    description: str


def _dataset_images(ds: Any, prep: dict[str, Any], indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    from ..train import eval_loader
    from ..train.engine import batches_with_ids

    images, labels = [], []
    for x, y, _ in batches_with_ids(eval_loader(ds.subset(indices), prep, 64, 0, torch.device("cpu"))):
        images.append(x.float())
        labels.append(y)
    if not images:
        raise ValueError("no readable images")
    return torch.cat(images), torch.cat(labels)


def _file_images(files: list[Path], prep: dict[str, Any]) -> torch.Tensor:
    from ..data import ImageReadError, load_image
    from ..data.transforms import eval_transform, mode_for_chans

    transform, mode = eval_transform(prep), mode_for_chans(int(prep.get("in_chans", 3)))
    if not files:
        size = prep["input_size"]
        return torch.empty((0, int(prep.get("in_chans", 3)), int(size[0]), int(size[1])))
    out = []
    for f in files:
        try:
            out.append(transform(load_image(f, mode=mode)))
        except ImageReadError:
            continue  # a placeholder graphic, a truncated file: calibration does not need every image
    if not out:
        raise ValueError(f"none of the {len(files)} image files could be read")
    return torch.stack(out)


def load_images(spec: str | os.PathLike, prep: dict[str, Any], calib_images: int = DEFAULT_CALIB_IMAGES,
                check_images: int | None = None) -> tuple[ImageSet, ImageSet]:  # fmt: skip
    """(calibration images, disjoint check images) from a folder of images or a dataset source string.

    The pool (every image file below the folder, or a dataset's training split) is shuffled with a fixed seed;
    the first ``calib_images`` calibrate (at most half of a small pool, so that images are left to check), the
    next ``check_images`` (None: all the rest, at most 1000 of a dataset) check.
    """
    from ..data import list_image_files, load_dataset

    path = Path(spec)
    files = list_image_files(path) if path.is_dir() else []
    if files:
        order = np.random.default_rng(SEED).permutation(len(files))
        calib_images = min(calib_images, max(1, len(files) // 2))
        n_check = len(files) - calib_images if check_images is None else check_images
        calib = _file_images([files[i] for i in order[:calib_images]], prep)
        check = _file_images([files[i] for i in order[calib_images : calib_images + max(n_check, 0)]], prep)
        return ImageSet(calib, None, f"{len(calib)} images from {spec}"), ImageSet(check, None, f"{spec}")
    if not path.exists() and ":" not in str(spec) and str(spec) != "digits":
        raise FileNotFoundError(f"calibration data not found: {spec} (a folder of images or a dataset source)")
    try:
        splits = load_dataset(str(spec), val_fraction=0.0, in_chans=int(prep.get("in_chans", 3)))
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"calibration data {spec}: {e}") from None
    order = np.random.default_rng(SEED).permutation(len(splits.train)).tolist()
    calib_images = min(calib_images, max(1, len(order) // 2))
    n_check = min(len(order) - calib_images, 1000) if check_images is None else check_images
    cx, _ = _dataset_images(splits.train, prep, order[:calib_images])
    kx, ky = _dataset_images(splits.train, prep, order[calib_images : calib_images + n_check])
    return ImageSet(cx, None, f"{len(cx)} training images of {spec}"), ImageSet(kx, ky, f"training images of {spec}")


def run_images(run_dir: Path, prep: dict[str, Any], split: str = "val",
               calib_images: int = DEFAULT_CALIB_IMAGES) -> tuple[ImageSet, ImageSet]:  # fmt: skip
    """(calibration images from the run's training split, the run's labelled ``split``: val or test)."""
    from ..data import load_dataset

    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    splits = load_dataset(cfg["data"], val_fraction=cfg.get("val_fraction", 0.1), seed=cfg.get("seed", 0),
                          split_file=run_dir / "split.json", in_chans=int(prep.get("in_chans", 3)))  # fmt: skip
    ds = {"val": splits.val, "test": splits.test}.get(split)
    if ds is None:
        raise ValueError(f"the run {run_dir} has no {split} split")
    order = np.random.default_rng(SEED).permutation(len(splits.train)).tolist()
    cx, _ = _dataset_images(splits.train, prep, order[:calib_images])
    kx, ky = _dataset_images(ds, prep, list(range(len(ds))))
    return (ImageSet(cx, None, f"{len(cx)} training images of the run"),
            ImageSet(kx, ky, f"the run's {split} split ({cfg['data']})"))  # fmt: skip
