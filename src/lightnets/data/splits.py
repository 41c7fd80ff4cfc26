"""Train / val splits: a seeded stratified split of sample indices, and split files (JSON) that record one
so a run can be reproduced, matched by file name for folders whose contents changed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..util.atomic import atomic_write
from .errors import DataFormatError

log = logging.getLogger(__name__)


def stratified_split(
    labels: Sequence[int] | np.ndarray | torch.Tensor, val_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Seeded split of sample indices into (train, val), class by class.

    Each class contributes ``floor(n_c * val_fraction + 0.5)`` shuffled samples to val, but at least one
    (when ``val_fraction > 0``) and never all of them (a class with one sample stays in train).  Both lists
    come back sorted.  The same labels, fraction and seed always give the same split.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(math.floor(len(idx) * val_fraction + 0.5))
        if val_fraction > 0:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(idx) - 1)
        val += idx[:n_val].tolist()
    val_set = set(val)
    return [i for i in range(len(labels)) if i not in val_set], sorted(val)


SPLIT_FORMAT = "lightnets-split"


def save_split(
    path: str | os.PathLike,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    *,
    num_samples: int,
    files: Sequence[str] | None = None,
    seed: int | None = None,
    val_fraction: float | None = None,
    source: str | None = None,
) -> Path:
    """Write a split to a JSON file (atomically), so a run can be reproduced.

    ``files`` (one relative path per sample, as ImageFolder.relative_paths gives) are stored for the two
    sides too, so that reloading against a folder whose contents changed is detected (see load_split).
    """
    doc: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "version": 1,
        "source": source,
        "seed": seed,
        "val_fraction": val_fraction,
        "num_samples": int(num_samples),
        "train": [int(i) for i in train_idx],
        "val": [int(i) for i in val_idx],
    }
    if files is not None:
        if len(files) != num_samples:
            raise ValueError(f"files has {len(files)} entries for {num_samples} samples")
        doc["train_files"] = [files[i] for i in doc["train"]]
        doc["val_files"] = [files[i] for i in doc["val"]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # surrogateescape: file names that are not valid UTF-8 (e.g. Latin-1 bytes) round-trip unchanged
    return atomic_write(path, json.dumps(doc, indent=1, ensure_ascii=False), what="split file")


def load_split(
    path: str | os.PathLike, *, num_samples: int, files: Sequence[str] | None = None
) -> tuple[list[int], list[int]]:
    """Read a split written by save_split, for a dataset of ``num_samples`` samples.

    If the file records file names and ``files`` is given, samples are matched by name: a recorded file that
    is gone is an error; files added since are left out of both sides (with a warning).  Otherwise the recorded
    indices are used and ``num_samples`` must match.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot read split file {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
        raise DataFormatError(f"{path} is not a lightnets split file")
    if files is not None and "train_files" in doc:
        where = {name: i for i, name in enumerate(files)}
        missing = [f for f in doc["train_files"] + doc["val_files"] if f not in where]
        if missing:
            raise DataFormatError(
                f"split file {path} lists {len(missing)} files that are no longer in the dataset, e.g. {missing[:3]}"
            )
        train = sorted(where[f] for f in doc["train_files"])
        val = sorted(where[f] for f in doc["val_files"])
        extra = len(files) - len(train) - len(val)
        if extra:
            log.warning("%d files are not in split file %s and are left out of train and val", extra, path)
    else:
        if doc["num_samples"] != num_samples:
            raise DataFormatError(
                f"split file {path} was made for {doc['num_samples']} samples, the dataset has {num_samples}"
            )
        train, val = [int(i) for i in doc["train"]], [int(i) for i in doc["val"]]
    if set(train) & set(val):
        raise DataFormatError(f"split file {path} puts some samples in both train and val")
    if any(not 0 <= i < num_samples for i in train + val):
        raise DataFormatError(f"split file {path} has indices outside [0, {num_samples})")
    return train, val


def make_split(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    val_fraction: float,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    *,
    files: Sequence[str] | None = None,
    source: str | None = None,
) -> tuple[list[int], list[int]]:
    """The split from ``split_file`` if it exists, else a new stratified split (saved there when given)."""
    n = len(labels)
    if split_file is not None and Path(split_file).exists():
        log.info("using the train/val split recorded in %s", split_file)
        return load_split(split_file, num_samples=n, files=files)
    train, val = stratified_split(labels, val_fraction, seed)
    if split_file is not None:
        save_split(
            split_file,
            train,
            val,
            num_samples=n,
            files=files,
            seed=seed,
            val_fraction=val_fraction,
            source=source,
        )
    return train, val
