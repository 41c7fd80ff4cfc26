"""``train(config)``: one training run, from a dataset source and a model name to a run directory holding the
resolved config, class names, ``last.pt`` / ``best.pt`` checkpoints, ``metrics.csv``, TensorBoard events, PNG
curves, evaluation files and ``report.html``.

The run reads top to bottom: resolve settings, load data, build the model (optionally from pretrained weights,
optionally frozen), then per epoch: train, evaluate, write metrics and checkpoints.  A killed run continues
with ``resume=RUN_DIR``: model, optimizer, schedule position, EMA, RNG state and epoch all come back, and the
data order is a function of (seed, epoch), so the continued run is the run that would have happened.
Under ``torchrun --nproc_per_node N`` the same call trains with DistributedDataParallel.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis import count_macs, count_params
from ..data import DatasetSplits, FolderLoader, default_preprocessing, is_in_memory, load_dataset, make_loader
from ..data.checks import check_model_config
from ..data.transforms import eval_transform
from ..data.wordnet import display_names
from ..evaluation.metrics import EvalResult
from ..registry import create_model, get_card
from ..util.atomic import atomic_write, write_json
from . import checkpoint as ckpt_io
from . import linear_probe, recipe
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    convert_sync_batchnorm,
    init_distributed,
)
from .engine import (
    all_norms_in_eval,
    cosine_lr,
    evaluate,
    freeze_backbone,
    keep_frozen_norms_in_eval,
    param_groups,
    progress_bar,
    train_one_epoch,
    with_indices,
)
from .precision import decide_amp

log = logging.getLogger(__name__)


MAX_LR = 10.0  # sanity bound: no recipe for these models uses a base rate above 1 (SGD, batch 256 scale: 0.1)


class RunDirError(ValueError):
    """The run directory cannot be used: it holds another run, or another process is writing to it."""


@dataclass
class TrainConfig:
    """Everything that defines a run.  ``None`` means "choose from the data / model" (see ``resolve``)."""

    model: str = "mobilenet_v2"
    data: str = "digits"
    out: str | None = None  # run directory; default runs/<model>-<time>
    epochs: int = 10
    batch_size: int | None = None  # default: 128, smaller for small training sets (recipe.default_batch_size)
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    lr: float | None = None  # default: sgd 0.1 x batch/256 (fine-tuning 0.01 x, after LP 0.004 x); adamw 1e-3 x
    weight_decay: float | None = None  # default: sgd 5e-4, adamw 0.05; never on norm / bias parameters
    warmup_epochs: float = 1.0  # in steps, at most a tenth of the run's steps (recipe.make_schedule)
    label_smoothing: float = 0.1
    dropout: float | None = None  # None: the model's default
    ema_decay: float = 0.0  # 0 = off; e.g. 0.999 keeps an exponential moving average of the weights
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    seed: int = 0
    weights: str | None = None  # pretrained state_dict (head replaced when the class count differs)
    weights_sha256: str | None = None  # expected sha256 (prefix) of the weights file or URL
    allow_unverified: bool = False  # accept a weights URL without a sha256 to check
    freeze: bool = False  # fit only the classifier, on features computed once (a linear probe, linear_probe.py)
    lp_ft: bool | None = None  # linear probe, then fine-tune everything; default: on with --weights
    bn_eval: bool | None = None  # keep every BatchNorm on its pretrained statistics; default: on with --weights
    head_lr_mult: float | None = None  # default 10 when fine-tuning a new head, else 1 (also after LP)
    input_size: int | None = None  # default: native size for small in-memory data, 224 for folders
    small_input: bool | None = None  # default: True when input_size <= 64
    in_chans: int | None = None  # default: the data's (3 when fine-tuning RGB weights)
    model_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"width_mult": 0.5}
    val_fraction: float = 0.1
    workers: int = 2
    device: str = "auto"
    progress: bool = True
    max_train_samples: int | None = None  # an evenly spaced subset of the training set (quick experiments, tests)
    track_test: bool = False  # also score the test split every epoch (reported only, never used to select)
    cache_dir: str | None = None  # decoded image folders (default: $XDG_CACHE_HOME/lightnets/decoded)
    no_cache: bool = False  # decode every image file every epoch instead of once (lightnets.data.decode_cache)

    def validate(self) -> None:
        get_card(self.model)  # unknown model: ValueError with suggestions
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be sgd or adamw, got {self.optimizer!r}"),
            (self.lr is None or 0 < self.lr <= MAX_LR,
             f"lr must be a number > 0 and <= {MAX_LR:g} (larger rates diverge at the first steps), got {self.lr}"),
            (self.weight_decay is None or 0 <= self.weight_decay < math.inf,
             f"weight_decay must be a finite number >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_epochs < math.inf, f"warmup_epochs must be a finite number >= 0, got {self.warmup_epochs}"),
            (self.in_chans is None or self.in_chans in (1, 3), f"in_chans must be 1 or 3 (or omitted: the data's), got {self.in_chans}"),
            (self.head_lr_mult is None or 0 < self.head_lr_mult < math.inf,
             f"head_lr_mult must be a finite number > 0, got {self.head_lr_mult}"),
            (self.head_lr_mult is None or self.weights,
             "head_lr_mult sets the rate of a new classifier over pretrained features: it needs --weights"),
            (not self.bn_eval or self.weights,
             "bn_eval keeps BatchNorm on pretrained statistics: it needs --weights (a fresh model has none)"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.amp in ("auto", "off", "bf16", "fp16"), f"amp must be auto, off, bf16 or fp16, got {self.amp!r}"),
            (self.channels_last in ("auto", "on", "off"), f"channels_last must be auto, on or off, got {self.channels_last!r}"),
            (self.input_size is None or self.input_size >= 8, f"input_size must be >= 8, got {self.input_size}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (not self.freeze or self.weights, "freeze needs pretrained weights (--weights)"),
            (not self.lp_ft or self.weights, "lp_ft needs pretrained weights (--weights)"),
            (self.max_train_samples is None or self.max_train_samples > 0,
             f"max_train_samples must be > 0, got {self.max_train_samples}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.weights is not None and "://" not in self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"weights file not found: {self.weights}")
        # bad model arguments, or an input size the network cannot train on, fail now, before any data loads
        small = self.small_input
        if small is None and self.input_size is not None:
            small = self.input_size <= 64
        model_args = {**self.model_args, **({"small_input": small} if small is not None else {})}
        if self.dropout is not None:
            model_args["dropout"] = self.dropout
        check_model_config(self.model, model_args, self.input_size, self.batch_size or recipe.MIN_BATCH)


# ----------------------------------------------------------------------------------------- run directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in the run directory: a second run started into the same directory refuses
    instead of interleaving files.  A lock left by a dead process (killed run) is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.held = False

    def _create(self, content: str) -> None:
        # The lock appears with its content in one step (a hard link to a finished temporary file), so a
        # process killed while taking it cannot leave an empty lock that no one can judge stale.
        fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
            try:
                os.link(tmp, self.path)
            except OSError as e:
                if isinstance(e, FileExistsError):
                    raise
                # no hard links on this file system: create exclusively, then write
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    f.write(content)
        finally:
            os.unlink(tmp)

    def acquire(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                self._create(me)
            except FileExistsError:
                try:
                    pid_text, _, host = self.path.read_text().partition(" ")
                    pid = int(pid_text)
                except (OSError, ValueError):
                    pid, host = -1, ""
                if pid > 0 and host.strip() == socket.gethostname() and not _pid_alive(pid):
                    self.path.unlink(missing_ok=True)  # stale lock of a killed run
                    continue
                raise RunDirError(
                    f"run directory {self.path.parent} is in use by process {pid_text if pid > 0 else '?'} "
                    f"on {host.strip() or '?'}; wait for it or choose another --out"
                ) from None
            self.held = True
            return
        raise RunDirError(f"could not lock {self.path}")  # pragma: no cover

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _default_out(cfg: TrainConfig) -> str:
    return str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")


def _remove_stale_temporaries(run_dir: Path) -> None:
    # writes cut short by a kill leave their temporary files (see atomic.atomic_write); called
    # with the lock held, when no one else can be writing them
    for tmp in run_dir.glob(".*.*.tmp"):
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj)


# settings a continued run may change: they do not change its results
RESUME_FREE = ("workers", "device", "progress", "cache_dir", "no_cache")  # where data is read from, not what is learnt


def resume_overrides(cfg: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> tuple[TrainConfig, int | None]:
    """``cfg`` (a run's saved config) with the settings given again on ``--resume`` applied, and the epoch count
    it had when ``epochs`` grows (None otherwise).

    A larger ``epochs`` extends the run: its cosine schedule is re-planned over the new total from the current
    step on (the epochs already trained keep their rates).  Fewer epochs, or any other setting that differs
    from the run's own, are refused naming both values: the continued run would no longer be the run its files
    describe.  A value equal to the run's own is accepted, so repeating the original command with
    ``--resume`` works."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extended_from = None
    cfg = dataclasses.replace(cfg)
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(f"cannot resume {run_dir} with {name}={value!r}: not a training setting")
        old = getattr(cfg, name)
        if name == "out":
            if Path(value).resolve() != run_dir.resolve():
                raise ValueError(f"cannot resume {run_dir} into --out {value}: a resumed run stays in its directory")
        elif name in RESUME_FREE:
            setattr(cfg, name, value)
        elif name == "epochs" and isinstance(value, int) and value > old:
            extended_from, cfg.epochs = old, value
        elif name == "epochs" and value != old:
            raise ValueError(f"cannot resume {run_dir} with epochs={value}: the run is planned for {old} epochs "
                             "(config.json); epochs can only grow (to extend the run)")  # fmt: skip
        elif value != old:
            raise ValueError(f"cannot resume {run_dir} with {name}={value!r}: the run was started with {name}={old!r} "
                             "(config.json); start a new run (another --out) to change it")  # fmt: skip
    return cfg, extended_from


# ----------------------------------------------------------------------------------------- resolution


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    return device


def _channels_last(setting: str, device: torch.device) -> bool:
    # auto: on.  NHWC is faster for the depthwise convolutions these models are built from, on GPUs (cuDNN)
    # and on CPU (oneDNN): 1.7x (ShuffleNetV2 0.5x) to 2.4x (MobileNetV2 0.35x) per training step at 28 px on
    # the 2-core CI machine (benchmarks/train_speed.py).
    return setting in ("on", "auto")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}  # fmt: skip


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    best_val_top1: float | None
    final: EvalResult | None  # best checkpoint on the test split if there is one, else on val
    final_split: str
    history: list[dict[str, Any]]
    seconds: float
    report: Path | None
    skipped: list[tuple[str, str]]

    def summary(self) -> dict[str, Any]:
        out = {"run_dir": str(self.run_dir), "best_epoch": self.best_epoch, "best_val_top1": self.best_val_top1,
               "final_split": self.final_split, "seconds": round(self.seconds, 1),
               "report": str(self.report) if self.report else None, "skipped_files": len(self.skipped)}  # fmt: skip
        if self.final is not None:
            out.update({f"{self.final_split}_{k}": v for k, v in self.final.summary().items()})
        return out


