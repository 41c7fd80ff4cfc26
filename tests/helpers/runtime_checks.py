"""Shared body of the per-format tests (tests/deploy/test_runtimes_*.py): export one model of each family through a
format module, run the file in the format's own runtime on real photos, compare with eager PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lightnets.data.transforms import make_preprocessing
from lightnets.deploy import optimize
from lightnets.deploy.images import load_images
from lightnets.deploy.runtimes import ExportRequest, get_format
from lightnets.deploy.to_device import eager_logits, logits_of

SIZE = 64


def photos(shared_data: Path, size: int = SIZE, calib: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration photos from the ants/bees train folder, check photos from its val folder)."""
    prep = make_preprocessing("imagenet", size)
    cal, _ = load_images(shared_data / "hymenoptera_data" / "train", prep, calib_images=calib, check_images=0)
    _, check = load_images(shared_data / "hymenoptera_data" / "val", prep, calib_images=1, check_images=48)
    return cal.images, check.images


def export_and_run(fmt_name: str, model: torch.nn.Module, out: Path, calib: torch.Tensor | None,
                   check: torch.Tensor, quantize: str | None = None,
                   float_layers: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, Path]:  # fmt: skip
    """(logits of the exported file in its runtime, eager logits, path) on ``check``."""
    fmt = get_format(fmt_name)
    request = ExportRequest(optimize(model, channels_last=False), torch.zeros((1, *check.shape[1:])), out,
                            {"arch": type(model).__name__, "classes": ["a"]}, quantize, calib, float_layers)  # fmt: skip
    path = fmt.export(request)
    return logits_of(fmt.load(path, 1), check), eager_logits(model, check), path


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """|got - ref| / |ref| over all logits: int8 noise relative to the signal (random-weight models have
    near-tied classes, so top-1 agreement alone says little about them)."""
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
