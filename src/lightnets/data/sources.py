"""One entry point from a ``--data`` source string to datasets: ``load_dataset`` recognises the kind
(digits, IDX, CIFAR, image folder), loads its splits into a ``DatasetSplits``, makes or reads the val split,
and ``default_preprocessing`` picks the preprocessing that suits the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .decode_cache import DecodeCache
from .errors import DataFormatError
from .folders import ImageFolder, find_splits
from .formats import (
    DIGIT_CLASSES,
    FASHION_MNIST_CLASSES,
    find_idx_files,
    is_cifar_folder,
    load_cifar,
    load_digits_dataset,
    load_idx_pair,
)
from .images import load_image
from .memory import TensorImageDataset, channel_stats, is_in_memory
from .preprocessing import make_preprocessing, mode_for_chans
from .probe import SizeProbe, probe_sizes
from .splits import make_split


@dataclass
class DatasetSplits:
    """The splits of one dataset.  ``train``/``val``/``test`` are TensorImageDataset (in-memory kinds) or
    ImageFolder (kind "folder"); val and test may be None.  ``image_size`` is the native (H, W) of in-memory
    data, None for folders (mixed sizes).  ``split`` says where val came from."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    classes: list[str]
    in_chans: int
    kind: str
    source: str
    image_size: tuple[int, int] | None = None
    split: str = ""
    probe: SizeProbe | None = None  # folders: the image sizes seen when the folder was opened (lightnets.data.probe)

    @property
    def in_memory(self) -> bool:
        return is_in_memory(self.train)


_PREFIXES = ("digits", "fashion-mnist", "mnist", "idx", "cifar10", "cifar100", "folder")


def _parse_source(source: str) -> tuple[str | None, str]:
    if source in ("digits", "sklearn-digits"):
        return "digits", ""
    head, sep, rest = source.partition(":")
    if sep and head.lower() in _PREFIXES and rest:
        return head.lower(), rest
    return None, source


@dataclass(frozen=True)
class _ValSplit:
    """How load_dataset finds val when the source has no val folder: a seeded stratified split of train."""

    fraction: float
    seed: int
    split_file: str | os.PathLike | None
    source: str

    def apply(self, train: Any, labels: Any, files: Sequence[str] | None = None) -> tuple[Any, Any, str]:
        """(train, val, how val was made) for a dataset with ``subset``; val is None when the fraction is 0."""
        if self.fraction <= 0:
            return train, None, "none (val_fraction=0)"
        tr, va = make_split(labels, self.fraction, self.seed, self.split_file, files=files, source=self.source)
        how = (
            f"file {self.split_file}"
            if self.split_file is not None
            else f"stratified seed={self.seed} val_fraction={self.fraction}"
        )
        return train.subset(tr), train.subset(va), how


