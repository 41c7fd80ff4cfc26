"""Deterministic weights and input shared by the parity tests and scripts/torchvision_reference.py.

Weights come from a seeded generator, scaled per tensor so that activations stay in a sane range through
deep networks (fan-in scaling for weights, positive running variances).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def reference_state_dict(template: Mapping[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, t in template.items():
        if not t.is_floating_point():
            out[key] = t.clone()
            continue
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
        if key.endswith("running_var"):
            value = 0.5 + noise.abs()
        elif key.endswith("running_mean") or key.endswith("bias"):
            value = 0.1 * noise
        elif t.dim() == 1:  # norm weight
            value = 1.0 + 0.1 * noise
        else:
            fan_in = t[0].numel()
            value = noise / fan_in**0.5
        out[key] = value.to(t.dtype)
    return out


def reference_input(size: tuple[int, int] = (128, 160), in_chans: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(1, in_chans, *size, generator=gen)
