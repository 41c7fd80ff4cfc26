"""Parsers for the datasets that ship as arrays rather than image files: IDX (MNIST, Fashion-MNIST), CIFAR
python batches (unpickled with restricted globals, so a data file cannot run code) and scikit-learn's bundled
digits.  Each gives TensorImageDatasets (uint8, N x C x H x W) and a clear DataFormatError for a bad file.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import os
import pickle
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataFormatError
from .memory import TensorImageDataset

log = logging.getLogger(__name__)


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


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
