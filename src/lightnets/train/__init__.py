"""The training stage: ``train(TrainConfig(...))`` (``run``), its settings (``config``), the run directory
(``rundir``), the stages of a run (``data_setup``, ``model_setup``, ``optim_setup``, ``loop``, ``finish``), the
loop's pieces (``engine``), distributed set-up, checkpoints, the fine-tuning recipe, mixed precision, the linear
probe and the demo.  The public names are re-exported here (``from lightnets.train import TrainConfig, train``)."""

from .config import MAX_LR, TrainConfig
from .data_setup import eval_loader, run_paths
from .finish import RunResult
from .run import train
from .rundir import RESUME_FREE, RunDirError, RunLock, resume_overrides
from .state import seed_everything

__all__ = [
    "MAX_LR",
    "RESUME_FREE",
    "RunDirError",
    "RunLock",
    "RunResult",
    "TrainConfig",
    "eval_loader",
    "resume_overrides",
    "run_paths",
    "seed_everything",
    "train",
]