def _weights_arch_kwargs(weights: str | None) -> dict[str, Any]:
    """The architecture keywords of a lightnets checkpoint given as --weights (e.g. ``padding="same"``,
    ``bn_eps`` of a converted TF model): keys alone do not show them, and weights built for them are wrong
    without them.  Class count, input channels and dropout stay the run's own."""
    if weights is None or "://" in weights:
        return {}
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(weights)
    except CheckpointError:
        return {}  # a plain state_dict: nothing recorded
    return {k: v for k, v in ckpt["kwargs"].items() if k not in ("num_classes", "in_chans", "dropout", "small_input")}


def _subset_prefix(ds: Any, n: int | None) -> Any:
    if n is None or n >= len(ds):
        return ds
    # an evenly spaced subset keeps the class balance of shuffled data without another split file
    idx = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)
    return ds.subset(idx)


def _eval_loader(ds: Any, preprocessing: dict[str, Any], batch_size: int, workers: int, device: torch.device) -> Any:
    if ds is None:
        return None
    if is_in_memory(ds):  # unshuffled, so positions are dataset indices
        return make_loader(ds, batch_size=batch_size, train=False, preprocessing=preprocessing, device=device)
    return FolderLoader(with_indices(ds.with_transform(eval_transform(preprocessing))), batch_size,
                        num_workers=workers)  # fmt: skip


