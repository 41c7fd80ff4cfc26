"""The last steps of a transform, from a Pillow image to a tensor: ``ToTensor`` + ``Normalize`` per image, or
``ToUint8Tensor`` per image and ``BatchNormalize`` per batch.

The uint8 pair exists for DataLoader workers: a worker that ships uint8 pixels sends a quarter of the bytes and
skips two full-size float passes per image; the main process scales and normalises the collated batch with the
same float operations in the same order (so the values are identical).  Written by hand because the project
does not depend on torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .preprocessing import check_preprocessing

__all__ = ["BatchNormalize", "Normalize", "ToTensor", "ToUint8Tensor"]


class ToTensor:
    """PIL image (H, W[, C]) uint8 -> float tensor (C, H, W) divided by ``value_scale`` (255: values in [0, 1])."""

    def __init__(self, value_scale: float = 255.0) -> None:
        self.value_scale = float(value_scale)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.array(img, dtype=np.uint8, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        # contiguous before the float conversion: half the time of ToTensor + Normalize on a permuted view
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(self.value_scale)

    def __repr__(self) -> str:
        return f"ToTensor(value_scale={self.value_scale})"


class ToUint8Tensor:
    """PIL image (H, W[, C]) uint8 -> uint8 tensor (C, H, W): the pixels a DataLoader worker ships when the batch
    is scaled and normalised in the main process (``BatchNormalize``), a quarter of the bytes of float32."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.array(img, dtype=np.uint8, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return "ToUint8Tensor()"


class BatchNormalize:
    """uint8 (N, C, H, W) -> float (N, C, H, W): ``ToTensor`` then ``Normalize`` on a whole batch, the same
    float operations in the same order, so the values equal the per-image float path bit for bit."""

    def __init__(self, preprocessing: Mapping[str, Any]) -> None:
        p = check_preprocessing(preprocessing)
        self.value_scale = float(p["value_scale"])
        self.normalize = Normalize(p["mean"], p["std"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"BatchNormalize expects a uint8 batch, got {x.dtype}")
        return self.normalize.batch(x.float().div_(self.value_scale))

    def __repr__(self) -> str:
        return f"BatchNormalize(value_scale={self.value_scale}, {self.normalize!r})"


class Normalize:
    """(x - mean) / std per channel, on a (C, H, W) or (N, C, H, W) float tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return (x - mean) / std

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """The same on (N, C, H, W), in place on ``x`` (a fresh float batch): no second full-size temporary."""
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return x.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
