"""``optimize``: the inference form of a model (BatchNorm folded, dropout removed, channels-last where faster).

``optimize(model)`` returns the inference form of any registered model: a copy in eval mode with every
BatchNorm folded into the convolution before it, dropout removed, gradients off, and channels-last memory
where that measured faster.  Activations are left exactly as they are (ReLU6 stays a clamp, hard-swish stays
``x * relu6(x + 3) / 6``), so its outputs equal the eager model's up to float rounding (<= 1e-5 in the tests).

Folding is done with PyTorch's ``torch.nn.utils.fusion.fuse_conv_bn_eval`` on every Conv2d -> BatchNorm2d
pair that sits next to each other in an ``nn.Sequential`` (every lightnets block is built that way:
``ConvNormAct`` and the ShuffleNet branches).  The pairs are found by walking the modules rather than with
``torch.fx``-based fusion because symbolic tracing fails on three of the five families (channel shuffle
branches on the tensor's shape; MobileNetV3 slices its classifier ``nn.Sequential``).  The BatchNorm is
replaced by ``nn.Identity`` so the containers keep their indices.  The engines that run this form are in
``lightnets.deploy.engines``.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["CHANNELS_LAST_DEFAULT", "fold_batchnorm", "optimize", "remove_dropout"]

#: ``optimize(channels_last="auto")`` without an example input: channels-last on CPU.  Measured with
#: benchmarks/deploy_latency.py-style interleaved timing at batch 1 (docs/benchmarks.md): channels-last was
#: faster for ShuffleNetV2, MobileNetV2 and MobileNetV3 but not MobileNetV1 (dense 1x1 convolutions), so with
#: an example input "auto" times both layouts on it and keeps the faster.
CHANNELS_LAST_DEFAULT = True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a Conv2d (BatchNorm1d: a Linear) in an
    ``nn.Sequential``; the norm becomes ``nn.Identity``.  The model must be in eval mode.  Returns the count."""
    if model.training:
        raise ValueError(
            "fold_batchnorm needs a model in eval mode (the running statistics are what is folded)"
        )
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            first, norm = module[i], module[i + 1]
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
                if isinstance(first, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(first, norm)
                elif isinstance(first, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                    module[i] = fuse_linear_bn_eval(first, norm)
                else:
                    continue
                module[i + 1] = nn.Identity()
                folded += 1
    return folded


def remove_dropout(model: nn.Module) -> int:
    """Replace, in place, every dropout module with ``nn.Identity`` (they are identities in eval mode anyway).
    Returns the count."""
    removed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(module, name, nn.Identity())
                removed += 1
    return removed


def _faster_layout_is_channels_last(
    model: nn.Module, x: torch.Tensor, rounds: int = 3, repeats: int = 3
) -> bool:
    """Time ``model`` on ``x`` in both memory formats (interleaved, medians) and say whether channels-last won."""
    candidates = {
        False: (model, x.contiguous()),
        True: (
            copy.deepcopy(model).to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        ),
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for module, inp in candidates.values():
        module(inp)  # warm-up (allocations, oneDNN primitive creation)
    for _ in range(rounds):
        for key, (module, inp) in candidates.items():
            for _ in range(repeats):
                start = time.perf_counter()
                module(inp)
                times[key].append(time.perf_counter() - start)
    return float(np.median(times[True])) < float(np.median(times[False]))


@torch.no_grad()
def optimize(
    model: nn.Module,
    *,
    channels_last: bool | str = "auto",
    example_input: torch.Tensor | None = None,
    atol: float = 1e-4,
) -> nn.Module:
    """The inference form of ``model`` (a copy; ``model`` itself is not changed).

    BatchNorm folded into the preceding convolutions, dropout removed, eval mode, no gradients, and
    channels-last memory if ``channels_last`` is True, or "auto" and it is faster: "auto" times both memory
    formats on ``example_input`` when one is given (a few calls each), else uses ``CHANNELS_LAST_DEFAULT``.
    A channels-last model accepts either memory format.  With ``example_input`` the result is also checked
    against the eager model on it (max abs diff <= ``atol``, else RuntimeError).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if channels_last != "auto" and not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
    deployed = copy.deepcopy(model).eval()
    fold_batchnorm(deployed)
    remove_dropout(deployed)
    deployed.requires_grad_(False)
    if channels_last == "auto":
        if example_input is not None:
            channels_last = _faster_layout_is_channels_last(deployed, example_input)
        else:
            channels_last = CHANNELS_LAST_DEFAULT
    if channels_last:
        deployed = deployed.to(memory_format=torch.channels_last)
    if example_input is not None:
        was_training = model.training
        model.eval()
        try:
            ref = model(example_input)
        finally:
            model.train(was_training)
        diff = float((deployed(example_input) - ref).abs().max())
        if not diff <= atol:
            raise RuntimeError(
                f"optimized {type(model).__name__} differs from the eager model by {diff:.3g} (> {atol:g})"
            )
    return deployed