def load_dataset(
    source: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    in_chans: int | None = None,
    cifar100_labels: str = "fine",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetSplits:
    """Load a dataset from a source string.

    Accepted sources:
      - ``digits``: scikit-learn's 8 x 8 digits (1 channel, no test split);
      - ``fashion-mnist:PATH``, ``mnist:PATH``, ``idx:PATH``: a folder with IDX files (train-images-idx3-ubyte,
        train-labels-idx1-ubyte, t10k-* for test; .gz or raw); class names from the prefix (Fashion-MNIST's
        names, digits 0-9, or from the folder name when it contains "fashion");
      - ``cifar10:PATH``, ``cifar100:PATH``: a folder of CIFAR python batches (``cifar100_labels`` fine/coarse);
      - ``folder:PATH``: an image folder, either root/<class>/* or root/train/<class> + root/val/<class>
        (+ optional root/test/<class>);
      - a bare PATH: any of the folders above, recognised by their contents.

    val is the source's own val folder when it has one; otherwise a stratified, seeded split of train with
    ``val_fraction`` (0: no val), read from ``split_file`` when that exists and written there when it does not.
    ``in_chans`` (1 or 3) converts images (folders decode to "L"/"RGB"; in-memory data is repeated or
    converted to luma); None keeps the native channels (1 for digits/IDX, 3 for CIFAR and folders).
    Folders are decoded once into a memory-mapped cache (``cache``; in ``cache_dir``, default
    lightnets.data.decode_cache.default_cache_dir()) when a loader first reads them, and their image sizes are
    probed (``splits.probe``: small images train at their native size, see default_preprocessing).
    """
    kind, path = _resolve_kind(str(source))
    val_split = _ValSplit(val_fraction, seed, split_file, str(source))
    if kind == "folder":
        store = DecodeCache(str(cache_dir) if cache_dir is not None else None) if cache else None
        return _load_folder(path, val_split, in_chans, store)
    train, test = _IN_MEMORY_LOADERS[kind](path, kind, cifar100_labels)
    if in_chans is not None:
        mode_for_chans(in_chans)  # validates
        train = train.with_chans(in_chans)
        test = test.with_chans(in_chans) if test is not None else None
    train, val, how = val_split.apply(train, train.labels)
    return DatasetSplits(
        train, val, test, list(train.classes), train.in_chans, kind, str(source), train.image_size, how
    )


def _resolve_kind(source: str) -> tuple[str, Path | None]:
    """The dataset kind and path of a source string; a bare path's kind is recognised from its contents."""
    kind, path_str = _parse_source(source)
    path = Path(path_str) if path_str else None
    if kind is None:
        if path is None or not path.exists():
            raise FileNotFoundError(
                f"dataset source {source!r} is neither 'digits', a known 'kind:PATH' ({', '.join(_PREFIXES)}) nor an existing path"
            )
        if find_idx_files(path):
            kind = "fashion-mnist" if "fashion" in path.resolve().name.lower() else "idx"
        else:
            kind = is_cifar_folder(path) or "folder"
    elif path is not None and not path.exists():
        raise FileNotFoundError(f"{kind} data not found at {path}")
    return kind, path


_InMemory = tuple[TensorImageDataset, TensorImageDataset | None]  # (train, test or None)


def _load_digits(path: Path | None, kind: str, cifar100_labels: str) -> _InMemory:
    return load_digits_dataset(), None


def _load_idx(path: Path, kind: str, cifar100_labels: str) -> _InMemory:
    pairs = find_idx_files(path)
    if "train" not in pairs:
        raise DataFormatError(f"{path}: no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] pair")
    if kind in ("fashion-mnist", "mnist") and "test" not in pairs:
        # these datasets ship a test set; without it every result would silently come from a split of train
        raise DataFormatError(
            f"{path}: {kind} test files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) are missing; "
            f"add them, or use idx:{path} to train without a test split"
        )
    images, labels = load_idx_pair(*pairs["train"])
    n_cls = int(labels.max()) + 1
    if kind == "fashion-mnist":
        classes = list(FASHION_MNIST_CLASSES)
    elif n_cls <= 10:
        classes = list(DIGIT_CLASSES)
    else:
        classes = [str(i) for i in range(n_cls)]
    train = TensorImageDataset(images, labels, classes, kind)
    test = TensorImageDataset(*load_idx_pair(*pairs["test"]), classes, kind) if "test" in pairs else None
    return train, test


def _load_cifar(path: Path, kind: str, cifar100_labels: str) -> _InMemory:
    parts = load_cifar(path, cifar100_labels)
    found = is_cifar_folder(path)
    if found != kind:
        raise DataFormatError(f"{path} holds {found} batches, not {kind}")
    return parts["train"], parts.get("test")


# kind -> loader of its (train, test) in-memory datasets; "folder" is loaded by _load_folder
_IN_MEMORY_LOADERS: dict[str, Callable[[Any, str, str], _InMemory]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_idx,
    "mnist": _load_idx,
    "idx": _load_idx,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
}


def _load_folder(root: Path, val_split: _ValSplit, in_chans: int | None, cache: DecodeCache | None) -> DatasetSplits:
    source = val_split.source
    splits = find_splits(root)
    train = ImageFolder(splits.get("train", root), cache=cache)
    # in_chans None: a folder of grayscale images decodes to one channel, like the IDX data (see lightnets.data.probe)
    probe = probe_sizes(train._all_files, lambda p, gray: load_image(p, _folder_mode(in_chans, gray)))
    chans = in_chans or (1 if probe is not None and probe.gray else 3)
    train.mode = mode = mode_for_chans(chans)
    test = None
    if "test" in splits:
        test = ImageFolder(splits["test"], mode=mode, classes=train.classes, cache=cache)
    if "val" in splits:
        val = ImageFolder(splits["val"], mode=mode, classes=train.classes, cache=cache)
        how = f"folder {splits['val']}"
    else:
        train, val, how = val_split.apply(train, train.targets, files=train.relative_paths())
    return DatasetSplits(train, val, test, train.classes, chans, "folder", source, None, how, probe)


def _folder_mode(in_chans: int | None, gray: bool) -> str:
    return mode_for_chans(in_chans or (1 if gray else 3))


def default_preprocessing(
    splits: DatasetSplits, input_size: int | Sequence[int] | None = None
) -> dict[str, Any]:
    """A sensible preprocessing dict for ``splits``: for in-memory data the "small" preset at the native size
    (or ``input_size``) with the training set's channel mean/std; for folders the ImageNet preset at 224 (or
    ``input_size``) with ImageNet statistics (grayscale: 0.5 / 0.5), except that a folder of small images
    (``splits.probe.small``) with no ``input_size`` gets the small preset at its median size and the probed
    images' channel statistics, like the in-memory kinds."""
    probe = splits.probe
    if not splits.in_memory and input_size is None and probe is not None and probe.small:
        return make_preprocessing("small", probe.size, mean=probe.mean, std=probe.std, in_chans=splits.in_chans)
    if splits.in_memory:
        mean, std = channel_stats(splits.train.images)
        std = [max(s, 1e-3) for s in std]
        return make_preprocessing(
            "small", input_size or splits.image_size, mean=mean, std=std, in_chans=splits.in_chans
        )
    return make_preprocessing("imagenet", input_size or 224, in_chans=splits.in_chans)
