"""In-memory datasets (lightnets.data.memory): ``is_in_memory`` is the one test that tells them from file datasets."""

from __future__ import annotations

from pathlib import Path

import torch

from lightnets.data import ImageFiles, ImageFolder, TensorImageDataset, is_in_memory, load_dataset


def test_is_in_memory_tells_tensor_data_from_files(folder: tuple[Path, dict[str, Path]]) -> None:
    root, _ = folder
    tensors = TensorImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    assert is_in_memory(tensors) and is_in_memory(tensors.subset([0, 2])) and is_in_memory(tensors.with_chans(3))
    files = ImageFolder(root)
    assert not is_in_memory(files) and not is_in_memory(files.subset([0, 1]))
    assert not is_in_memory(ImageFiles([p for p, _ in files.samples])) and not is_in_memory(None)
    assert load_dataset("digits").in_memory and not load_dataset(str(root), val_fraction=0).in_memory
