"""Datasets for training, evaluation and prediction, and the loaders that batch them.

Two kinds of data:

- files on disk (image folders, explicit file lists), decoded per image by ``load_image`` and transformed by
  the presets in ``lightnets.data.transforms``;
- in-memory uint8 tensors (N, C, H, W) with int64 labels (IDX files such as MNIST / Fashion-MNIST, CIFAR-10/100
  python batches, scikit-learn's bundled digits), batched and augmented as whole tensors by
  ``TensorBatchLoader`` with no per-image Python work.

``load_dataset(source)`` turns a source string into a ``DatasetSplits``; ``make_loader`` turns one split into an
iterable of ``(images, labels)`` batches with ``set_epoch`` and the same index partitioning across ranks for
both kinds (see ``epoch_batches``).

Unreadable files never end an epoch: ``ImageFolder.__getitem__`` returns ``None`` for a file it cannot decode
(after logging a warning with the path and recording ``(path, reason)`` in ``dataset.skipped``),
``collate_skip_none`` drops those items from the batch, and ``FolderLoader`` skips a batch that ends up empty.
Dropping (rather than substituting another image) keeps evaluation exact: every reported prediction belongs to
a file that was actually read.  With DataLoader workers each worker records into its own copy of the dataset,
so ``dataset.skipped`` in the main process only lists what the main process saw; the log lines name every
file, and ``dataset.scan()`` checks all files up front in the main process.
"""

from __future__ import annotations

import codecs
import copy
import gzip
import json
import logging
import math
import os
import pickle
import re
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate

from ..util.atomic import atomic_write
from .decode_cache import DecodeCache, DecodedImages, shaping
from .probe import SizeProbe, probe_sizes
from .transforms import (
    TENSOR_MODES,
    check_preprocessing,
    convert_image_mode,
    default_padding,
    eval_transform,
    make_preprocessing,
    mode_for_chans,
    train_transform,
)

log = logging.getLogger(__name__)

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


class ImageReadError(ValueError):
    """A file that cannot be decoded as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class DataFormatError(ValueError):
    """A dataset file (IDX, CIFAR batch, split file) that is malformed or not what its name says."""


# =========================================================================== decoding one image


def _check_pixels(img: Image.Image, path: str | os.PathLike) -> None:
    # Image.open itself raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS; between 1x and 2x Pillow only
    # warns, so say here which file it is.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        log.warning(
            "%s: %dx%d = %d pixels exceeds Image.MAX_IMAGE_PIXELS (%d); possible decompression bomb, decoding anyway",
            path, img.width, img.height, img.width * img.height, limit,
        )  # fmt: skip


def _check_mode(mode: str) -> str:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    return mode


def _reason(e: BaseException) -> str:
    if isinstance(e, Image.DecompressionBombError):
        return f"decompression bomb refused ({e})"
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can identify (wrong extension, or not an image file at all)"
    if isinstance(e, OSError) and e.errno is not None:  # the file system refused (permissions, link loop...)
        return f"cannot open ({e.strerror or e})"
    if isinstance(e, (OSError, EOFError, SyntaxError, struct.error, zlib.error)):
        return f"corrupt or truncated image data ({type(e).__name__}: {e})"
    return f"{type(e).__name__}: {e}"


def _file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an image file before reading a byte: missing, not a regular file, or empty."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot open ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever; a device never ends
        return "not a regular file (a directory, pipe or device)"
    return "empty file (0 bytes)" if st.st_size == 0 else None


def _jpeg_ends_early(path: str | os.PathLike) -> bool:
    # A complete JPEG ends with the EOI marker FF D9 (entropy-coded data never contains it); a cut one almost
    # never does.  Some writers append bytes after EOI, so a missing marker only asks for a full decode.
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        return b"\xff\xd9" not in f.read()


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into a Pillow image in ``mode`` ("RGB", or "L" for in_chans=1).

    Any file mode is accepted (palette, alpha, CMYK, 16-bit, 1-bit...; see transforms.convert_image_mode), the
    EXIF orientation is applied, and an animated image gives its first frame.  Pillow's decompression-bomb
    limit (Image.MAX_IMAGE_PIXELS) stays in force.  Raises ImageReadError naming the path and the cause for
    empty, truncated, unidentifiable or oversized files.
    """
    _check_mode(mode)
    problem = _file_problem(path)
    if problem is not None:
        raise ImageReadError(path, problem)
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            try:
                img = ImageOps.exif_transpose(im)
            except Exception as e:  # a malformed EXIF block should not lose the picture
                log.warning("%s: ignoring unreadable EXIF orientation (%s)", path, e)
                img = im
            out = convert_image_mode(img, mode)
            if out is im:  # detach from the file handle the with-block closes
                out = im.copy()
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plugins raise many types for malformed files
        raise ImageReadError(path, _reason(e)) from None
    return out


