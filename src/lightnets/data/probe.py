"""Probe an image folder's sizes when it is opened, so small images train at their native resolution.

A folder of 32 x 32 CIFAR-style JPEGs would otherwise be upsampled to 224 px (49x the pixels) and trained with
the ImageNet stem.  Reading sizes is cheap: Pillow parses the header without decoding pixels.  A large folder is
sampled (evenly spaced files).  When the median longer side is at most ``SMALL_SIDE`` px the folder is "small":
it trains at the median size with the small preset, ``small_input=True`` and the sample's channel statistics,
like the in-memory 28-32 px datasets.

The headers also tell the colour mode: a folder whose probed images are all single-channel (grayscale PNGs
written from Fashion-MNIST, X-rays) is ``gray``, and trains with one input channel like the IDX datasets unless
the run asks for three (``--in-chans 3``, or RGB pretrained weights).  Measured on a 12,000-image Fashion-MNIST
subset (MobileNetV1 0.5x, 6 epochs, 28 px; tests/data/test_probe.py): the IDX files with one channel 86.7 % / 86.2 %
test (seeds 0 / 1), the same images repeated to three channels 85.2 %, the PNG folder decoded as RGB 85.4 % /
85.5 %: a gray folder read as RGB lost about a point.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

SMALL_SIDE = 64  # px: the small-input stems of the zoo are meant for 28-64 px inputs
PROBE_LIMIT = 512  # files whose headers are read; the median of 512 is within a few % of the folder's
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # Pillow modes with one colour channel


@dataclass(frozen=True)
class SizeProbe:
    """What the probe saw: the median (height, width), how many headers it read out of how many files,
    whether every probed image is single-channel (``gray``), and for small folders the per-channel mean / std
    of the probed images (pixels scaled to [0, 1], in the mode the dataset decodes to)."""

    size: tuple[int, int]
    probed: int
    total: int
    small: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    gray: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        h, w = self.size
        return f"median image size {h}x{w} px over {self.probed} of {self.total} files"


def _sample(paths: Sequence[str], limit: int) -> list[str]:
    if len(paths) <= limit:
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, limit).round().astype(np.int64)
    return [paths[i] for i in idx]


def _header(path: str) -> tuple[int, int, str] | None:
    """(height, width, Pillow mode) from the file's header, without decoding pixels."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block forever
            return None
        with Image.open(path) as im:
            return im.height, im.width, im.mode
    except Exception:  # unreadable files are reported by the dataset's scan, not here
        return None


def _channel_stats(
    paths: Sequence[str], decode: Callable[[str], Image.Image]
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    total, sq, count = None, None, 0
    for p in paths:
        try:
            arr = np.asarray(decode(p), dtype=np.float64) / 255.0
        except Exception:
            continue
        arr = arr.reshape(-1, 1 if arr.ndim == 2 else arr.shape[2])
        total = arr.sum(0) if total is None else total + arr.sum(0)
        sq = (arr**2).sum(0) if sq is None else sq + (arr**2).sum(0)
        count += arr.shape[0]
    if not count:
        return None
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-3) for s in std)


def probe_sizes(
    paths: Sequence[str | Any],
    decode: Callable[[str, bool], Image.Image] | None = None,
    *,
    limit: int = PROBE_LIMIT,
    small_side: int = SMALL_SIDE,
) -> SizeProbe | None:
    """The size probe of ``paths`` (None when no header could be read).  ``decode(path, gray)`` (the image in
    the mode the dataset will decode to, given whether the probe found the folder gray) is used only for small
    folders, to measure channel statistics on the probed files."""
    sample = _sample([str(p) for p in paths], limit)
    headers = [h for h in map(_header, sample) if h is not None]
    if not headers:
        return None
    hs, ws = np.array([(h, w) for h, w, _ in headers]).T
    size = (int(np.median(hs)), int(np.median(ws)))
    small = float(np.median(np.maximum(hs, ws))) <= small_side
    gray = all(mode in GRAY_MODES for _, _, mode in headers)
    stats = _channel_stats(sample, lambda p: decode(p, gray)) if small and decode is not None else None
    probe = SizeProbe(size, len(headers), len(paths), small, *(stats or (None, None)), gray=gray)
    log.debug("probe: %s (small=%s, gray=%s)", probe.describe(), small, gray)
    return probe
