"""The training stage: ``train(TrainConfig(...))`` (``run``), the loop (``engine``), distributed set-up,
checkpoints, the fine-tuning recipe, mixed precision, the linear probe and the demo.  The public names of
``run`` are re-exported here (``from lightnets.train import TrainConfig, train``)."""

from .run import (
    MAX_LR,
    RESUME_FREE,
    RunDirError,
    RunLock,
    RunResult,
    TrainConfig,
    resume_overrides,
    seed_everything,
    train,
)

__all__ = [
    "MAX_LR",
    "RESUME_FREE",
    "RunDirError",
    "RunLock",
    "RunResult",
    "TrainConfig",
    "resume_overrides",
    "seed_everything",
    "train",
]
