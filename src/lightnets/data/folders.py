"""Datasets of image files on disk: class folders (``ImageFolder``), explicit file lists (``ImageFiles``),
the discovery of class and split folders, and ``collate_skip_none``.

Unreadable files never end an epoch: ``ImageFolder.__getitem__`` returns ``None`` for a file it cannot decode
(after logging a warning with the path and recording ``(path, reason)`` in ``dataset.skipped``),
``collate_skip_none`` drops those items from the batch, and ``FolderLoader`` skips a batch that ends up empty.
Dropping (rather than substituting another image) keeps evaluation exact: every reported prediction belongs to
a file that was actually read.  With DataLoader workers each worker records into its own copy of the dataset,
so ``dataset.skipped`` in the main process only lists what the main process saw; the log lines name every
file, and ``dataset.scan()`` checks all files up front in the main process.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, default_collate

from .decode_cache import DecodeCache, DecodedImages, shaping
from .errors import ImageReadError
from .images import IMG_EXTENSIONS, _check_mode, check_image, is_image_file, load_image

log = logging.getLogger(__name__)


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
