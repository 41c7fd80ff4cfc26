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

__all__ = [
    "ExportRequest",
    "Format",
    "FORMATS",
    "MODULES",
    "Runner",
    "SUFFIXES",
    "atomic_write",
    "format_for_path",
    "get_format",
    "read_sidecar",
    "sidecar_path",
    "register_format",
    "write_sidecar",
]

#: format name -> the module (``lightnets.deploy.runtimes.<module>``) that registers it; imported lazily by
#: ``get_format`` so a missing optional package only matters for the format that needs it
MODULES: dict[str, str] = {
    "onnx": "onnx",
    "executorch": "executorch",
    "tflite": "tflite",
    "openvino": "openvino",
    "ncnn": "ncnn",
}

#: main-file suffix -> format name, for running an exported file (``lightnets predict FILE``) without importing
#: every format module; a registered format's own ``suffix`` is consulted too (``format_for_path``)
SUFFIXES: dict[str, str] = {".onnx": "onnx", ".pte": "executorch", ".tflite": "tflite", ".xml": "openvino",
                            ".param": "ncnn"}  # fmt: skip


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
    packages: tuple[str, ...] = ()  # import names the runtime needs (availability check without importing them)
    companions: tuple[str, ...] = ()  # suffixes of files kept beside the main one (OpenVINO .xml + .bin)


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    """The registered format ``name``, importing its module on first use (see ``MODULES``)."""
    if name not in FORMATS and name in MODULES:
        import importlib

        try:
            module = importlib.import_module(f"{__name__}.{MODULES[name]}")
            if name not in FORMATS and isinstance(getattr(module, "FORMAT", None), Format):
                register_format(module.FORMAT)  # imported before, then dropped from the registry
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(f"{__name__}."):  # the format module itself is not in this install
                raise ValueError(f"format {name!r} is not available in this lightnets install") from None
            from ..export_common import (
                MissingPackageError,  # an ImportError and a ValueError: one line in the CLI
            )

            raise MissingPackageError(
                f"format {name!r} needs the package {e.name!r}: pip install 'lightnets[{_EXTRAS.get(name, name)}]'"
            ) from None
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; known: {sorted(set(FORMATS) | set(MODULES))}")
    return FORMATS[name]


#: the pyproject extra of each format (for the error message when its module cannot even be imported)
_EXTRAS = {"onnx": "export", "executorch": "executorch", "tflite": "tflite", "openvino": "openvino", "ncnn": "ncnn"}


def format_for_path(path: str | Path) -> str | None:
    """The format name of an exported file, from its suffix (None when no format writes that suffix)."""
    suffix = Path(path).suffix.lower()
    return next((f.name for f in FORMATS.values() if f.suffix == suffix), SUFFIXES.get(suffix))


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``: a reader
    never sees half a file, and a failed write leaves the old one."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sidecar_path(path: Path) -> Path:
    """``<file>.json``: where a format without a metadata field keeps the lightnets metadata."""
    return Path(path).with_name(Path(path).name + ".json")


def write_sidecar(path: Path, metadata: dict[str, Any]) -> Path:
    import json

    return atomic_write(sidecar_path(path), json.dumps(metadata, indent=2) + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    import json

    side = sidecar_path(path)
    if not side.is_file():
        raise ValueError(f"{path} has no metadata file {side.name} beside it (lightnets exports write one)")
    return json.loads(side.read_text())
