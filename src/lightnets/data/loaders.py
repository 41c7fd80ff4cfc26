"""Loaders that batch one split: the epoch plan (the same index partitioning across ranks for every kind,
see ``epoch_batches``), ``TensorBatchLoader`` for in-memory data (augmented as whole tensors),
``FolderLoader`` for file datasets (a DataLoader per epoch), and ``make_loader``, which picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .batch_ops import pad_crop_flip, resize_batch
from .folders import ImageFiles, ImageFolder, collate_skip_none
from .memory import TensorImageDataset, is_in_memory
from .preprocessing import check_preprocessing, make_preprocessing
from .tensor_steps import BatchNormalize
from .transforms import default_padding, eval_transform, train_transform


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, batch...) with no collisions like seed + epoch has."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class _BatchPlan:
    step: int  # index of the global batch in the epoch
    global_size: int  # samples in the whole global batch (all ranks)
    offset: int  # where this rank's chunk starts inside the global batch
    indices: torch.Tensor  # this rank's sample indices


def _plan_epoch(
    num_samples: int,
    batch_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    rank: int,
    world_size: int,
) -> list[_BatchPlan]:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(_mix_seed(seed, epoch)))
    else:
        order = torch.arange(num_samples)
    g = batch_size * world_size
    plans = [
        _BatchPlan(
            k, g, rank * batch_size, order[k * g + rank * batch_size : k * g + (rank + 1) * batch_size]
        )
        for k in range(num_samples // g)
    ]
    rest = order[(num_samples // g) * g :]
    if len(rest) and not drop_last:
        chunks = torch.tensor_split(rest, world_size)
        offset = sum(len(c) for c in chunks[:rank])
        if len(chunks[rank]):
            plans.append(_BatchPlan(num_samples // g, len(rest), offset, chunks[rank]))
    return plans


def epoch_batches(
    num_samples: int,
    batch_size: int,
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """The sample indices of each batch one rank gets in one epoch.

    Partitioning: the epoch's order is one permutation of all samples, drawn from (seed, epoch) only (the
    identity without shuffle), the same on every rank.  It is cut into global batches of
    ``batch_size * world_size`` consecutive entries, and rank r takes the r-th contiguous chunk of
    ``batch_size`` of each.  So concatenating the ranks' k-th batches in rank order gives exactly the k-th
    batch of a single process with batch size ``batch_size * world_size``.  A final incomplete global batch is
    dropped with ``drop_last``; otherwise it is split into ``world_size`` contiguous chunks whose sizes differ
    by at most one (the first ones larger, as torch.tensor_split does), and a rank whose chunk is empty gets no
    final batch (so use drop_last=True for DDP training, where every rank must run the same number of steps).
    No sample is repeated to pad, so evaluation over all ranks counts every sample exactly once.
    """
    return [
        p.indices
        for p in _plan_epoch(num_samples, batch_size, epoch, seed, shuffle, drop_last, rank, world_size)
    ]


class _EpochPartition:
    """What both loaders share: the batch plan of epoch_batches for (num_samples, batch_size, shuffle, seed,
    drop_last, rank, world_size) at the current epoch, ``set_epoch`` and ``len``."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int,
        world_size: int,
    ) -> None:
        self._num_samples = num_samples
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self._plans()  # validates the arguments now rather than at the first epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration produces."""
        self.epoch = int(epoch)

    def _plans(self) -> list[_BatchPlan]:
        return _plan_epoch(
            self._num_samples,
            self.batch_size,
            self.epoch,
            self.seed,
            self.shuffle,
            self.drop_last,
            self.rank,
            self.world_size,
        )

    def __len__(self) -> int:
        return len(self._plans())

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(len(p.indices) for p in self._plans())


