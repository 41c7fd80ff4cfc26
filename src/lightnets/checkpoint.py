"""Checkpoints that carry everything needed to use them: architecture, its keyword arguments, class names and
the eval preprocessing, besides the weights (and, for resuming, optimizer, schedule position and RNG state).

Files are written atomically (temporary file in the same directory, fsync, ``os.replace``), so a process
killed mid-write, or a full disk, leaves the previous checkpoint intact.  They are read with
``torch.load(weights_only=True)``: nothing in them can execute code, so every field is a tensor or a plain
Python container / scalar.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .registry import create_model
from .weights import WeightsError, load_into

FORMAT = "lightnets-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "arch", "kwargs", "classes", "preprocessing", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is not a lightnets checkpoint, or does not fit."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically; on any failure the old file (if any) is untouched."""
    # Serialised in memory first: torch's zip writer turns a failing write (a full disk) into a RuntimeError
    # ("unexpected pos ...") that names neither the file nor the cause; a plain write raises the OSError.
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getbuffer(), what="checkpoint")


def build_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    kwargs: dict[str, Any],
    classes: list[str],
    preprocessing: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict for ``model``; ``extra`` holds training state (optimizer, epoch, rng, metrics...)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "kwargs": dict(kwargs),
        "classes": list(classes),
        "preprocessing": dict(preprocessing),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **fields: Any) -> Path:
    return atomic_save(build_checkpoint(model, **fields), path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a lightnets checkpoint (no code is executed)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path} is a directory without best.pt or last.pt")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {first} "
            "(checkpoints are loaded with weights_only=True; a file that needs arbitrary code is refused)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a lightnets checkpoint (a plain state_dict? load it with create_model(name, weights=...))"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks fields {missing}")
    if ckpt["version"] > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt['version']}; this lightnets reads <= {VERSION}")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(source: str | os.PathLike | dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, checkpoint)."""
    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    model = create_model(ckpt["arch"], **ckpt["kwargs"])
    try:
        load_into(model, ckpt["model"], source=str(ckpt.get("path", "checkpoint")))
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    return model.eval(), ckpt
