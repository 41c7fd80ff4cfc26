"""Decode an image folder once: a memory-mapped file of uint8 pixels that every later epoch reads.

Re-decoding every JPEG every epoch costs as much as a small model's forward and backward pass on a 2-core CPU.
FFCV's idea (decode once into one memory-mapped file) without its format: each folder split gets one file

    [MAGIC 8 bytes][pixels of image 0][pixels of image 1]...[index JSON][sha256(index) 32][len(index) u64][DONE 8]

where the index holds, per source file, its path, size and mtime (the key that invalidates the cache when a file
changes, appears or goes) and the offset, shape and CRC-32 of its pixels, or null for a file that did not decode
(that file is decoded again on every read, so it is reported and skipped exactly as without a cache).

Images are stored at the *working resolution*: the deterministic first step of the evaluation transform
(``Resize`` to the shorter side ``resize_size``, or straight to ``input_size`` for the small preset) is applied
when it shrinks the image, otherwise the decoded image is kept as it is.  Resizing an already resized image is
the identity, so evaluation (and the small preset's training transform) gives the same tensors as decoding the
file; ImageNet-style RandomResizedCrop then crops the stored 256-px image instead of the full-size photo, as
FFCV and most fast ImageNet pipelines do.

Never trusted: a file that is truncated, lacks the completion marker, has a bad magic, a wrong index checksum, a
different key or stale file stats is rebuilt; a pixel block whose CRC-32 fails is decoded from its source file
instead (and the cache file removed, so the next open rebuilds it).  Building writes a temporary file and
renames it into place, so readers see a complete old or new file, and two processes building at once both
succeed (the later rename wins; an open memory map keeps the file it mapped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .preprocessing import check_preprocessing
from .transforms import Resize

log = logging.getLogger(__name__)

VERSION = 1
MAGIC = b"LNDCv001"
DONE = b"LNDCDONE"
_FOOTER = struct.Struct("<32sQ8s")  # sha256 of the index, index length, completion marker
_SUFFIX = ".lnc"


class CacheInvalid(ValueError):
    """A cache file that must not be used; the message says why (rebuilt by ``open_or_build``)."""


def default_cache_dir() -> Path:
    """Where decoded folders go: ``$LIGHTNETS_CACHE_DIR``, else ``$XDG_CACHE_HOME/lightnets/decoded``, else
    ``~/.cache/lightnets/decoded``."""
    env = os.environ.get("LIGHTNETS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lightnets" / "decoded"


def shaping(preprocessing: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The part of ``preprocessing`` that decides the stored pixels (and so belongs in the cache key)."""
    p = check_preprocessing(preprocessing)
    size = p["resize_size"] if p["resize"] == "shorter" else list(p["input_size"])
    return {"mode": mode, "resize": p["resize"], "size": size, "interpolation": p["interpolation"]}


def shape_image(img: Image.Image, shape: Mapping[str, Any]) -> Image.Image:
    """``img`` after the deterministic first resize of the transforms, when that makes it smaller."""
    size = shape["size"] if shape["resize"] == "shorter" else tuple(shape["size"])
    resize = Resize(size, shape["interpolation"])
    w, h = resize.output_size(*img.size)
    return resize(img) if w * h < img.width * img.height else img


def _file_stats(files: Sequence[str]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([f, -1, -1])  # unreadable now: still a key, decoded (and reported) at read time
    return out


def cache_path(directory: str | os.PathLike, root: str | os.PathLike, shape: Mapping[str, Any]) -> Path:
    """The cache file of folder ``root`` decoded with ``shape``; its name hashes both."""
    key = json.dumps({"v": VERSION, "root": str(Path(root).resolve()), "shape": dict(shape)}, sort_keys=True)
    name = Path(root).name or "root"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return Path(directory) / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:20]}{_SUFFIX}"


# --------------------------------------------------------------------------- reading


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The verified index of a cache file; raises CacheInvalid naming the first defect found."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < len(MAGIC) + _FOOTER.size:
                raise CacheInvalid("truncated (shorter than header and footer)")
            f.seek(0)
            if f.read(len(MAGIC)) != MAGIC:
                raise CacheInvalid("bad header (not a lightnets decode cache, or another version)")
            f.seek(size - _FOOTER.size)
            digest, length, done = _FOOTER.unpack(f.read(_FOOTER.size))
            if done != DONE:
                raise CacheInvalid("no completion marker (a partial or truncated file)")
            start = size - _FOOTER.size - length
            if length == 0 or start < len(MAGIC):
                raise CacheInvalid("index length out of range")
            f.seek(start)
            raw = f.read(length)
    except OSError as e:
        raise CacheInvalid(f"cannot read ({e})") from None
    if hashlib.sha256(raw).digest() != digest:
        raise CacheInvalid("index checksum mismatch")
    try:
        index = json.loads(raw)
    except ValueError:
        raise CacheInvalid("index is not valid JSON") from None
    try:
        if index["version"] != VERSION or index["data_end"] != start:
            raise CacheInvalid("index does not match the file (version or data length)")
        if len(index["files"]) != len(index["entries"]) or not isinstance(index["shape"], dict):
            raise CacheInvalid("index is inconsistent")
        for e in index["entries"]:
            if e is not None and not (len(MAGIC) <= e[0] and e[0] + e[1] * e[2] * e[3] <= start):
                raise CacheInvalid("an entry points outside the pixel data")
    except (KeyError, TypeError, IndexError):
        raise CacheInvalid("index lacks required fields") from None
    return index


