"""``train(config)``: one training run, from a dataset source and a model name to a run directory holding the
resolved config, class names, ``last.pt`` / ``best.pt`` checkpoints, ``metrics.csv``, TensorBoard events, PNG
curves, evaluation files and ``report.html``.

The run reads top to bottom: resolve settings and the run directory (``rundir``), load data (``data_setup``),
build the model, optionally from pretrained weights, optionally frozen (``model_setup``), set up the optimizer
and schedule (``optim_setup``), then per epoch: train, evaluate, write metrics and checkpoints (``loop``), and
finally score the best checkpoint and write the report (``finish``).  A killed run continues with
``resume=RUN_DIR``: model, optimizer, schedule position, EMA, RNG state and epoch all come back, and the data
order is a function of (seed, epoch), so the continued run is the run that would have happened.  Under
``torchrun --nproc_per_node N`` the same call trains with DistributedDataParallel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from ..util.device import resolve_device
from .config import MAX_LR, TrainConfig
from .data_setup import eval_loader, run_paths, setup_data
from .distributed import cleanup_distributed, init_distributed
from .finish import RunResult, finish, run_result
from .loop import EpochLoop
from .model_setup import setup_model
from .optim_setup import setup_optimisation
from .rundir import (
    RESUME_FREE,
    RunDirError,
    RunLock,
    forget_failed_start,
    open_run_dir,
    resolve_run,
    resume_overrides,
)
from .state import RunContext, seed_everything

log = logging.getLogger(__name__)


__all__ = ["MAX_LR", "RESUME_FREE", "RunDirError", "RunLock", "RunResult", "TrainConfig", "eval_loader",
           "resume_overrides", "run_paths", "seed_everything", "train"]  # fmt: skip


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
    started = time.perf_counter()
    cfg, run_dir, extended_from = resolve_run(config, resume, overrides)
    cfg.validate()
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    ctx = RunContext(cfg, run_dir, resume is not None, device, dist_info, log_fn or log.info, started, extended_from)
    lock = RunLock(run_dir)
    if ctx.main:
        open_run_dir(cfg, run_dir, ctx.resuming, extended_from, lock)
    try:
        return _run(ctx)
    except BaseException:
        if ctx.main and not ctx.resuming:
            forget_failed_start(run_dir)
        raise
    finally:
        lock.release()
        cleanup_distributed()


def _run(ctx: RunContext) -> RunResult:
    """The stages of a run, in order; every process runs them, the main one alone writes and reports."""
    seed_everything(ctx.cfg.seed)
    cfg, data = setup_data(ctx)
    ctx = dataclasses.replace(ctx, cfg=cfg)  # the batch size resolved from the data
    run_model = setup_model(ctx, data)
    opt = setup_optimisation(ctx, data, run_model)
    state = EpochLoop(ctx, data, run_model, opt).run()
    if not ctx.main:
        return run_result(ctx, state, data)
    return finish(ctx, data, run_model, state)
