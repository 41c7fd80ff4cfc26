"""Checkpoints that carry everything needed to use them: architecture, its keyword arguments, class names and
the eval preprocessing, besides the weights (and, for resuming, optimizer, schedule position and RNG state).

Files are written atomically (temporary file in the same directory, fsync, ``os.replace``), so a process
killed mid-write, or a full disk, leaves the previous checkpoint intact.  They are read with
``torch.load(weights_only=True)``: nothing in them can execute code, so every field is a tensor or a plain
Python container / scalar.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.weights import WeightsError, _format_problems, check_state_dict, load_into
from ..registry import create_model
from ..util.atomic import atomic_write

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


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, str | None]:
    """The checkpoint file ``path`` names: itself, or a run directory's best.pt, else its last.pt.  The second
    value says so when last.pt stands in for a missing best.pt (for the CLI to tell the user)."""
    path = Path(path)
    if not path.is_dir():
        return path, None
    if (path / "best.pt").exists():
        return path / "best.pt", None
    if (path / "last.pt").exists():
        return path / "last.pt", f"{path} has no best.pt; using {path / 'last.pt'} (the latest epoch, not the best)"
    raise CheckpointError(f"{path} is a directory without best.pt or last.pt")


def _is_cut_zip(path: Path) -> bool:
    # torch checkpoints are zip archives; one whose start is there but whose central directory is not was cut off
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a lightnets checkpoint (no code is executed)."""
    path, _ = resolve_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write was cut short or it was truncated")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        if _is_cut_zip(path):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (an incomplete zip archive: {first})") from None
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
    check_metadata(ckpt)
    return ckpt


# Sane bounds for what a checkpoint says about itself: a file claiming 10**9 classes or a 10**6-pixel input
# would otherwise make the rebuild try to allocate terabytes before its weights are even compared.
MAX_CLASSES = 1_000_000
MAX_IN_CHANS = 64
MAX_INPUT_SIDE = 16384


def _bad(ckpt: dict[str, Any], field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {ckpt.get('path', '?')}: field {field} {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_metadata(ckpt: dict[str, Any]) -> None:
    """Refuse, naming the field, metadata that is out of sane bounds or contradicts itself (num_classes vs
    the class names, in_chans vs the mean / std).  The tensors are compared in ``model_from_checkpoint``."""
    if not isinstance(ckpt["arch"], str):
        raise _bad(ckpt, "arch", f"must be a model name, got {ckpt['arch']!r}")
    kwargs, classes, prep = ckpt["kwargs"], ckpt["classes"], ckpt["preprocessing"]
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _bad(ckpt, "kwargs", "must be a dict of keyword arguments")
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        raise _bad(ckpt, "classes", "must be a list of class names")
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise _bad(ckpt, "classes", f"has {len(classes)} names; expected 1 to {MAX_CLASSES}")
    n = kwargs.get("num_classes", len(classes))
    if not _is_int(n) or not 1 <= n <= MAX_CLASSES:
        raise _bad(ckpt, "kwargs.num_classes", f"is {n!r}; expected an integer from 1 to {MAX_CLASSES}")
    if n != len(classes):
        raise _bad(ckpt, "classes", f"has {len(classes)} names but kwargs.num_classes is {n}")
    if not isinstance(prep, dict):
        raise _bad(ckpt, "preprocessing", "must be a dict")
    for where, chans in (("kwargs.in_chans", kwargs.get("in_chans", 3)), ("preprocessing.in_chans", prep.get("in_chans", 3))):
        if not _is_int(chans) or not 1 <= chans <= MAX_IN_CHANS:
            raise _bad(ckpt, where, f"is {chans!r}; expected an integer from 1 to {MAX_IN_CHANS}")
    size = prep.get("input_size")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_int(v) and 1 <= v <= MAX_INPUT_SIDE for v in size)):
        raise _bad(ckpt, "preprocessing.input_size", f"is {size!r}; expected [height, width], each 1 to {MAX_INPUT_SIDE}")
    for key in ("mean", "std"):
        values = prep.get(key)
        if values is None:
            continue
        if not (isinstance(values, list | tuple) and len(values) == prep.get("in_chans", 3)
                and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
                and (key == "mean" or all(v > 0 for v in values))):  # fmt: skip
            raise _bad(ckpt, f"preprocessing.{key}", f"is {values!r}; expected one finite value per channel"
                       + (" (> 0)" if key == "std" else ""))  # fmt: skip
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad(ckpt, "model", "must be a state_dict of tensors")


def check_shapes(ckpt: dict[str, Any]) -> None:
    """Compare the tensors the metadata describes with the tensors in the file, before anything is allocated:
    the model is built on PyTorch's meta device (shapes only, no memory)."""
    try:
        with torch.device("meta"):
            probe = create_model(ckpt["arch"], **ckpt["kwargs"])
    except (TypeError, ArithmeticError, RuntimeError) as e:
        raise _bad(ckpt, "kwargs", f"{ckpt['kwargs']} cannot build {ckpt['arch']}: {e}") from None
    problems = check_state_dict(probe, ckpt["model"])
    if any(problems.values()):
        rows = {k: a for k, a, b in problems["mismatched"] if b and b[0] == len(ckpt["classes"]) and a[:1] != b[:1]}
        field = "kwargs.num_classes / classes" if rows else "kwargs"
        raise _bad(ckpt, field, f"({ckpt['arch']}, {ckpt['kwargs']}) does not fit the weights in the file: "
                   f"{_format_problems(problems)}")  # fmt: skip


def model_from_checkpoint(source: str | os.PathLike | dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, checkpoint)."""
    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    check_metadata(ckpt)
    check_shapes(ckpt)
    model = create_model(ckpt["arch"], **ckpt["kwargs"])
    try:
        load_into(model, ckpt["model"], source=str(ckpt.get("path", "checkpoint")))
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    return model.eval(), ckpt
