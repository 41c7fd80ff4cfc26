"""safetensors export: the state_dict (no pickle, no code) with the architecture, its keyword arguments,
class names and preprocessing as JSON strings in the file's metadata, so ``load_safetensors`` rebuilds the
model from the file alone."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..util.atomic import atomic_write
from .export_common import ExportError, ExportReport, metadata_strings, read_metadata, write_sidecar

__all__ = ["SAFETENSORS_FORMAT", "export_safetensors", "load_safetensors"]

SAFETENSORS_FORMAT = "lightnets-safetensors"


def export_safetensors(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    arch: str,
    kwargs: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    sidecar: bool = False,
) -> ExportReport:
    """Write ``model``'s weights as safetensors with arch / kwargs / classes / preprocessing in its metadata."""
    from safetensors.torch import save

    start = time.perf_counter()
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": SAFETENSORS_FORMAT, "arch": arch, "kwargs": dict(kwargs or {})}
    if classes is not None:
        meta["classes"] = list(classes)
    if preprocessing is not None:
        meta["preprocessing"] = dict(preprocessing)
    atomic_write(path, save(state, metadata=metadata_strings(meta)), what="safetensors file")
    report = ExportReport(path=path, format="safetensors", metadata=meta, num_bytes=path.stat().st_size)
    if sidecar:
        report.sidecar = write_sidecar(path, meta)
    report.seconds = time.perf_counter() - start
    return report


def load_safetensors(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model (eval mode) from a file written by ``export_safetensors``; returns (model, metadata)."""
    from ..registry import create_model

    meta = read_metadata(path)
    if meta.get("format") != SAFETENSORS_FORMAT or "arch" not in meta:
        raise ExportError(
            f"{path} has no lightnets metadata (arch, kwargs); load it with create_model(name, weights=...)"
        )
    model = create_model(meta["arch"], weights=str(path), **meta.get("kwargs", {}))
    return model.eval(), meta
