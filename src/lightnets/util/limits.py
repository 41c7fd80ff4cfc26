"""What this machine can hold: a cheap estimate of the activation memory a model needs at an input size, and
the memory available to hold it, so a size that cannot fit is refused with the numbers instead of ending in
an allocation failure (or a C++ overflow traceback) deep inside PyTorch.

The estimate runs the model once at a small reference size and scales by the pixel count: every activation
of these convolutional networks has a fixed number of values per input pixel (strides only divide it), so
the values at H x W are those at the reference size times H*W / reference^2, up to rounding.  Training keeps
every activation for the backward pass (the estimate counts each layer's output once, in float32: a lower
bound); inference needs the largest input + output pair of one layer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

REFERENCE_SIDE = 64
BYTES_PER_VALUE = 4  # float32


def available_memory(device: str | torch.device = "cpu") -> tuple[int, str]:
    """(bytes, description) of the memory free for tensors on ``device``: the GPU's free memory, or for the CPU
    the smaller of the kernel's MemAvailable and this process's cgroup limit (containers)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"{torch.cuda.get_device_name(device)} free memory"
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            candidates.append(int(text))
    except OSError:
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return 1 << 62, "memory (unknown)"
    return min(candidates), "available RAM"


@torch.no_grad()
def activation_values_per_pixel(model: nn.Module, in_chans: int = 3) -> tuple[float, float]:
    """(all layer outputs, the largest layer input + output) in values per input pixel, measured by one forward
    pass of a REFERENCE_SIDE x REFERENCE_SIDE image."""
    total, largest = [0], [0]

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()
            inp = args[0].numel() if args and isinstance(args[0], torch.Tensor) else 0
            largest[0] = max(largest[0], inp + output.numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, REFERENCE_SIDE, REFERENCE_SIDE))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    pixels = REFERENCE_SIDE * REFERENCE_SIDE
    return total[0] / pixels, largest[0] / pixels


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n < 1e15 else f"{n / 1e9:.2g} GB"


def check_fits(
    model: nn.Module,
    input_size: tuple[int, int],
    batch_size: int,
    *,
    in_chans: int = 3,
    training: bool = True,
    device: str | torch.device = "cpu",
) -> int:
    """Refuse (ValueError with both numbers) an input size and batch whose activations cannot fit in memory;
    returns the estimated bytes otherwise."""
    h, w = input_size
    per_pixel_all, per_pixel_peak = activation_values_per_pixel(model, in_chans)
    per_pixel = per_pixel_all if training else per_pixel_peak
    need = math.ceil(per_pixel * h * w * batch_size * BYTES_PER_VALUE)
    have, what = available_memory(device)
    if need > have:
        job = "training on" if training else "running"
        raise ValueError(
            f"input size {h}x{w} is too large for this machine: {job} {h}x{w} images in batches of {batch_size} "
            f"needs about {_gb(need)} of activation memory, and {what} is {_gb(have)}; lower the input size"
            + (" or the batch size" if batch_size > 1 else "")
        )
    return need
