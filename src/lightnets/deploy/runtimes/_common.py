"""Small helpers the tflite, openvino and ncnn format modules share: the clear missing-package error, the
export-ready model copy and a batch-1 loop for fixed-shape runtimes (sidecar helpers: ``runtimes``)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from torch import nn

from ..export_common import require
from ..inference_form import fold_batchnorm, remove_dropout

__all__ = ["batch1_loop", "export_ready", "require"]


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
