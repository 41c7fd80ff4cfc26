"""On-device formats: one small module per runtime, all behind the same contract.

Each format module (``onnx_int8``, ``executorch``, ``tflite``, ``openvino``, ``ncnn``) registers a
:class:`Format` with :func:`register_format`.  A format knows three things and nothing else:

- ``export(request) -> Path``: write the file(s) for an fp32 or int8 model (``ExportRequest``), with the
  lightnets metadata (arch, kwargs, classes, preprocessing) in the format's own metadata where it has a
  place for it, else in a sidecar ``<file>.json``;
- ``load(path, threads) -> Runner``: run a written file in the format's *own* runtime (onnxruntime,
  the LiteRT interpreter, ExecuTorch's runtime, ncnn, OpenVINO);
- ``read_metadata(path) -> dict``: the lightnets metadata back from the file.

The runner contract hides every layout and dtype detail of the runtime: it takes float32 NCHW input already
normalised with the recorded preprocessing and returns float32 logits (N, classes).  A runtime that wants
NHWC, int8 input or a fixed batch converts inside the runner.  Checking (parity, accuracy, latency, the
report) lives in one place above the formats, never in a format module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = ["ExportRequest", "Format", "FORMATS", "Runner", "get_format", "register_format"]


@dataclass(frozen=True)
class ExportRequest:
    """What a format needs to write one file."""

    model: nn.Module  # fp32, eval mode, CPU; the format may copy and transform it (fold BN, quantize)
    example: torch.Tensor  # (1, C, H, W) normalised input at the export size
    out_path: Path  # where the main file goes (the format may add siblings, e.g. ncnn's .param + .bin)
    metadata: dict[str, Any]  # arch, kwargs, classes, preprocessing, input_shape: embed or write a sidecar
    quantize: str | None = None  # None (fp32) or "int8"
    calib: torch.Tensor | None = None  # (N, C, H, W) normalised real images for int8 calibration
    float_layers: tuple[str, ...] = field(default=())  # module names of ``model`` kept in float (int8 fallback)


class Runner(Protocol):
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalised images -> float32 logits (N, classes)."""
        ...


@dataclass(frozen=True)
class Format:
    name: str  # "onnx", "executorch", "tflite", "openvino", "ncnn"
    suffix: str  # suffix of the main file, e.g. ".pte"
    extra: str  # the pyproject extra that installs its packages
    export: Callable[[ExportRequest], Path]
    load: Callable[[Path, int | None], Runner]
    read_metadata: Callable[[Path], dict[str, Any]]
    supports_int8: bool = True


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]
