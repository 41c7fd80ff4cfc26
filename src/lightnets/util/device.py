"""Turning a device name from the user (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a ``torch.device``, in one
place: training and benchmarking must refuse the same bad names with the same one-line errors."""

from __future__ import annotations

from collections.abc import Collection

import torch


def resolve_device(
    device: str | torch.device, *, allow_auto: bool = True, kinds: Collection[str] | None = None
) -> torch.device:
    """The ``torch.device`` named by ``device``; ValueError naming the value when it cannot be used.

    ``auto`` (when ``allow_auto``) is CUDA when available, else the CPU.  CUDA is used only when it is there:
    asking for it on a machine without it is an error, not a silent fall-back to a slower device.  ``kinds``
    limits the device types accepted (a benchmark that knows only ``cpu`` and ``cuda``)."""
    if allow_auto and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    if kinds is not None and dev.type not in kinds:
        raise ValueError(f"device must be {' or '.join(kinds)}, got {device!r}")
    return dev