def _paths(ds: Any) -> list[str] | None:
    samples = getattr(ds, "samples", None)
    return [str(p) for p, _ in samples] if samples is not None else None


def _thumbnails(ds: Any, result: EvalResult, classes: list[str], limit: int = 12) -> list[tuple[Any, str]]:
    from PIL import Image

    thumbs = []
    for item in result.worst[:limit]:
        caption = item.describe(classes)
        if getattr(item, "path", None):
            thumbs.append((item.path, caption))
        elif is_in_memory(ds):
            arr = ds.images[item.index].permute(1, 2, 0).numpy()
            img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
            thumbs.append((img, caption))
    return thumbs


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    log_fn: Callable[[str], None] | None = None,
) -> RunResult:
    """Run (or continue, with ``resume=RUN_DIR``) a training run.  ``log_fn`` receives one line per epoch.

    ``overrides`` (with ``resume``) are settings given again for the continued run (see ``resume_overrides``):
    a larger ``epochs`` extends the run, the settings that do not change results (workers, device, progress)
    may differ, and any other value must equal the run's own."""
    say = log_fn or log.info
    started = time.perf_counter()
    extended_from = None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise RunDirError(f"cannot resume {run_dir}: no config.json there (is it a lightnets run directory?)")
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = TrainConfig(**saved["config"])
        cfg.out = str(run_dir)
        cfg, extended_from = resume_overrides(cfg, overrides or {}, run_dir)
    else:
        if config is None:
            raise ValueError("train() needs a config or resume=RUN_DIR")
        cfg = dataclasses.replace(config)
        cfg.out = cfg.out or _default_out(cfg)
        run_dir = Path(cfg.out)
    cfg.validate()

    device = _resolve_device(cfg.device)
    dist_info: DistInfo = init_distributed(device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    main = dist_info.is_main

    lock = RunLock(run_dir)
    if main:
        if resume is None and (run_dir / "config.json").exists():
            raise RunDirError(
                f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
                "or choose another --out"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        _remove_stale_temporaries(run_dir)
        if extended_from is not None:  # the new plan goes down first, so a kill from here on resumes it
            saved = json.loads((run_dir / "config.json").read_text())
            saved["config"]["epochs"] = cfg.epochs
            saved.setdefault("extensions", []).append({"from_epochs": extended_from, "to_epochs": cfg.epochs})
            _write_json(run_dir / "config.json", saved)
        if resume is None:
            # the config goes down at once, so a run killed at any later moment can be continued with --resume
            # (without a last.pt that starts it afresh); _run adds the resolved kwargs once the data is loaded
            _write_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg)})
    try:
        return _run(cfg, run_dir, resume is not None, device, dist_info, say, started, extended_from)
    except BaseException:
        # a new run that fails before its first checkpoint holds nothing to continue: leave the directory
        # startable again with the same command (a SIGKILL skips this and leaves it resumable instead)
        if main and resume is None and not (run_dir / "last.pt").exists():
            for name in ("config.json", "split.json"):
                (run_dir / name).unlink(missing_ok=True)
        raise
    finally:
        lock.release()
        cleanup_distributed()


