"""What every export shares: the errors, the ``ExportReport``, optional-package import, and the metadata the
files carry (arch, kwargs, classes, preprocessing: ONNX ``metadata_props``, safetensors header, sidecar JSON)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..util.atomic import write_json

__all__ = [
    "ExportError",
    "ExportReport",
    "MissingPackageError",
    "metadata_strings",
    "read_metadata",
    "require",
    "write_sidecar",
]


class ExportError(ValueError):
    """An export that failed its checks (or could not be made)."""


class MissingPackageError(ImportError, ValueError):
    """An optional package (onnx, onnxruntime, openvino) is not installed; the message says how to get it.

    Also a ValueError, so the CLI reports it as a one-line, user-fixable error."""


@dataclass
class ExportReport:
    """What an export wrote and how it was checked."""

    path: Path
    format: str
    input_shape: tuple[int, int, int, int] | None = None
    opset: int | None = None
    exporter: str | None = None
    max_abs_diff: float | None = None  # onnxruntime vs eager, over ``checked_batch_sizes``
    logit_scale: float | None = None  # max |logit| of the eager reference, to read max_abs_diff against
    checked_batch_sizes: tuple[int, ...] = ()
    op_counts: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    sidecar: Path | None = None
    num_bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["sidecar"] = str(self.sidecar) if self.sidecar else None
        return d


def require(module: str, extra: str = "export", pip_name: str | None = None) -> Any:
    """Import an optional package or raise ``MissingPackageError``: one line naming the pip package and the
    extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pip = pip_name or module
        raise MissingPackageError(
            f"this needs the '{pip}' package: pip install {pip} (or pip install 'lightnets[{extra}]')"
        ) from None


def metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    """Flat string -> string metadata (ONNX metadata_props, safetensors header): non-strings as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items() if v is not None}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The lightnets metadata of an exported ``.onnx`` or ``.safetensors`` file, JSON values decoded."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
    else:
        onnx = require("onnx")
        raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def write_sidecar(path: Path, metadata: dict[str, Any]) -> Path:
    return write_json(path.with_name(path.name + ".json"), metadata, what="metadata file")
