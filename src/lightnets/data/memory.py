"""In-memory datasets: images held as one uint8 tensor (N, C, H, W) with int64 labels, the per-channel
statistics of such a tensor, and ``is_in_memory``, the one test other code uses to tell this kind from file
datasets (in-memory data is batched whole by TensorBatchLoader; files are decoded per item).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


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


def is_in_memory(dataset: object) -> bool:
    """True for an in-memory dataset (TensorImageDataset: images and labels as tensors), False for file
    datasets (ImageFolder, ImageFiles, ...), whose items are decoded from disk."""
    return isinstance(dataset, TensorImageDataset)
