"""The data stage's two error types: an image file that cannot be decoded, and a dataset file (IDX, CIFAR
batch, split file) that is malformed.  Both are ValueErrors, so the CLI reports them as bad input.
"""

from __future__ import annotations

import os


class ImageReadError(ValueError):
    """A file that cannot be decoded as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class DataFormatError(ValueError):
    """A dataset file (IDX, CIFAR batch, split file) that is malformed or not what its name says."""
