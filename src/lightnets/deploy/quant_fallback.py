"""int8 that keeps accuracy: which layers to leave in float when full int8 loses too much.

Two steps, both measured:

1. ``layer_sensitivity`` -- one forward pass of the fp32 model over calibration images with a hook on every
   convolution and linear layer: each computes its own output again from int8-simulated operands (its input
   per tensor, uint8 asymmetric over the batch's range; its weight int8 symmetric per output channel, the
   scheme every lightnets int8 format uses) and records the noise-to-signal ratio
   ``|q - y|^2 / |y|^2`` of that layer alone.  One pass ranks every layer; no layer sees another's error.
2. ``search_float_layers`` -- the ranking is only a guess at what the *target runtime's* int8 loses, so each
   candidate set is exported and measured for real (``measure(float_layers) -> drop in points``), keeping the
   top 1, 2, 4, 8, ... layers in float until the drop is within the budget.  Doubling needs few exports
   (each one a full export + check) and a step never drops a layer the previous one kept.

When even the last step misses the budget, the result says so (and ``lightnets export`` exits with status 1);
the next tool is quantization-aware training, ``lightnets train --qat --weights RUN`` (``lightnets.train.qat``): a
few epochs with int8 fake quantization, whose checkpoint this export then quantizes (its scales still come from
calibration; the weights and BatchNorm statistics are the QAT-trained ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FallbackResult", "layer_sensitivity", "quantizable_layers", "search_float_layers"]


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules int8 formats quantize: every Conv2d and Linear."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _fake_quant_input(x: torch.Tensor) -> torch.Tensor:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    zero = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    amax = w.abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (amax / 127.0).float()
    zero = torch.zeros(len(scale), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


def _quantized_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    xq, wq = _fake_quant_input(x), _fake_quant_weight(module.weight)
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(xq, wq, module.bias)
    return F.linear(xq, wq, module.bias)


@torch.no_grad()
def layer_sensitivity(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Noise-to-signal ratio of each Conv2d / Linear under int8 simulation, most sensitive first."""
    noise: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):

            def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
                err = (_quantized_output(m, inputs[0]) - out).pow(2).sum()
                noise[name] = float(err / out.pow(2).sum().clamp_min(1e-20))

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return dict(sorted(noise.items(), key=lambda kv: -kv[1]))


@dataclass
class FallbackResult:
    float_layers: tuple[str, ...]
    drop: float  # points lost with those layers in float
    within_budget: bool
    steps: list[dict[str, object]] = field(default_factory=list)  # {"float_layers": n, "drop_points": d}


def search_float_layers(
    ranked: Sequence[str],
    measure: Callable[[tuple[str, ...]], float],
    budget: float,
    *,
    first_drop: float | None = None,
    max_steps: int = 7,
) -> FallbackResult:
    """Keep the top 0, 1, 2, 4, ... of ``ranked`` layers in float until ``measure(layers) <= budget``.

    ``measure`` exports with those layers in float and returns the drop in points; ``first_drop`` is the
    already-measured drop of full int8 (no layer in float).  Stops after ``max_steps`` attempts or when every
    layer is float; then returns the best attempt, flagged ``within_budget=False``.
    """
    ranked = list(ranked)
    steps: list[dict[str, object]] = []
    best: tuple[float, tuple[str, ...]] | None = None
    k = 0
    while len(steps) < max_steps:
        layers = tuple(ranked[:k])
        drop = first_drop if k == 0 and first_drop is not None else float(measure(layers))
        steps.append({"float_layers": len(layers), "drop_points": drop})
        if best is None or drop < best[0]:
            best = (drop, layers)
        if drop <= budget:
            return FallbackResult(layers, drop, True, steps)
        if k >= len(ranked):
            break
        k = min(len(ranked), max(1, 2 * k))
    assert best is not None
    return FallbackResult(best[1], best[0], False, steps)