def check_image(path: str | os.PathLike, *, full_decode: bool = False, mode: str = "RGB") -> str | None:
    """Why ``path`` is not a readable image, or None if it is.

    The cheap check reads the header and runs Pillow's ``verify()``, which validates PNG checksums and WebP data
    but decodes no JPEG data; so a JPEG is decoded only when its end-of-image marker is missing (how a cut-off
    JPEG looks), and other formats (GIF, BMP, TIFF..., rare in datasets, where verify() misses truncation) are
    always decoded.  ``full_decode=True`` decodes every image with load_image.
    """
    if full_decode:
        try:
            load_image(path, mode)
        except ImageReadError as e:
            return e.reason
        return None
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        with Image.open(path) as im:
            im.verify()
            fmt = im.format
        if fmt not in ("PNG", "WEBP", "JPEG") or fmt == "JPEG" and _jpeg_ends_early(path):
            load_image(path, mode)
    except MemoryError:
        raise
    except ImageReadError as e:
        return e.reason
    except Exception as e:
        return _reason(e)
    return None


# =========================================================================== file datasets


def is_image_file(path: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(tuple(extensions))


def _dir_key(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_images(directory: Path, extensions: Sequence[str]) -> list[Path]:
    # Symbolic links are followed, but a directory is walked once: a link back to the folder itself or to
    # any folder above it (a loop, which would otherwise repeat every file ~40 times, until the OS refuses
    # the path, and pull other classes in) is skipped with a warning.
    found = []
    seen = {k for k in map(_dir_key, [directory.resolve(), *directory.resolve().parents]) if k is not None}
    seen.discard(_dir_key(directory))
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        key = _dir_key(dirpath)
        if key is None or key in seen:
            log.warning("not following %s: a symlink loop back to a folder already walked", dirpath)
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if is_image_file(f, extensions)]
    return found


def list_image_files(path: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> list[Path]:
    """``path`` itself if it is a file, else every image file below it (recursively, sorted, hidden ones skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return _walk_images(path, extensions)


def find_classes(root: str | os.PathLike) -> list[str]:
    """Class names of an image folder: its subfolder names, sorted by code point, hidden ones skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class subfolders (expected root/<class>/<image files>)")
    return classes


_SPLIT_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


def find_splits(root: str | os.PathLike) -> dict[str, Path]:
    """The split folders of ``root`` ({"train": root/train, "val": root/val, "test": root/test}, whichever exist;
    also training/, valid/, validation/, testing/).  Empty when ``root`` has no train folder, i.e. when it is
    itself a folder of classes."""
    root = Path(root)
    out: dict[str, Path] = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                out[split] = root / name
                break
    return out if "train" in out else {}


class ImageFolder(Dataset):
    """Images in ``root/<class>/**/<file>`` with a known extension; class index = position in sorted names.

    ``__getitem__`` returns ``(transform(image), label)``, or ``None`` for a file that cannot be read (see the
    module docstring and collate_skip_none).  ``classes`` may be given to align a val/test folder with the
    training classes; a folder class outside it is an error.  With ``cache`` (see lightnets.data.decode_cache),
    ``with_transform`` given a transform built by eval_transform / train_transform decodes the folder once into
    a memory-mapped file at that preprocessing's working resolution, and items are read from it from then on.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        mode: str = "RGB",
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        cache: DecodeCache | None = None,
    ) -> None:
        self.root = Path(root)
        found = find_classes(self.root)
        if classes is None:
            classes = found
        else:
            extra = sorted(set(found) - set(classes))
            if extra:
                raise ValueError(
                    f"{self.root} has class folders {extra} that are not among the classes {list(classes)}"
                )
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for name in found:
            label = self.class_to_idx[name]
            self.samples += [(str(p), label) for p in _walk_images(self.root / name, extensions)]
        if not self.samples:
            raise ValueError(f"no image files ({', '.join(extensions)}) under {self.root}")
        self.transform = transform
        self.mode = _check_mode(mode)
        self.skipped: list[tuple[str, str]] = []
        self.cache = cache
        self._all_files = tuple(p for p, _ in self.samples)  # what a decode cache covers (subsets share it)
        self.decoded: DecodedImages | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def relative_paths(self) -> list[str]:
        """Sample paths relative to root, '/'-separated (what split files record)."""
        return [Path(p).relative_to(self.root).as_posix() for p, _ in self.samples]

    def _report(self, path: str, reason: str) -> None:
        log.warning("skipping unreadable image %s: %s", path, reason)
        if all(p != path for p, _ in self.skipped):
            self.skipped.append((path, reason))

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, label = self.samples[index]
        img = self.decoded.get(path) if self.decoded is not None else None
        if img is None:
            try:
                img = load_image(path, self.mode)
            except ImageReadError as e:
                self._report(path, e.reason)
                return None
        return (self.transform(img) if self.transform is not None else img), label

    def scan(
        self, check: bool = True, *, full_decode: bool = False, drop: bool = True
    ) -> list[tuple[str, str]]:
        """Try every file now and return the bad ones as (path, reason).

        ``check=False`` only finds missing and empty files; ``check=True`` also opens each header and runs
        Pillow's verify(); ``full_decode=True`` decodes every image (slow, but also finds truncated JPEG data).
        With ``drop`` the bad files leave ``samples`` (so they cost nothing later); all are added to ``skipped``.
        """
        bad: list[tuple[str, str]] = []
        for path, _ in self.samples:
            if check or full_decode:
                reason = check_image(path, full_decode=full_decode, mode=self.mode)
            else:
                try:
                    reason = "empty file (0 bytes)" if os.path.getsize(path) == 0 else None
                except OSError as e:
                    reason = f"cannot open ({e.strerror or e})"
            if reason is not None:
                bad.append((path, reason))
                self._report(path, reason)
        if drop and bad:
            gone = {p for p, _ in bad}
            self.samples = [s for s in self.samples if s[0] not in gone]
        return bad

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> ImageFolder:
        """A shallow copy with another transform (and its own ``skipped`` list); reading from the decode cache
        of the transform's preprocessing when the folder has a cache and the transform carries one."""
        out = copy.copy(self)
        out.transform = transform
        out.skipped = []
        preprocessing = getattr(transform, "preprocessing", None)
        if self.cache is not None and preprocessing is not None:
            try:
                out.decoded = self.cache.open(self.root, self._all_files, lambda p: load_image(p, self.mode),
                                              shaping(preprocessing, self.mode))  # fmt: skip
            except OSError as e:  # a read-only or full cache disk costs speed, never the run
                log.warning("decode cache unavailable (%s); decoding %s every epoch", e, self.root)
                out.decoded = None
        return out

    def subset(
        self, indices: Iterable[int], transform: Callable[[Image.Image], Any] | None = None
    ) -> ImageFolder:
        """The samples at ``indices`` (same classes and root) as a new ImageFolder."""
        out = self.with_transform(transform if transform is not None else self.transform)
        out.samples = [self.samples[i] for i in indices]
        return out


class ImageFiles(Dataset):
    """An explicit list of image files, e.g. for prediction: items are ``(transform(image), index)`` so that
    results can be matched to ``paths[index]``, or ``None`` for an unreadable file (recorded in ``skipped``)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        mode: str = "RGB",
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.mode = mode
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path = self.paths[index]
        try:
            img = load_image(path, self.mode)
        except ImageReadError as e:
            log.warning("skipping unreadable image %s: %s", path, e.reason)
            self.skipped.append((path, e.reason))
            return None
        return (self.transform(img) if self.transform is not None else img), index

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> ImageFiles:
        out = copy.copy(self)
        out.transform = transform
        out.skipped = []
        return out


def collate_skip_none(batch: Sequence[Any]) -> Any:
    """default_collate without the ``None`` items that file datasets return for unreadable files; ``None``
    when nothing is left."""
    items = [b for b in batch if b is not None]
    return default_collate(items) if items else None


# =========================================================================== train / val splits


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


# =========================================================================== in-memory datasets


class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor (N, C, H, W) with int64 labels (N,) and class names.

    Items are ``(uint8 image (C, H, W), label)``; batch these with TensorBatchLoader, which converts,
    augments and normalises whole batches.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str = ""
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"labels span [{labels.min()}, {labels.max()}] but there are {len(classes)} classes"
            )
        self.images, self.labels, self.classes, self.name = images, labels, list(classes), name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[3]

    def subset(self, indices: Sequence[int]) -> TensorImageDataset:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)

    def with_chans(self, in_chans: int) -> TensorImageDataset:
        """The same images with 1 or 3 channels (gray repeated to RGB; RGB to gray by ITU-R 601-2 luma)."""
        c = self.in_chans
        if in_chans == c:
            return self
        if c == 1 and in_chans == 3:
            images = self.images.expand(-1, 3, -1, -1).contiguous()
        elif c == 3 and in_chans == 1:
            w = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
            images = ((self.images.int() * w).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor")
            images = images.clamp_(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {c}-channel images to {in_chans} channels")
        return TensorImageDataset(images, self.labels, self.classes, self.name)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1] (for a preprocessing dict)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.numel() // c
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


# --- IDX (MNIST family) -----------------------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, recognised by content) into a native-endian numpy array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4:
        raise DataFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if zero != b"\x00\x00" or code not in _IDX_TYPES or ndim == 0:
        raise DataFormatError(
            f"{path}: bad IDX magic number 0x{magic:08X} (expected 0x0000, a type code in "
            f"{[hex(t) for t in _IDX_TYPES]} and a dimension count, e.g. 0x00000803 for images)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: IDX header promises {dims} x {dtype.itemsize} bytes = {expected} bytes of data, "
            f"the file has {len(raw) - header} (truncated or not an IDX file)"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """An IDX image file (magic 0x00000803: uint8 N x H x W) and its label file (0x00000801: uint8 N) as a
    uint8 tensor (N, 1, H, W) and int64 labels (N,)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataFormatError(
            f"{images_path}: expected uint8 images N x H x W (magic 0x00000803), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(
            f"{labels_path}: expected uint8 labels N (magic 0x00000801), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return torch.from_numpy(images).unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64))


_IDX_IMAGES = re.compile(r"^(?P<prefix>.*)images[-.]idx3[-.]ubyte(?:\.gz)?$")


def find_idx_files(root: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """{"train": (images, labels), "test": (...)} for the IDX pairs in ``root`` (train-*, t10k-* / test-*)."""
    root = Path(root)
    out: dict[str, tuple[Path, Path]] = {}
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        m = _IDX_IMAGES.match(p.name)
        if not m:
            continue
        stem = m.group("prefix")
        split = "train" if "train" in stem else "test" if ("t10k" in stem or "test" in stem) else None
        if split is None:
            continue
        labels = [
            q
            for q in root.iterdir()
            if re.match(re.escape(stem) + r"labels[-.]idx1[-.]ubyte(?:\.gz)?$", q.name)
        ]
        if not labels:
            raise DataFormatError(f"{p} has no matching {stem}labels-idx1-ubyte[.gz] beside it")
        out[split] = (p, sorted(labels)[0])
    return out


# --- CIFAR python batches ----------------------------------------------------------------------------------


def _np_global(module: str, name: str) -> Any:
    import importlib

    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def _codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"refusing codec {encoding!r} in a data file")
    return codecs.encode(obj, encoding, errors)


# The only globals a CIFAR batch needs: numpy array and dtype reconstruction (Python 2 and 3, numpy 1 and 2).
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _np_global("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _np_global("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _np_global("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _np_global("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _np_global("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _np_global("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _codecs_encode,
    ("codecs", "encode"): lambda: _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        make = _SAFE_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: data files may hold only numpy arrays and plain containers"
            )
        return make()


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _str_keys(v) for k, v in obj.items()}
    return obj


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle a CIFAR python batch / meta file without executing code (restricted globals), with str keys.

    The files were written by Python 2, so text is read as latin-1 (what numpy's array state needs).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataFormatError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return _str_keys(obj)


def _label_names(names: Iterable[Any]) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _cifar_arrays(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch = read_cifar_batch(path)
    if "data" not in batch or label_key not in batch:
        raise DataFormatError(f"{path}: CIFAR batch without 'data' / '{label_key}' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    # each row: 1024 red, 1024 green, 1024 blue values, each a 32 x 32 image in row-major order
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def is_cifar_folder(root: str | os.PathLike) -> str | None:
    """ "cifar10", "cifar100" or None, from the batch file names in ``root``."""
    root = Path(root)
    if (root / "data_batch_1").is_file():
        return "cifar10"
    if (root / "train").is_file() and (root / "meta").is_file():
        return "cifar100"
    return None


def load_cifar(root: str | os.PathLike, labels: str = "fine") -> dict[str, TensorImageDataset]:
    """CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta; ``labels`` "fine"
    or "coarse") python batches as {"train": ..., "test": ...} TensorImageDatasets (N, 3, 32, 32)."""
    root = Path(root)
    kind = is_cifar_folder(root)
    if kind is None:
        raise DataFormatError(
            f"{root} holds neither CIFAR-10 (data_batch_1...) nor CIFAR-100 (train, meta) batches"
        )
    splits: dict[str, TensorImageDataset] = {}
    if kind == "cifar10":
        meta = root / "batches.meta"
        classes = (
            _label_names(read_cifar_batch(meta)["label_names"]) if meta.is_file() else list(CIFAR10_CLASSES)
        )
        files = sorted(
            root.glob("data_batch_*"),
            key=lambda p: int(p.name.rsplit("_", 1)[1]) if p.name[-1].isdigit() else 0,
        )
        if [p.name for p in files] != [f"data_batch_{i}" for i in range(1, 6)]:
            log.warning("%s: expected data_batch_1..5, found %s", root, [p.name for p in files])
        parts = [_cifar_arrays(p, "labels") for p in files]
        splits["train"] = TensorImageDataset(
            torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts]), classes, kind
        )
        if (root / "test_batch").is_file():
            splits["test"] = TensorImageDataset(*_cifar_arrays(root / "test_batch", "labels"), classes, kind)
    else:
        if labels not in ("fine", "coarse"):
            raise ValueError(f"CIFAR-100 labels must be 'fine' or 'coarse', got {labels!r}")
        classes = _label_names(read_cifar_batch(root / "meta")[f"{labels}_label_names"])
        for split in ("train", "test"):
            if (root / split).is_file():
                splits[split] = TensorImageDataset(
                    *_cifar_arrays(root / split, f"{labels}_labels"), classes, kind
                )
    return splits


# --- scikit-learn digits ----------------------------------------------------------------------------------


def load_digits_dataset() -> TensorImageDataset:
    """scikit-learn's bundled 8 x 8 handwritten digits (1,797 images, 10 classes, no download); pixel values
    0-16 are scaled to 0-255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install 'lightnets[train]'") from e
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return TensorImageDataset(
        torch.from_numpy(images).unsqueeze(1).contiguous(),
        torch.from_numpy(digits.target.astype(np.int64)),
        DIGIT_CLASSES,
        "digits",
    )


# =========================================================================== one entry point


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
        return isinstance(self.train, TensorImageDataset)


_PREFIXES = ("digits", "fashion-mnist", "mnist", "idx", "cifar10", "cifar100", "folder")


def _parse_source(source: str) -> tuple[str | None, str]:
    if source in ("digits", "sklearn-digits"):
        return "digits", ""
    head, sep, rest = source.partition(":")
    if sep and head.lower() in _PREFIXES and rest:
        return head.lower(), rest
    return None, source


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
    kind, path_str = _parse_source(str(source))
    path = Path(path_str) if path_str else None
    if kind is None:
        if path is None or not path.exists():
            raise FileNotFoundError(
                f"dataset source {source!r} is neither 'digits', a known 'kind:PATH' ({', '.join(_PREFIXES)}) nor an existing path"
            )
        if find_idx_files(path):
            kind = "fashion-mnist" if "fashion" in path.resolve().name.lower() else "idx"
        elif is_cifar_folder(path):
            kind = is_cifar_folder(path)
        else:
            kind = "folder"
    elif path is not None and not path.exists():
        raise FileNotFoundError(f"{kind} data not found at {path}")

    if kind == "folder":
        store = DecodeCache(str(cache_dir) if cache_dir is not None else None) if cache else None
        return _load_folder(path, str(source), val_fraction, seed, split_file, in_chans, store)

    test: TensorImageDataset | None = None
    if kind == "digits":
        train = load_digits_dataset()
    elif kind in ("fashion-mnist", "mnist", "idx"):
        pairs = find_idx_files(path)
        if "train" not in pairs:
            raise DataFormatError(
                f"{path}: no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] pair"
            )
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
        if "test" in pairs:
            test = TensorImageDataset(*load_idx_pair(*pairs["test"]), classes, kind)
    elif kind in ("cifar10", "cifar100"):
        parts = load_cifar(path, cifar100_labels)
        found = is_cifar_folder(path)
        if found != kind:
            raise DataFormatError(f"{path} holds {found} batches, not {kind}")
        train, test = parts["train"], parts.get("test")
    else:  # pragma: no cover - _PREFIXES and the branches above agree
        raise ValueError(f"unknown dataset kind {kind!r}")

    if in_chans is not None:
        mode_for_chans(in_chans)  # validates
        train = train.with_chans(in_chans)
        test = test.with_chans(in_chans) if test is not None else None
    val = None
    how = "none (val_fraction=0)"
    if val_fraction > 0:
        tr, va = make_split(train.labels, val_fraction, seed, split_file, source=str(source))
        train, val = train.subset(tr), train.subset(va)
        how = (
            f"file {split_file}"
            if split_file is not None
            else f"stratified seed={seed} val_fraction={val_fraction}"
        )
    return DatasetSplits(
        train, val, test, list(train.classes), train.in_chans, kind, str(source), train.image_size, how
    )


def _load_folder(
    root: Path,
    source: str,
    val_fraction: float,
    seed: int,
    split_file: str | os.PathLike | None,
    in_chans: int | None,
    cache: DecodeCache | None = None,
) -> DatasetSplits:
    splits = find_splits(root)
    train = ImageFolder(splits.get("train", root), cache=cache)
    # in_chans None: a folder of grayscale images decodes to one channel, like the IDX data (see lightnets.data.probe)
    probe = probe_sizes(train._all_files, lambda p, gray: load_image(p, _folder_mode(in_chans, gray)))
    chans = in_chans or (1 if probe is not None and probe.gray else 3)
    train.mode = mode = mode_for_chans(chans)
    if splits:
        test = ImageFolder(splits["test"], mode=mode, classes=train.classes, cache=cache) if "test" in splits else None
        if "val" in splits:
            val = ImageFolder(splits["val"], mode=mode, classes=train.classes, cache=cache)
            how = f"folder {splits['val']}"
            return DatasetSplits(train, val, test, train.classes, chans, "folder", source, None, how, probe)
    else:
        test = None
    val, how = None, "none (val_fraction=0)"
    if val_fraction > 0:
        tr, va = make_split(
            train.targets, val_fraction, seed, split_file, files=train.relative_paths(), source=source
        )
        train, val = train.subset(tr), train.subset(va)
        how = (
            f"file {split_file}"
            if split_file is not None
            else f"stratified seed={seed} val_fraction={val_fraction}"
        )
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


# =========================================================================== batching


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, batch...) with no collisions like seed + epoch has."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class _BatchPlan:
    step: int  # index of the global batch in the epoch
    global_size: int  # samples in the whole global batch (all ranks)
    offset: int  # where this rank's chunk starts inside the global batch
    indices: torch.Tensor  # this rank's sample indices


def _plan_epoch(
    num_samples: int,
    batch_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    rank: int,
    world_size: int,
) -> list[_BatchPlan]:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(_mix_seed(seed, epoch)))
    else:
        order = torch.arange(num_samples)
    g = batch_size * world_size
    plans = [
        _BatchPlan(
            k, g, rank * batch_size, order[k * g + rank * batch_size : k * g + (rank + 1) * batch_size]
        )
        for k in range(num_samples // g)
    ]
    rest = order[(num_samples // g) * g :]
    if len(rest) and not drop_last:
        chunks = torch.tensor_split(rest, world_size)
        offset = sum(len(c) for c in chunks[:rank])
        if len(chunks[rank]):
            plans.append(_BatchPlan(num_samples // g, len(rest), offset, chunks[rank]))
    return plans


def epoch_batches(
    num_samples: int,
    batch_size: int,
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """The sample indices of each batch one rank gets in one epoch.

    Partitioning: the epoch's order is one permutation of all samples, drawn from (seed, epoch) only (the
    identity without shuffle), the same on every rank.  It is cut into global batches of
    ``batch_size * world_size`` consecutive entries, and rank r takes the r-th contiguous chunk of
    ``batch_size`` of each.  So concatenating the ranks' k-th batches in rank order gives exactly the k-th
    batch of a single process with batch size ``batch_size * world_size``.  A final incomplete global batch is
    dropped with ``drop_last``; otherwise it is split into ``world_size`` contiguous chunks whose sizes differ
    by at most one (the first ones larger, as torch.tensor_split does), and a rank whose chunk is empty gets no
    final batch (so use drop_last=True for DDP training, where every rank must run the same number of steps).
    No sample is repeated to pad, so evaluation over all ranks counts every sample exactly once.
    """
    return [
        p.indices
        for p in _plan_epoch(num_samples, batch_size, epoch, seed, shuffle, drop_last, rank, world_size)
    ]


def pad_crop_flip(
    images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a whole batch (B, C, H, W) as two gathers.

    The batch is zero-padded by ``padding`` on every side once; sample i is the H x W window at row ``dy[i]``,
    column ``dx[i]`` (each in [0, 2 * padding]) of the padded image, mirrored left-right where ``flip[i]``.
    Equivalent to padding, cropping and flipping each image on its own, without a Python loop (and about twice
    as fast on CPU as one 4-D advanced-indexing gather).
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = dy.to(dev).view(b, 1) + torch.arange(h, device=dev).view(1, h)  # (B, H)
    base = torch.arange(w, device=dev).view(1, w)
    cols = dx.to(dev).view(b, 1) + torch.where(flip.to(dev).view(b, 1), w - 1 - base, base)  # (B, W)
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, padded.shape[-1]))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def resize_batch(x: torch.Tensor, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """Bring a float batch (values in [0, 1]) to the model input size as the preprocessing dict says: straight
    to input_size ("exact"), or shorter side to resize_size then centre crop ("shorter").  Antialiased
    bilinear / bicubic like Pillow; a no-op when the batch already has the right size."""
    p = preprocessing
    th, tw = p["input_size"]
    h, w = x.shape[-2:]
    interp = p["interpolation"]
    if interp not in TENSOR_MODES:
        raise ValueError(f"tensor batches support interpolation {list(TENSOR_MODES)}, not {interp!r}")
    mode = TENSOR_MODES[interp]
    kwargs = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if p["resize"] == "exact":
        size = (th, tw)
    else:
        s = p["resize_size"]
        size = (int(s * h / w), s) if w <= h else (s, int(s * w / h))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode=mode, **kwargs)
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    h, w = x.shape[-2:]
    if (h, w) != (th, tw):
        if th > h or tw > w:  # zero-pad first, split as transforms.CenterCrop does (odd pixel right / bottom)
            ph, pw = max(th - h, 0), max(tw - w, 0)
            x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
            h, w = x.shape[-2:]
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        x = x[..., top : top + th, left : left + tw]
    return x


class _EpochPartition:
    """What both loaders share: the batch plan of epoch_batches for (num_samples, batch_size, shuffle, seed,
    drop_last, rank, world_size) at the current epoch, ``set_epoch`` and ``len``."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int,
        world_size: int,
    ) -> None:
        self._num_samples = num_samples
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self._plans()  # validates the arguments now rather than at the first epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration produces."""
        self.epoch = int(epoch)

    def _plans(self) -> list[_BatchPlan]:
        return _plan_epoch(
            self._num_samples,
            self.batch_size,
            self.epoch,
            self.seed,
            self.shuffle,
            self.drop_last,
            self.rank,
            self.world_size,
        )

    def __len__(self) -> int:
        return len(self._plans())

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(len(p.indices) for p in self._plans())


class TensorBatchLoader(_EpochPartition):
    """Batches of an in-memory uint8 dataset as normalised float tensors, augmented as whole tensors.

    Each batch: gather uint8 images, (train) random pad-crop + horizontal flip at native resolution
    (pad_crop_flip, padding default size/8: 4 px at 32, 4 at 28, 1 at 8), scale to [0, 1], resize to the model
    input as ``preprocessing`` says (resize_batch), normalise with its mean/std.  Yields
    ``(float32 images (B, C, H, W), int64 labels (B,))``, on ``device`` if given (the uint8 batch is moved
    first, then augmented there).

    Deterministic: the order and every augmentation draw depend only on (seed, epoch) and the position in the
    epoch; call ``set_epoch(epoch)`` before each epoch, as with DistributedSampler.  Random draws are made per
    global batch (all ranks) and each rank slices its rows, so ranks' batches, concatenated in rank order,
    equal the single-process batch bit for bit (index partitioning: see epoch_batches).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        augment: bool = False,
        preprocessing: Mapping[str, Any] | None = None,
        *,
        padding: int | None = None,
        hflip: float = 0.5,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(len(images), batch_size, shuffle, seed, drop_last, rank, world_size)
        c, h, w = images.shape[1:]
        self.preprocessing = check_preprocessing(
            preprocessing or make_preprocessing("small", (h, w), in_chans=c)
        )
        if self.preprocessing["in_chans"] != c:
            raise ValueError(
                f"preprocessing is for {self.preprocessing['in_chans']} channels, the images have {c}"
            )
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.int64)
        self.augment, self.hflip = augment, hflip
        self.padding = default_padding(min(h, w)) if padding is None else int(padding)
        self.device = torch.device(device) if device is not None else None
        self._mean = torch.tensor(self.preprocessing["mean"]).view(1, c, 1, 1)
        self._std = torch.tensor(self.preprocessing["std"]).view(1, c, 1, 1)

    @classmethod
    def from_dataset(cls, dataset: TensorImageDataset, batch_size: int, **kwargs: Any) -> TensorBatchLoader:
        return cls(dataset.images, dataset.labels, batch_size, **kwargs)

    def _augment(self, x: torch.Tensor, plan: _BatchPlan) -> torch.Tensor:
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, plan.step, 1))
        n, p = plan.global_size, self.padding
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < self.hflip
        rows = slice(plan.offset, plan.offset + len(plan.indices))
        return pad_crop_flip(x, p, dy[rows], dx[rows], flip[rows])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for plan in self._plans():
            x, y = self.images[plan.indices], self.labels[plan.indices]
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.augment:
                x = self._augment(x, plan)
            x = resize_batch(x.float().div_(self.preprocessing["value_scale"]), self.preprocessing)
            x = (x - self._mean.to(x.device)) / self._std.to(x.device)
            yield x.contiguous(), y


class FolderLoader(_EpochPartition):
    """A DataLoader over a file dataset (ImageFolder / ImageFiles) with the index partitioning of epoch_batches,
    ``set_epoch``, unreadable files dropped (collate_skip_none) and empty batches skipped.

    A fresh DataLoader is made each epoch; its workers are seeded from (seed, epoch, rank), so per-image
    augmentation is reproducible for a given number of workers.  With num_workers=0 the transforms draw from
    torch's global RNG (seed it with torch.manual_seed).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(len(dataset), batch_size, shuffle, seed, drop_last, rank, world_size)
        self.dataset = dataset
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def __iter__(self) -> Iterator[Any]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=[p.indices.tolist() for p in self._plans()],
            num_workers=self.num_workers,
            collate_fn=collate_skip_none,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, 2)),
        )
        for batch in loader:
            if batch is not None:
                yield batch


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    preprocessing: Mapping[str, Any],
    seed: int = 0,
    augment: bool | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    pin_memory: bool = False,
    crop_scale: tuple[float, float] | None = None,
) -> TensorBatchLoader | FolderLoader:
    """The loader for one split: shuffled, augmented and drop_last when ``train`` (each overridable).

    In-memory datasets get a TensorBatchLoader (``device`` moves uint8 batches before augmentation); file
    datasets a FolderLoader with ``train_transform(preprocessing)`` (RandomResizedCrop area range
    ``crop_scale`` when given) or ``eval_transform(preprocessing)``.
    Both yield (images, labels) -- (images, indices) for ImageFiles -- and have set_epoch and len().
    """
    augment = train if augment is None else augment
    drop_last = train if drop_last is None else drop_last
    if isinstance(dataset, TensorImageDataset):
        return TensorBatchLoader(
            dataset.images, dataset.labels, batch_size, shuffle=train, seed=seed, augment=augment,
            preprocessing=preprocessing, drop_last=drop_last, rank=rank, world_size=world_size, device=device,
        )  # fmt: skip
    if isinstance(dataset, (ImageFolder, ImageFiles)):
        dataset = dataset.with_transform(
            train_transform(preprocessing, **({} if crop_scale is None else {"scale": crop_scale}))
            if augment
            else eval_transform(preprocessing)
        )
    return FolderLoader(
        dataset, batch_size, shuffle=train, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
        num_workers=num_workers, pin_memory=pin_memory,
    )  # fmt: skip


def measure_throughput(loader: Iterable[Any], num_batches: int = 20, warmup: int = 1) -> float:
    """Images per second delivered by ``loader`` over ``num_batches`` batches after ``warmup`` batches (fewer if
    the loader runs out).  The first element of each batch is taken as the images."""
    it = iter(loader)
    for _ in range(warmup):
        if next(it, None) is None:
            break
    images, start, done = 0, time.perf_counter(), 0
    for batch in it:
        images += len(batch[0])
        done += 1
        if done >= num_batches:
            break
    seconds = time.perf_counter() - start
    if images == 0:
        raise ValueError("the loader produced no batches to time (after warm-up)")
    return images / seconds
