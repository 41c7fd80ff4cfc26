"""What a run carries from stage to stage: its context (``RunContext``: settings, directory, device, processes),
its progress (``RunState``: epoch, step, history, best score, so a checkpoint can hold it and ``--resume`` can
restore it), and the random-number state that makes a continued run the run that would have happened."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .distributed import DistInfo


@dataclass
class RunContext:
    """The fixed facts of one run, resolved before any data is loaded."""

    cfg: TrainConfig
    run_dir: Path
    resuming: bool
    device: torch.device
    dist_info: DistInfo
    say: Callable[[str], None]  # one line of news (per epoch, warnings)
    started: float  # time.perf_counter() at the start of train()
    extended_from: int | None = None  # the epoch count a resumed run had before --epochs grew

    @property
    def main(self) -> bool:
        return self.dist_info.is_main

    def quiet_unless_main(self) -> Callable[[str], None]:
        return self.say if self.main else lambda _: None


@dataclass
class RunState:
    """How far a run has come; saved in ``last.pt`` each epoch and restored from it on resume."""

    start_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0  # val top-1 of the best epoch (minus the train loss without val)
    best_epoch: int = 0
    elapsed: float = 0.0  # wall time of training + validation, excluding the optional per-epoch test scoring


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the weights, augmentation and anything else drawn at random)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
