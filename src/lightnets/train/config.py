"""``TrainConfig``: every setting of a training run, in one place.  The CLI's ``train`` options are generated from
its fields, and their help text from the comment on each field's line, so a new setting is added here only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import get_card

MAX_LR = 10.0  # sanity bound: no recipe for these models uses a base rate above 1 (SGD, batch 256 scale: 0.1)


@dataclass
class TrainConfig:
    """Everything that defines a run.  ``None`` means "choose from the data / model" (see ``resolve``)."""

    model: str = "mobilenet_v2"  # a registered model name (lightnets models lists them)
    data: str = "digits"  # digits, fashion-mnist:PATH, cifar10:PATH, folder:PATH or a bare PATH (load_dataset)
    out: str | None = None  # run directory; default runs/<model>-<time>
    epochs: int = 10  # passes over the training set
    batch_size: int | None = None  # default: 128, smaller for small training sets (recipe.default_batch_size)
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    lr: float | None = None  # default: sgd 0.1 x batch/256 (small inputs 0.4 x, fine-tuning 0.01 x, after LP 0.004 x); adamw 1e-3 x
    weight_decay: float | None = None  # default: sgd 5e-4, adamw 0.05; never on norm / bias parameters
    warmup_epochs: float = 0.5  # in steps, at most a tenth of the run's steps (recipe.make_schedule)
    label_smoothing: float = 0.1  # cross-entropy label smoothing, in [0, 1)
    dropout: float | None = None  # None: the model's default
    ema_decay: float = 0.0  # 0 = off; e.g. 0.999 keeps an exponential moving average of the weights
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    seed: int = 0  # seeds the split, the data order and the weights
    weights: str | None = None  # pretrained state_dict or run directory (head replaced when the class count differs)
    weights_sha256: str | None = None  # expected sha256 (prefix) of the weights file or URL
    allow_unverified: bool = False  # accept a weights URL without a sha256 to check
    freeze: bool = False  # fit only the classifier, on features computed once (a linear probe, linear_probe.py)
    qat: bool = False  # quantization-aware fine-tuning of --weights (same classes) in fp32, for int8 export (qat.py)
    lp_ft: bool | None = None  # linear probe, then fine-tune everything; default: on with --weights
    bn_eval: bool | None = None  # keep every BatchNorm on its pretrained statistics; default: on with --weights
    head_lr_mult: float | None = None  # default 10 when fine-tuning a new head, else 1 (also after LP)
    input_size: int | None = None  # default: native size for small in-memory data, 224 for folders
    small_input: bool | None = None  # default: True when input_size <= 64
    in_chans: int | None = None  # default: the data's (3 when fine-tuning RGB weights)
    model_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"width_mult": 0.5}
    val_fraction: float = 0.1  # share of the training set held out for validation when the data has no val split
    workers: int = 2  # data-loading processes for image folders
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda[:N]
    progress: bool = True  # a progress bar per epoch (only on a terminal)
    max_train_samples: int | None = None  # an evenly spaced subset of the training set (quick experiments, tests)
    track_test: bool = False  # also score the test split every epoch (reported only, never used to select)
    cache_dir: str | None = None  # decoded image folders (default: $XDG_CACHE_HOME/lightnets/decoded)
    no_cache: bool = False  # decode every image file every epoch instead of once (lightnets.data.decode_cache)

    def validate(self) -> None:
        """Refuse a setting that cannot work, with a ValueError naming it.  The model itself (its arguments at the
        run's input size) is checked by the run once, with the arguments it will be built with (``model_setup``)."""
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
            (not self.qat or self.weights, "qat fine-tunes a trained model: it needs --weights (a run directory or checkpoint)"),
            (not (self.qat and (self.freeze or self.lp_ft)), "qat trains every layer: it cannot be combined with freeze or lp_ft"),
            (not (self.qat and self.ema_decay > 0), "qat keeps no weight average: drop --ema"),
            (not self.qat or self.amp in ("auto", "off"), f"qat trains in fp32: --amp {self.amp} cannot be used with it"),
            (self.max_train_samples is None or self.max_train_samples > 0,
             f"max_train_samples must be > 0, got {self.max_train_samples}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.weights is not None and "://" not in self.weights and not Path(self.weights).is_file():
            run = Path(self.weights)
            if not run.is_dir():
                raise FileNotFoundError(f"weights file not found: {self.weights}")
            if not (run / "best.pt").is_file() and not (run / "last.pt").is_file():
                raise FileNotFoundError(f"weights directory {self.weights} is not a run: it has no best.pt or last.pt")
