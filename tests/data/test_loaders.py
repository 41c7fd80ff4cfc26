"""Tensor batches and loaders (lightnets.data.loaders, lightnets.data.batch_ops): exact normalisation,
pad-crop-flip, determinism per seed and epoch, rank partitioning, resizing, make_loader."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from lightnets.data import (
    FolderLoader,
    TensorBatchLoader,
    TensorImageDataset,
    epoch_batches,
    make_loader,
    pad_crop_flip,
)
from lightnets.data.transforms import make_preprocessing

# =========================================================================== tensor batches


def _tiny(n: int = 50, c: int = 3, h: int = 8, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n)


def test_batches_without_augmentation_are_exactly_normalised() -> None:
    images, labels = _tiny()
    pp = make_preprocessing("small", 8, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 0.125])
    loader = TensorBatchLoader(images, labels, 16, shuffle=True, seed=0, augment=False, preprocessing=pp)
    assert len(loader) == 4 and loader.num_samples == 50
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 8, 8)
        expect = (images[y].float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
            [0.5, 0.25, 0.125]
        ).view(1, 3, 1, 1)
        assert torch.allclose(x, expect, atol=1e-6)
        seen += y.tolist()
    assert sorted(seen) == list(range(50)) and seen != list(range(50))


def test_pad_crop_flip_matches_per_image_ops() -> None:
    images, _ = _tiny(6, 2, 5, 7)
    dy, dx = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([4, 0, 2, 1, 3, 2])
    flip = torch.tensor([False, True, False, True, True, False])
    out = pad_crop_flip(images, 2, dy, dx, flip)
    for i in range(6):
        ref = torch.nn.functional.pad(images[i], (2, 2, 2, 2))[:, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_augmentation_changes_images_as_pad_crop_flip() -> None:
    images, labels = _tiny(64)
    pp = make_preprocessing("small", 8)
    plain = TensorBatchLoader(images, labels, 64, shuffle=False, augment=False, preprocessing=pp)
    aug = TensorBatchLoader(images, labels, 64, shuffle=False, augment=True, preprocessing=pp)
    assert aug.padding == 1
    (x0, _), (x1, y1) = next(iter(plain)), next(iter(aug))
    assert x1.shape == x0.shape and x1.dtype == torch.float32
    changed = (x0 != x1).flatten(1).any(1)
    assert changed.float().mean() > 0.7
    # every augmented image is one of the (2p+1)^2 x 2 pad/shift/flip variants of its source
    p = 1
    padded = torch.nn.functional.pad(images.float() / 255, (p, p, p, p))
    zero = (0 - 0.485) / 0.229  # how a padded pixel looks after normalisation, red channel
    flips = 0
    for i in range(16):
        src = padded[y1[i]]
        raw = x1[i] * torch.tensor(pp["std"]).view(3, 1, 1) + torch.tensor(pp["mean"]).view(3, 1, 1)
        matches = [
            (a, b, f)
            for a in range(3)
            for b in range(3)
            for f in (0, 1)
            if torch.allclose(
                raw, (src[:, a : a + 8, b : b + 8].flip(-1) if f else src[:, a : a + 8, b : b + 8]), atol=1e-5
            )
        ]
        assert matches, i
        flips += matches[0][2]
    assert 2 <= flips <= 14
    assert (x1[:, 0] == torch.tensor(zero)).any()  # some padding came in


def test_loader_is_deterministic_per_seed_and_epoch() -> None:
    images, labels = _tiny()

    def run(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = TensorBatchLoader(images, labels, 16, shuffle=True, seed=seed, augment=True)
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    a, b = run(0, 3), run(0, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(run(0, 4)[0], a[0]) and not torch.equal(run(1, 3)[0], a[0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_partition_reassembles_the_single_process_batch(drop_last: bool) -> None:
    images, labels = _tiny(50)
    world, b = 3, 4
    single = TensorBatchLoader(images, labels, b * world, seed=7, augment=True, drop_last=drop_last)
    ranks = [
        TensorBatchLoader(
            images, labels, b, seed=7, augment=True, drop_last=drop_last, rank=r, world_size=world
        )
        for r in range(world)
    ]
    for loader in [single, *ranks]:
        loader.set_epoch(2)
    ref = list(single)
    per_rank = [list(r) for r in ranks]
    assert len(ref) == (4 if drop_last else 5)
    for k, (x, y) in enumerate(ref):
        parts = [batches[k] for batches in per_rank if k < len(batches)]
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # augmentation included
        if k < 4:
            assert [len(p[1]) for p in parts] == [b] * world  # contiguous chunks of B
    if not drop_last:  # last global batch of 2 split as [1, 1, 0]: the third rank has one batch fewer
        assert [len(r) for r in ranks] == [5, 5, 4] and [len(p[-1][1]) for p in per_rank[:2]] == [1, 1]
        assert sorted(torch.cat([y for r in per_rank for _, y in r]).tolist()) == list(range(50))
    assert epoch_batches(10, 2, shuffle=False, rank=1, world_size=2)[1].tolist() == [6, 7]
    with pytest.raises(ValueError, match="rank"):
        epoch_batches(10, 2, rank=2, world_size=2)


def test_loader_resizes_to_model_input() -> None:
    images, labels = _tiny(10, 1, 28, 28)
    pp = make_preprocessing("small", 32, in_chans=1)
    x, _ = next(iter(TensorBatchLoader(images, labels, 10, augment=True, preprocessing=pp)))
    assert x.shape == (10, 1, 32, 32) and x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    imagenet = make_preprocessing("imagenet", 24, in_chans=1)  # shorter side to 27, centre crop 24
    x, _ = next(iter(TensorBatchLoader(images, labels, 10, preprocessing=imagenet)))
    assert x.shape == (10, 1, 24, 24)
    with pytest.raises(ValueError, match="channels"):
        TensorBatchLoader(images, labels, 10, preprocessing=make_preprocessing("small", 28))


def _measure_throughput():
    # measuring lives with the benchmark that uses it (benchmarks/train_speed.py), not in lightnets.data
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("_train_speed_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.measure_throughput


def test_make_loader_and_throughput() -> None:
    measure_throughput = _measure_throughput()
    images, labels = _tiny(40, 1, 8, 8)
    ds = TensorImageDataset(images, labels % 10, [str(i) for i in range(10)])
    pp = make_preprocessing("small", 8, in_chans=1)
    train = make_loader(ds, batch_size=16, train=True, preprocessing=pp)
    assert isinstance(train, TensorBatchLoader) and train.augment and train.drop_last and len(train) == 2
    val = make_loader(ds, batch_size=16, train=False, preprocessing=pp)
    assert not val.augment and len(val) == 3
    rate = measure_throughput(val, num_batches=2, warmup=1)
    assert rate > 0
    rgb = ds.with_chans(3)
    assert rgb.images.shape[1] == 3 and torch.equal(rgb.with_chans(1).images, images)
    fl = FolderLoader(ds, 16, shuffle=True, world_size=2, rank=1, drop_last=True)
    assert len(fl) == 1 and len(next(iter(fl))[0]) == 16
