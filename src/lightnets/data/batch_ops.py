"""Augmentation and resizing of whole uint8 / float tensor batches (B, C, H, W), without a Python loop per
image: random pad-crop + flip as two gathers, and the preprocessing dict's resize + centre crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .preprocessing import TENSOR_MODES


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