class TensorBatchLoader(_EpochPartition):
    """Batches of an in-memory uint8 dataset as normalised float tensors, augmented as whole tensors.

    Each batch: gather uint8 images, (train) random pad-crop + horizontal flip at native resolution
    (pad_crop_flip, padding default size/8: 4 px at 32, 4 at 28, 1 at 8), scale to [0, 1], resize to the model
    input as ``preprocessing`` says (resize_batch), normalise with its mean/std.  Yields
    ``(float32 images (B, C, H, W), int64 labels (B,))``, on ``device`` if given (the uint8 batch is moved
    first, then augmented there).

    Deterministic: the order and every augmentation draw depend only on (seed, epoch) and the position in the
    epoch; call ``set_epoch(epoch)`` before each epoch, as with DistributedSampler.  Random draws are made per
    global batch (all ranks) and each rank slices its rows, so ranks' batches, concatenated in rank order,
    equal the single-process batch bit for bit (index partitioning: see epoch_batches).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        augment: bool = False,
        preprocessing: Mapping[str, Any] | None = None,
        *,
        padding: int | None = None,
        hflip: float = 0.5,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(len(images), batch_size, shuffle, seed, drop_last, rank, world_size)
        c, h, w = images.shape[1:]
        self.preprocessing = check_preprocessing(
            preprocessing or make_preprocessing("small", (h, w), in_chans=c)
        )
        if self.preprocessing["in_chans"] != c:
            raise ValueError(
                f"preprocessing is for {self.preprocessing['in_chans']} channels, the images have {c}"
            )
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.int64)
        self.augment, self.hflip = augment, hflip
        self.padding = default_padding(min(h, w)) if padding is None else int(padding)
        self.device = torch.device(device) if device is not None else None
        self._mean = torch.tensor(self.preprocessing["mean"]).view(1, c, 1, 1)
        self._std = torch.tensor(self.preprocessing["std"]).view(1, c, 1, 1)

    @classmethod
    def from_dataset(cls, dataset: TensorImageDataset, batch_size: int, **kwargs: Any) -> TensorBatchLoader:
        return cls(dataset.images, dataset.labels, batch_size, **kwargs)

    def _augment(self, x: torch.Tensor, plan: _BatchPlan) -> torch.Tensor:
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, plan.step, 1))
        n, p = plan.global_size, self.padding
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < self.hflip
        rows = slice(plan.offset, plan.offset + len(plan.indices))
        return pad_crop_flip(x, p, dy[rows], dx[rows], flip[rows])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for plan in self._plans():
            x, y = self.images[plan.indices], self.labels[plan.indices]
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.augment:
                x = self._augment(x, plan)
            x = resize_batch(x.float().div_(self.preprocessing["value_scale"]), self.preprocessing)
            x = (x - self._mean.to(x.device)) / self._std.to(x.device)
            yield x.contiguous(), y


class FolderLoader(_EpochPartition):
    """A DataLoader over a file dataset (ImageFolder / ImageFiles) with the index partitioning of epoch_batches,
    ``set_epoch``, unreadable files dropped (collate_skip_none) and empty batches skipped.

    A fresh DataLoader is made each epoch; its workers are seeded from (seed, epoch, rank), so per-image
    augmentation is reproducible for a given number of workers.  With num_workers=0 the transforms draw from
    torch's global RNG (seed it with torch.manual_seed).  ``batch_transform`` is applied to each collated
    batch's images in this process (``BatchNormalize`` after a ``uint8`` transform: workers ship uint8).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(len(dataset), batch_size, shuffle, seed, drop_last, rank, world_size)
        self.dataset = dataset
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.batch_transform = batch_transform

    def __iter__(self) -> Iterator[Any]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=[p.indices.tolist() for p in self._plans()],
            num_workers=self.num_workers,
            collate_fn=collate_skip_none,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, 2)),
        )
        for batch in loader:
            if batch is None:
                continue
            if self.batch_transform is not None:
                batch = [self.batch_transform(batch[0]), *batch[1:]]
            yield batch


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    preprocessing: Mapping[str, Any],
    seed: int = 0,
    augment: bool | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    pin_memory: bool = False,
    crop_scale: tuple[float, float] | None = None,
) -> TensorBatchLoader | FolderLoader:
    """The loader for one split: shuffled, augmented and drop_last when ``train`` (each overridable).

    In-memory datasets get a TensorBatchLoader (``device`` moves uint8 batches before augmentation); file
    datasets a FolderLoader with ``train_transform(preprocessing)`` (RandomResizedCrop area range
    ``crop_scale`` when given) or ``eval_transform(preprocessing)``, whose workers ship uint8 pixels that the
    loader normalises per batch (``BatchNormalize``: the same values, a quarter of the bytes between processes).
    Both yield (images, labels) -- (images, indices) for ImageFiles -- and have set_epoch and len().
    """
    augment = train if augment is None else augment
    drop_last = train if drop_last is None else drop_last
    if is_in_memory(dataset):
        return TensorBatchLoader(
            dataset.images, dataset.labels, batch_size, shuffle=train, seed=seed, augment=augment,
            preprocessing=preprocessing, drop_last=drop_last, rank=rank, world_size=world_size, device=device,
        )  # fmt: skip
    batch_transform = None
    if isinstance(dataset, (ImageFolder, ImageFiles)):
        dataset = dataset.with_transform(
            train_transform(preprocessing, uint8=True, **({} if crop_scale is None else {"scale": crop_scale}))
            if augment
            else eval_transform(preprocessing, uint8=True)
        )
        batch_transform = BatchNormalize(preprocessing)
    return FolderLoader(
        dataset, batch_size, shuffle=train, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
        num_workers=num_workers, pin_memory=pin_memory, batch_transform=batch_transform,
    )  # fmt: skip
