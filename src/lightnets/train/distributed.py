"""Distributed data parallel helpers: the same training command under ``torchrun --nproc_per_node N``.

torch.distributed is initialised from torchrun's environment (gloo on CPU, NCCL on GPUs).  BatchNorm must see
the whole global batch for a multi-process run to equal a single-process run with the same global batch:
on GPUs that is ``nn.SyncBatchNorm``; on CPU, where SyncBatchNorm refuses to run ("SyncBatchNorm layers only
work with GPU modules"), ``CPUSyncBatchNorm`` below does the same with a differentiable all-reduce of the
per-channel sums.  That is why it is written here by hand.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over processes (its backward all-reduces the gradient too)."""
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in favour of a private module; still the public API
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed over the batch of every process (CPU + gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        out_dtype = x.dtype
        # Normalisation is done in float64, in two passes (mean, then centred squares): differentiating through
        # these ops in float32 was ~5x less accurate than PyTorch's fused BatchNorm backward, which showed as
        # ~0.5% gradient differences between 2-process and 1-process runs on channels with tiny variance.
        x = x.double()
        first = _all_reduce(torch.cat([x.sum(dim=dims), torch.tensor([x.numel() / c], dtype=x.dtype)]))
        n = first[-1]
        mean = first[:c] / n
        centred = x - mean[None, :, None, None]
        var = _all_reduce((centred * centred).sum(dim=dims)) / n  # biased, used to normalise as BatchNorm does
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * n / (n - 1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(out_dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(out_dtype), alpha=momentum)
        y = (centred * torch.rsqrt(var[None, :, None, None] + self.eps)).to(out_dtype)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one (SyncBatchNorm on CUDA, CPUSyncBatchNorm on CPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
            out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
            out.load_state_dict(module.state_dict())
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few Python numbers over processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

