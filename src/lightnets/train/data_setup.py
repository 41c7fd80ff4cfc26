"""The data stage of a run: load the splits (every process reading the same split file), list unreadable
files, refuse a training set that cannot make a classifier, take the training subset, settle the batch size
and the preprocessing.  Also the evaluation loaders every later stage (and ``lightnets.evaluation``) uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import DatasetSplits, FolderLoader, default_preprocessing, is_in_memory, load_dataset, make_loader
from ..data.tensor_steps import BatchNormalize
from ..data.transforms import eval_transform
from ..util.atomic import atomic_write
from . import recipe
from .config import TrainConfig
from .distributed import barrier
from .engine import IdBatches, with_indices
from .qat import checkpoint_in_chans
from .state import RunContext


@dataclass
class RunData:
    """The data of a run, as the model and the loop need it."""

    splits: DatasetSplits
    classes: list[str]
    train_ds: Any  # the training split, or its evenly spaced subset (max_train_samples)
    preprocessing: dict[str, Any]  # the eval preprocessing every checkpoint records
    skipped: list[tuple[str, str]]  # (file, reason) of every unreadable image file
    in_chans: int | None  # the channels asked for (None: the data's own)

    @property
    def size(self) -> Any:
        """(H, W) the model trains and evaluates at."""
        return self.preprocessing["input_size"]


def eval_loader(ds: Any, preprocessing: dict[str, Any], batch_size: int, workers: int, device: torch.device) -> Any:
    """An unshuffled loader of ``ds`` at the eval preprocessing whose batches carry their sample ids
    (``engine.IdBatches``); None for no dataset.  In-memory data: ids are positions, which unshuffled are the
    dataset indices; folders: the indices themselves, kept through unreadable files that are skipped."""
    if ds is None:
        return None
    if is_in_memory(ds):  # in-memory: unshuffled, so positions are dataset indices
        loader = make_loader(ds, batch_size=batch_size, train=False, preprocessing=preprocessing, device=device)
        return IdBatches(loader, yields_ids=False)
    folder = FolderLoader(with_indices(ds.with_transform(eval_transform(preprocessing, uint8=True))), batch_size,
                          num_workers=workers, batch_transform=BatchNormalize(preprocessing))  # fmt: skip
    return IdBatches(folder, yields_ids=True)


def run_paths(ds: Any) -> list[str] | None:
    """The file path of each sample of ``ds`` (by index), or None for in-memory data."""
    samples = getattr(ds, "samples", None)
    return [str(p) for p, _ in samples] if samples is not None else None


def _load_splits(cfg: TrainConfig, ctx: RunContext, in_chans: int | None) -> DatasetSplits:
    split_file = ctx.run_dir / "split.json"
    kw = dict(val_fraction=cfg.val_fraction, seed=cfg.seed, split_file=split_file, in_chans=in_chans,
              cache=not cfg.no_cache, cache_dir=cfg.cache_dir)  # fmt: skip
    if ctx.dist_info.enabled:
        # rank 0 writes the split file first, so every rank reads the same split
        if ctx.main and not split_file.exists():
            load_dataset(cfg.data, **kw)
        barrier()
    return load_dataset(cfg.data, **kw)


def _scan_unreadable(splits: DatasetSplits, ctx: RunContext) -> list[tuple[str, str]]:
    """Try every file of a folder dataset; the main process lists the unreadable ones in skipped.txt."""
    skipped: list[tuple[str, str]] = []
    if splits.in_memory:
        return skipped
    for part in (splits.train, splits.val, splits.test):
        if part is not None:
            found = part.scan(check=True)
            if ctx.main:
                skipped += [(str(p), r) for p, r in found]
    if skipped:
        atomic_write(ctx.run_dir / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in skipped))
        ctx.say(f"skipped {len(skipped)} unreadable file(s), listed in {ctx.run_dir / 'skipped.txt'}")
    return skipped


def _check_classes(splits: DatasetSplits, skipped: list[tuple[str, str]], source: str, say: Callable[[str], None]) -> None:
    """Refuse a training set that cannot make a classifier (no readable image, a single class); warn about a
    class with no training image (the model gets an output it never learns)."""
    counts = np.bincount(np.asarray(splits.train.targets, dtype=np.int64), minlength=len(splits.classes))
    if counts.sum() == 0:
        others = sum(len(p) for p in (splits.val, splits.test) if p is not None)
        what = (f"all {len(skipped)} image files of {source} are unreadable (listed in skipped.txt)" if not others
                else f"no training image of {source} is readable ({len(skipped)} unreadable files listed in skipped.txt)")  # fmt: skip
        raise ValueError(f"{what}; run `lightnets check-data` on the folder to see why")
    if len(splits.classes) < 2:
        raise ValueError(f"{source} has a single class ({splits.classes[0]!r}): a classifier needs at least two "
                         "(every prediction would be that class, at 100 % accuracy)")  # fmt: skip
    empty = [c for c, n in zip(splits.classes, counts.tolist(), strict=True) if n == 0]
    if empty:
        say(f"warning: class(es) {empty} have no readable training image: the model gets output(s) it never "
            "learns (remove the folder, or see `lightnets check-data`)")  # fmt: skip


def _subset_prefix(ds: Any, n: int | None) -> Any:
    if n is None or n >= len(ds):
        return ds
    # an evenly spaced subset keeps the class balance of shuffled data without another split file
    idx = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)
    return ds.subset(idx)


def setup_data(ctx: RunContext) -> tuple[TrainConfig, RunData]:
    """The run's data, and its settings with the batch size resolved (recorded in config.json, so ``--resume``
    keeps it)."""
    cfg, world = ctx.cfg, ctx.dist_info.world_size
    # RGB for pretrained weights, unless they are a lightnets checkpoint that records its own channels
    in_chans = cfg.in_chans or (checkpoint_in_chans(cfg.weights) or 3 if cfg.weights else None)
    splits = _load_splits(cfg, ctx, in_chans)
    skipped = _scan_unreadable(splits, ctx)
    _check_classes(splits, skipped, cfg.data, ctx.quiet_unless_main())
    train_ds = _subset_prefix(splits.train, cfg.max_train_samples)
    if cfg.batch_size is None:
        cfg = dataclasses.replace(cfg, batch_size=recipe.default_batch_size(len(train_ds), world))
    if len(train_ds) < cfg.batch_size * world:
        raise ValueError(
            f"the training set has {len(train_ds)} images, fewer than one batch of {cfg.batch_size} x "
            f"{world} process(es); lower --batch-size"
        )
    preprocessing = default_preprocessing(splits, cfg.input_size)
    return cfg, RunData(splits, list(splits.classes), train_ds, preprocessing, skipped, in_chans)
