"""Small helpers the tflite, openvino and ncnn format modules share: the clear missing-package error, the
export-ready model copy and a batch-1 loop for fixed-shape runtimes (sidecar helpers: ``runtimes``)."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from ..inference_form import fold_batchnorm, remove_dropout
from ..onnx_export import MissingPackageError


def require(module: str, extra: str, pip_name: str | None = None) -> Any:
    """Import an optional package or raise one clear line naming the pip package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(
            f"this needs the '{pip_name or module}' package: pip install 'lightnets[{extra}]'"
        ) from None


def export_ready(model: nn.Module) -> nn.Module:
    """An eval-mode copy with batch norm folded into the convolutions and dropout removed: the graph every
    converter and quantizer sees (a conv followed directly by its activation is one quantized op)."""
    model = copy.deepcopy(model).eval()
    fold_batchnorm(model)
    remove_dropout(model)
    return model


def batch1_loop(run_one: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a batch-1 call into one over (N, C, H, W): the files are written for batch 1, the device case."""

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected NCHW float32 input, got shape {x.shape}")
        return np.concatenate([run_one(x[i : i + 1]) for i in range(x.shape[0])], axis=0)

    return run
