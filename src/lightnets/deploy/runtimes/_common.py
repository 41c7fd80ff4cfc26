"""Small helpers the tflite, openvino and ncnn format modules share: the clear missing-package error, the
export-ready model copy and a batch-1 loop for fixed-shape runtimes (sidecar helpers: ``runtimes``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from ..export_common import require
from ..inference_form import fold_batchnorm, remove_dropout

__all__ = ["batch1_loop", "export_ready", "logits_layer", "require", "with_act_observer"]


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


def with_act_observer(config: Any, observer: str) -> Any:
    """``config`` (a PT2E QuantizationConfig) with its activation observer replaced by ``observer``
    ("histogram" or "minmax"); weights, dtype and ranges unchanged.  Used by the
    executorch and tflite formats (both PT2E)."""
    import dataclasses

    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    observers = {"histogram": HistogramObserver, "minmax": MinMaxObserver}
    if observer not in observers:
        raise ValueError(f"activation observer must be one of {sorted(observers)}, got {observer!r}")
    spec = config.input_activation
    spec = dataclasses.replace(spec, observer_or_fake_quant_ctr=observers[observer].with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=spec, output_activation=spec)


def logits_layer(model: nn.Module) -> str | None:
    """Module name of the ``nn.Linear`` that gives a lightnets model's logits (its ``head_layout``), else None.

    Why a quantizer wants it: an int8 *output* rounds the logits to 256 levels, and top-1 then flips on images
    whose two best classes are closer than one step (measured: 2 of the 153 ants/bees val photos with the
    ImageNet ShuffleNetV2 weights, by rounding the fp32 logits alone)."""
    head = getattr(model, "head_layout", None)
    name = getattr(head, "logits", None) or getattr(head, "classifier", None)
    if not name:
        return None
    try:
        return name if isinstance(model.get_submodule(name), nn.Linear) else None
    except AttributeError:
        return None