def _run(
    cfg: TrainConfig,
    run_dir: Path,
    resuming: bool,
    device: torch.device,
    dist_info: DistInfo,
    say: Callable[[str], None],
    started: float,
    extended_from: int | None = None,
) -> RunResult:
    main = dist_info.is_main
    seed_everything(cfg.seed)

    # ---- data
    in_chans = cfg.in_chans or (3 if cfg.weights else None)
    split_file = run_dir / "split.json"
    if dist_info.enabled:
        # rank 0 writes the split file first, so every rank reads the same split
        if main and not split_file.exists():
            load_dataset(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, split_file=split_file,
                         in_chans=in_chans, cache=not cfg.no_cache, cache_dir=cfg.cache_dir)  # fmt: skip
        barrier()
    splits: DatasetSplits = load_dataset(
        cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, split_file=split_file, in_chans=in_chans,
        cache=not cfg.no_cache, cache_dir=cfg.cache_dir,
    )
    classes = list(splits.classes)
    skipped: list[tuple[str, str]] = []
    if not splits.in_memory and main:
        for part in (splits.train, splits.val, splits.test):
            if part is not None:
                skipped += [(str(p), r) for p, r in part.scan(check=True)]
        if skipped:
            atomic_write(run_dir / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in skipped))
            say(f"skipped {len(skipped)} unreadable file(s), listed in {run_dir / 'skipped.txt'}")
    elif not splits.in_memory:
        for part in (splits.train, splits.val, splits.test):
            if part is not None:
                part.scan(check=True)
    _check_classes(splits, skipped, cfg.data, say if main else lambda _: None)
    train_ds = _subset_prefix(splits.train, cfg.max_train_samples)
    if cfg.batch_size is None:  # resolved once and recorded in config.json, so --resume keeps it
        cfg = dataclasses.replace(cfg, batch_size=recipe.default_batch_size(len(train_ds), dist_info.world_size))
    if len(train_ds) < cfg.batch_size * dist_info.world_size:
        raise ValueError(
            f"the training set has {len(train_ds)} images, fewer than one batch of {cfg.batch_size} x "
            f"{dist_info.world_size} process(es); lower --batch-size"
        )
    preprocessing = default_preprocessing(splits, cfg.input_size)
    size = preprocessing["input_size"]
    small_input = cfg.small_input if cfg.small_input is not None else min(size) <= 64
    if splits.probe is not None and splits.probe.small and cfg.input_size is None and main:
        say(f"small images ({splits.probe.describe()}): training at their native {size[0]}x{size[1]} px "
            f"with small_input={small_input} (override with --input-size / --small-input)")  # fmt: skip
    if splits.probe is not None and splits.probe.gray and in_chans is None and main:
        say("grayscale images: training with 1 input channel (override with --in-chans 3)")

    # ---- model
    kwargs: dict[str, Any] = {"num_classes": len(classes), "in_chans": splits.in_chans, "small_input": small_input,
                              **cfg.model_args}  # fmt: skip
    if cfg.dropout is not None:
        kwargs["dropout"] = cfg.dropout
    kwargs = {**get_card(cfg.model).kwargs, **_weights_arch_kwargs(cfg.weights), **kwargs}
    check_model_config(cfg.model, kwargs, size, cfg.batch_size, device)  # e.g. 1x1 maps in batches of one
    model = create_model(cfg.model, weights=cfg.weights, weights_sha256=cfg.weights_sha256,
                         allow_unverified=cfg.allow_unverified, **kwargs)
    head = model.classifier_name()
    if cfg.freeze:
        freeze_backbone(model, head)
    model_card = {
        "name": cfg.model, "kwargs": kwargs, "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "macs": count_macs(model, tuple(size), in_chans=splits.in_chans), "input_size": size,
        "preprocessing": preprocessing, "classes": len(classes), "weights": cfg.weights,
    }  # fmt: skip
    model.to(device)
    net: nn.Module = model
    if dist_info.enabled:
        net = convert_sync_batchnorm(model, device).to(device)
        model = net
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    channels_last = _channels_last(cfg.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = decide_amp(cfg.amp, device, get_card(cfg.model).family)
    amp_dtype = amp.dtype
    say(f"precision {amp.name} ({amp.reason})")
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # ---- optimisation
    lp_ft = not cfg.freeze and (cfg.lp_ft if cfg.lp_ft is not None else cfg.weights is not None)
    lr = cfg.lr or recipe.default_lr(cfg.optimizer, cfg.batch_size * dist_info.world_size,
                                     weights=cfg.weights is not None, lp_ft=lp_ft)  # fmt: skip
    wd = cfg.weight_decay if cfg.weight_decay is not None else 5e-4 if cfg.optimizer == "sgd" else 0.05
    head_mult = cfg.head_lr_mult
    if head_mult is None:
        head_mult = recipe.default_head_lr_mult(weights=cfg.weights is not None, lp_ft=lp_ft or cfg.freeze)
    groups = param_groups(model, lr=lr, weight_decay=wd, head_prefix=head, head_lr_mult=head_mult)
    if cfg.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    ema = _make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 and not cfg.freeze else None  # a probe: no steps

    crop_scale = recipe.default_crop_scale(weights=cfg.weights is not None)  # ImageNet-style folders only
    train_loader = make_loader(train_ds, batch_size=cfg.batch_size, train=True, preprocessing=preprocessing,
                               seed=cfg.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                               num_workers=cfg.workers, device=device, crop_scale=crop_scale)  # fmt: skip
    steps_per_epoch, total_steps, warmup_steps = recipe.make_schedule(len(train_loader), cfg.epochs,
                                                                      cfg.warmup_epochs)  # fmt: skip

    def lr_at(step: int) -> float:
        return cosine_lr(step, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=lr)

    eval_batch = max(cfg.batch_size, 64)  # no gradients: a small training batch need not slow evaluation down
    val_loader = _eval_loader(splits.val, preprocessing, eval_batch, cfg.workers, device) if main else None
    # Fine-tuning on a small dataset: batch statistics of a few dozen images are a poor substitute for the
    # pretrained running statistics (and weights with BatchNorm folded into the convs expect BN to be the
    # identity), so by default BatchNorm layers stay in eval mode while their affine parameters still train.
    bn_eval = cfg.bn_eval if cfg.bn_eval is not None else cfg.weights is not None
    after_train_mode = all_norms_in_eval if bn_eval else keep_frozen_norms_in_eval if cfg.freeze else None

    # ---- state: fresh or resumed
    start_epoch, step, history, best, best_epoch = 0, 0, [], -1.0, 0
    test_loader = (_eval_loader(splits.test, preprocessing, cfg.batch_size, cfg.workers, device)
                   if main and cfg.track_test and splits.test is not None else None)  # fmt: skip
    elapsed = 0.0  # wall time of training + validation, excluding the optional per-epoch test scoring
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resuming and last_path.exists():
        state = ckpt_io.load_checkpoint(last_path)
        train_state = state["train_state"]
        elapsed = float(train_state.get("elapsed", 0.0))
        model.load_state_dict(train_state.get("raw_model", state["model"]))
        optimizer.load_state_dict(train_state["optimizer"])
        if ema is not None and train_state.get("ema") is not None:
            ema.load_state_dict(train_state["ema"])
        if scaler is not None and train_state.get("scaler"):
            scaler.load_state_dict(train_state["scaler"])
        start_epoch, step = state["epoch"], train_state["step"]
        history, best, best_epoch = train_state["history"], train_state["best"], train_state["best_epoch"]
        _set_rng_state(train_state["rng"])
        say(f"resumed {run_dir} at epoch {start_epoch}/{cfg.epochs}")
        if extended_from is not None:
            before = cosine_lr(max(step - 1, 0), total_steps=steps_per_epoch * extended_from,
                               warmup_steps=warmup_steps, base_lr=lr)  # fmt: skip
            say(f"extended from {extended_from} to {cfg.epochs} epochs: the cosine schedule is re-planned over "
                f"{cfg.epochs} epochs from step {step} on (lr {before:.3g} -> {lr_at(step):.3g}; recorded in config.json)")  # fmt: skip
    elif main:
        resolved = {"batch_size": cfg.batch_size, "lr": lr, "weight_decay": wd, "head_lr_mult": head_mult,
                    "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "warmup_steps": warmup_steps,
                    "method": "linear probe" if cfg.freeze else "LP-FT" if lp_ft else "train",
                    "amp_resolved": amp.name, "amp_reason": amp.reason}  # fmt: skip
        if preprocessing.get("preset") == "imagenet" and isinstance(train_loader, FolderLoader):
            resolved["crop_scale"] = list(crop_scale)
        _write_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg), "lightnets_kwargs": kwargs,
                                             "preprocessing": preprocessing, "world_size": dist_info.world_size,
                                             "image_probe": splits.probe.to_dict() if splits.probe else None,
                                             "resolved": resolved})  # fmt: skip
        _write_json(run_dir / "classes.json", classes)

    writer = None
    if main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch + 1)
        except ImportError:  # tensorboard is an optional extra
            say("tensorboard not installed: no event files (pip install 'lightnets[train]')")

    fields = dict(arch=cfg.model, kwargs=kwargs, classes=classes, preprocessing=preprocessing)
    # the head is fitted on features computed once: all of a --freeze run (its one "epoch"), or the first
    # stage of LP-FT (history row 0, best.pt if nothing later beats it); see linear_probe.py
    probe_loader = (_eval_loader(train_ds, preprocessing, eval_batch, cfg.workers, device)
                    if (cfg.freeze or lp_ft) and start_epoch == 0 else None)  # fmt: skip
    if lp_ft and start_epoch == 0:
        def save_probe(probed: Any) -> None:  # best.pt holds the most accurate head, before the refit
            row = linear_probe.probe_row(probed, 0, elapsed)
            ckpt_io.save_checkpoint(best_path, model, epoch=0, metrics=row, **fields)

        probed = linear_probe.probe_stage(model, probe_loader, val_loader, classes, device, amp_dtype,
                                          channels_last, dist_info, True, save_probe)  # fmt: skip
        if main:
            row = linear_probe.probe_row(probed, 0, elapsed)
            elapsed = row["elapsed_s"]
            history.append(row)
            best, best_epoch = row.get("val_top1", -row["train_loss"]), 0
            say(_epoch_line(row, cfg.epochs) + f"  (linear probe, weight decay {probed.fit.weight_decay:g}; "
                f"fine-tuning starts from {probed.start_fit.weight_decay:g}, the lowest val loss)")
        if ema is not None:  # the average starts from the fitted head, not the random one
            ema = _make_ema(model, cfg.ema_decay)
    for epoch in range(start_epoch, 1 if cfg.freeze else cfg.epochs):
        epoch_start = time.perf_counter()
        train_loader.set_epoch(epoch)
        bar = None
        if cfg.freeze:
            probed = linear_probe.probe_stage(model, probe_loader, val_loader, classes, device, amp_dtype,
                                              channels_last, dist_info, False)  # fmt: skip
            stats = linear_probe.probe_stats(probed, main)
        else:
            bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}") if main and cfg.progress else None
            stats = train_one_epoch(net, train_loader, optimizer, step=step, lr_at=lr_at,
                                    label_smoothing=cfg.label_smoothing, device=device, amp_dtype=amp_dtype,
                                    channels_last=channels_last, ema=ema, scaler=scaler, progress=bar,
                                    after_train_mode=after_train_mode)  # fmt: skip
        if bar is not None:
            bar.close()
        step = stats["step"]
        loss_sum, correct, seen, seconds = all_reduce_sum(
            [stats["loss_sum"], stats["correct"], stats["seen"], stats["seconds"]]
        )
        row: dict[str, Any] = {
            "epoch": epoch + 1, "lr": lr_at(step - 1), "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "images_per_s": seen / (seconds / dist_info.world_size), "epoch_seconds": seconds / dist_info.world_size,
        }  # fmt: skip
        if main:
            eval_model = ema.module if ema is not None else model
            if val_loader is not None:
                val = (probed.val if cfg.freeze  # the probe scored val on its cached features
                       else evaluate(eval_model, val_loader, classes, device=device, amp_dtype=amp_dtype,
                                     channels_last=channels_last))  # fmt: skip
                row.update({"val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5})
            elapsed += time.perf_counter() - epoch_start
            row["elapsed_s"] = elapsed
            if test_loader is not None:
                test = evaluate(eval_model, test_loader, classes, device=device, amp_dtype=amp_dtype,
                                channels_last=channels_last)  # fmt: skip
                row.update({"test_loss": test.loss, "test_top1": test.top1})
            history.append(row)
            score = row.get("val_top1", -row["train_loss"])
            improved = score > best
            if improved:
                best, best_epoch = score, epoch + 1
            train_state = {
                "optimizer": optimizer.state_dict(), "step": step, "history": history, "best": best, "elapsed": elapsed,
                "best_epoch": best_epoch, "rng": _rng_state(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
            }  # fmt: skip
            if ema is not None:
                train_state["raw_model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            # last.pt is written last: it is what --resume continues from, so a run killed between these writes
            # repeats this epoch (deterministically) and rewrites best.pt and metrics.csv the same way
            if improved:
                ckpt_io.save_checkpoint(best_path, eval_model, epoch=epoch + 1, metrics=metrics, **fields)
            _write_metrics_csv(run_dir / "metrics.csv", history)
            ckpt_io.save_checkpoint(last_path, eval_model, epoch=epoch + 1, metrics=metrics,
                                    train_state=train_state, **fields)  # fmt: skip
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch + 1)
                writer.flush()
            say(_epoch_line(row, cfg.epochs) + (f"  (linear probe, weight decay {probed.fit.weight_decay:g})"
                                                if cfg.freeze else ""))  # fmt: skip
        barrier()

    if writer is not None:
        writer.close()
    if not main:
        return RunResult(run_dir, best_epoch, None, None, "", history, time.perf_counter() - started, None, skipped)
    return _finish(cfg, run_dir, splits, classes, preprocessing, model_card, history, best_epoch, device,
                   skipped, started)  # fmt: skip


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


def _make_ema(model: nn.Module, decay: float) -> Any:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"acc {row['train_acc']:.4f}"]
    if "val_top1" in row:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_top1 {row['val_top1']:.4f}"]
    parts += [f"{row['images_per_s']:.0f} img/s", f"{row['epoch_seconds']:.1f} s"]
    return "  ".join(parts)


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write(path, buf.getvalue(), what="metrics file")


def _finish(
    cfg: TrainConfig,
    run_dir: Path,
    splits: DatasetSplits,
    classes: list[str],
    preprocessing: dict[str, Any],
    model_card: dict[str, Any],
    history: list[dict[str, Any]],
    best_epoch: int,
    device: torch.device,
    skipped: list[tuple[str, str]],
    started: float,
) -> RunResult:
    """Evaluate the best checkpoint on test (or val), write eval files, curves and report.html."""
    from ..evaluation.report import plot_curves, save_eval_artifacts, write_report

    model, _ = ckpt_io.model_from_checkpoint(run_dir / "best.pt")
    model.to(device)
    split_name, ds = ("test", splits.test) if splits.test is not None else ("val", splits.val)
    final = None
    report = None
    if ds is not None:
        loader = _eval_loader(ds, preprocessing, cfg.batch_size, cfg.workers, device)
        final = evaluate(model, loader, classes, device=device, paths_by_id=_paths(ds))
        save_eval_artifacts(run_dir, final)
        card = {**model_card, "best_epoch": best_epoch, "evaluated_on": f"{split_name} ({len(ds)} images)"}
        report = write_report(run_dir, model_card=card, history=history, eval_result=final,
                              thumbnails=_thumbnails(ds, final, display_names(classes)),
                              title=f"lightnets: {cfg.model} on {cfg.data}")  # fmt: skip
    else:
        plot_curves(history, run_dir / "curves.png")
    best_val = max((r["val_top1"] for r in history if "val_top1" in r), default=None)
    return RunResult(run_dir, best_epoch, best_val, final, split_name if final else "", history,
                     time.perf_counter() - started, report, skipped)  # fmt: skip