class DecodedImages:
    """An opened cache file: ``get(path)`` gives the stored image, or None when the path must be decoded from
    its file (not stored, failed to decode at build time, or a damaged block)."""

    def __init__(self, path: str | os.PathLike, index: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.mode: str = index["shape"]["mode"]
        self.entries: dict[str, Any] = {
            f[0]: e for f, e in zip(index["files"], index["entries"], strict=True)
        }
        self._mm: np.memmap | None = None

    def __len__(self) -> int:
        return sum(e is not None for e in self.entries.values())

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers started by spawn map the file themselves
        return {**self.__dict__, "_mm": None}

    def _block(self, entry: Sequence[int]) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        offset, h, w, c, _ = entry
        return self._mm[offset : offset + h * w * c]

    def get(self, path: str) -> Image.Image | None:
        entry = self.entries.get(path)
        if entry is None:
            return None
        block = self._block(entry)
        if zlib.crc32(block) != entry[4]:
            log.warning("decode cache %s: pixels of %s fail their checksum; decoding the file and "
                        "removing the cache so it is rebuilt", self.path, path)  # fmt: skip
            self.entries[path] = None
            with contextlib.suppress(OSError):
                self.path.unlink()
            return None
        arr = np.array(block).reshape(entry[1], entry[2], entry[3])
        return Image.fromarray(arr[:, :, 0] if entry[3] == 1 else arr)  # (H, W) uint8 is "L", (H, W, 3) "RGB"


# --------------------------------------------------------------------------- building


def _as_array(img: Image.Image, mode: str) -> np.ndarray:
    arr = np.asarray(img.convert(mode) if img.mode != mode else img, dtype=np.uint8)
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


def _decoded(
    files: Sequence[str], decode: Callable[[str], Image.Image], shape: Mapping[str, Any],
    reuse: DecodedImages | None, reusable: set[str], threads: int,
) -> Iterator[np.ndarray | None]:  # fmt: skip
    """Pixels of every file in order: copied from the old cache where the file is unchanged, else decoded
    (Pillow releases the GIL while decoding and resizing, so threads use every core)."""

    def one(f: str) -> np.ndarray | None:
        img = reuse.get(f) if reuse is not None and f in reusable else None
        if img is None:
            try:
                img = shape_image(decode(f), shape)
            except MemoryError:
                raise
            except Exception:  # reported (with its reason) when the file is read: see DecodedImages.get
                return None
        return _as_array(img, shape["mode"])

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(files), 256):  # bounded: at most one chunk of images in memory
            yield from pool.map(one, files[start : start + 256])


def _remove_stale_temporaries(path: Path, age_s: float = 6 * 3600) -> None:
    # a builder killed mid-way leaves its temporary file; one untouched for hours belongs to no live builder
    now = time.time()
    for tmp in path.parent.glob(path.name + ".*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > age_s:
                tmp.unlink()


def build(
    path: str | os.PathLike, files: Sequence[str], decode: Callable[[str], Image.Image],
    shape: Mapping[str, Any], *, reuse: DecodedImages | None = None, reusable: set[str] | None = None,
    threads: int | None = None,
) -> DecodedImages:  # fmt: skip
    """Decode ``files`` into the cache file ``path`` (atomically: temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    stats = _file_stats(files)  # before decoding: a file changed meanwhile fails the next check and rebuilds
    threads = threads or min(8, os.cpu_count() or 1)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            entries: list[list[int] | None] = []
            for arr in _decoded(list(files), decode, shape, reuse, reusable or set(), threads):
                if arr is None:
                    entries.append(None)
                    continue
                entries.append([f.tell(), *arr.shape, zlib.crc32(arr)])
                f.write(arr.tobytes())
            index = {"version": VERSION, "shape": dict(shape), "files": stats, "entries": entries,
                     "data_end": f.tell()}  # fmt: skip
            raw = json.dumps(index, separators=(",", ":")).encode()
            f.write(raw)
            f.write(_FOOTER.pack(hashlib.sha256(raw).digest(), len(raw), DONE))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return DecodedImages(path, index)


@dataclass(frozen=True)
class DecodeCache:
    """Where decoded folders live (``directory`` None: ``default_cache_dir()``, read when used)."""

    directory: str | None = None

    def location(self) -> Path:
        return Path(self.directory) if self.directory else default_cache_dir()

    def open(
        self, root: str | os.PathLike, files: Sequence[str], decode: Callable[[str], Image.Image],
        shape: Mapping[str, Any],
    ) -> DecodedImages:  # fmt: skip
        """The valid cache of ``files`` under ``root`` decoded with ``shape``; built (or rebuilt) when missing,
        stale or damaged.  Unchanged images of a stale cache are copied, not decoded again."""
        path = cache_path(self.location(), root, shape)
        stats = _file_stats(files)
        shape = dict(shape)
        try:
            index: dict[str, Any] | None = read_index(path)
            why = CacheInvalid("built with other preprocessing" if index["shape"] != shape
                               else "files changed (path set, size or mtime)")  # fmt: skip
        except CacheInvalid as e:
            index, why = None, e
        if index is not None and index["shape"] == shape and index["files"] == stats:
            return DecodedImages(path, index)
        old, reusable = None, set()
        if index is not None and index["shape"] == shape:  # copy the unchanged images instead of decoding
            old = DecodedImages(path, index)
            before = {f[0]: f for f, e in zip(index["files"], index["entries"], strict=True) if e is not None}
            reusable = {s[0] for s in stats if before.get(s[0]) == s}
        if path.exists():
            log.info("decode cache %s: %s; rebuilding", path, why)
        log.info("decoding %d images once into %s (%d reused)", len(files), path, len(reusable))
        return build(path, files, decode, shape, reuse=old, reusable=reusable)
