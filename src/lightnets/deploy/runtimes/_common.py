"""Small helpers the tflite, openvino and ncnn format modules share: the clear missing-package error, the
export-ready model copy and a batch-1 loop for fixed-shape runtimes (sidecar helpers: ``runtimes``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..export_common import require
from ..inference_form import fold_batchnorm, remove_dropout

__all__ = ["MOVEMENT_OPS", "batch1_loop", "export_ready", "logits_layer", "require", "share_scales_through_movement",
           "with_act_observer"]  # fmt: skip


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

#: ops that only move data: the channel shuffle's view / transpose / contiguous, the channel split's slices
MOVEMENT_OPS = (torch.ops.aten.transpose.int, torch.ops.aten.contiguous.default, torch.ops.aten.slice.Tensor,
                torch.ops.aten.reshape.default, torch.ops.aten.view.default)  # fmt: skip


def share_scales_through_movement(model: Any) -> None:
    """Annotate every not yet annotated data-movement node (``MOVEMENT_OPS``) whose input has a quantized
    output with that input's scale (a SharedQuantizationSpec), in graph order, so chains share one scale.
    Run after a PT2E quantizer's own annotation: it fills the gaps its propagation leaves (litert-torch's
    stops at ``transpose``, XNNPACK's at ``contiguous``), so no requantization runs between two concats."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in MOVEMENT_OPS or not isinstance(node.args[0], torch.fx.Node):
            continue
        note = node.meta.get("quantization_annotation")
        prev = node.args[0].meta.get("quantization_annotation")
        if (note is not None and note._annotated) or prev is None or prev.output_qspec is None:
            continue
        shared = SharedQuantizationSpec(node.args[0])
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={node.args[0]: shared}, output_qspec=shared, _annotated=True
        )
