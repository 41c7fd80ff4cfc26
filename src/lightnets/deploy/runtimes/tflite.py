"""LiteRT (TFLite) files, written with ``litert-torch`` and run with ``ai-edge-litert``'s interpreter.

Layout: the file takes **NHWC** input (``litert_torch.to_channel_last_io``), the layout LiteRT's kernels use,
so on the device no transpose runs in front of the first convolution; the runner transposes the contract's
NCHW input on the host.  The file is written for batch 1 (the device case); the runner loops over a batch.

int8: PT2E post-training static quantization with litert-torch's ``PT2EQuantizer`` (symmetric, per-channel
weights, per-tensor activations), calibrated on ``ExportRequest.calib``.  The int8 file takes int8 input and
gives int8 logits; the runner quantizes / dequantizes with the file's own scale and zero point.

Why the graph is captured with ``torch.export(strict=True)``: the quantizer finds ``torch.cat``, ``add`` and
the fused conv + activation patterns through each node's ``source_fn_stack``, which torch 2.13's default
(non-strict) export no longer records.  Without it the two ``torch.cat`` of every ShuffleNetV2 unit got no
shared scale (the converter warns "Missing quantization parameter") and int8 agreed with fp32 on only 70 % of
the ants/bees photos with the ImageNet weights; with it every cat input and output shares one scale.  Batch
norm is folded first, so conv + ReLU is one quantized op.  Measured after the fix: 95.4 % (32 calibration
photos).  The second concat fix (``SHARE_MOVEMENT_SCALES``): the scale also carries through the channel
shuffle's transpose and the channel split (written as slices), so no QUANTIZE op requantizes between two
units' concats (27 in the ImageNet ShuffleNetV2 1.0x file before, none after).

Metadata: a sidecar ``<file>.tflite.json`` (LiteRT's own metadata needs the deprecated tflite-support
writer; the interpreter does not read it anyway).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import ExportRequest, Format, Runner, read_sidecar, register_format, write_sidecar
from ._common import batch1_loop, export_ready, require, share_scales_through_movement, with_act_observer

EXTRA = "tflite"
#: the activation observer of the int8 export ("histogram": litert-torch's own default; or "minmax").
#: Chosen on held-out train photos (``benchmarks/int8_agreement.py --select``, ImageNet ShuffleNetV2 1.0x,
#: 64 calibration photos, 180 held out): with the scale sharing below, histogram 96.7 % agreement and mean
#: relative logit error 0.114; minmax 94.4 % and 0.158.
ACT_OBSERVER = "histogram"
#: data-movement ops (the channel shuffle's transpose / contiguous, the channel split's slices) take the scale
#: of their input, so that no requantization (a QUANTIZE op int8 -> int8) runs between one ShuffleNetV2
#: unit's concat and the next one's: litert-torch's own propagation stops at ``transpose``, and the ImageNet
#: ShuffleNetV2 1.0x int8 file had 27 QUANTIZE ops, two rounding steps per unit; with the sharing it has none.
#: Held-out train agreement 95.0 % -> 96.7 %, mean relative logit error 0.122 -> 0.114, file 2.68 -> 2.67 MB,
#: batch-1 latency (2 threads, one process) 1.98 -> 1.90 ms.  On the 153 val photos, measured only after the
#: choice: 97.4 % -> 96.1 % (two photos; logit error 0.128 -> 0.119).
SHARE_MOVEMENT_SCALES = True


def _float_layer_filter(float_layers: tuple[str, ...]):
    """A node filter: False for nodes inside one of ``float_layers`` (module names), so they stay float.

    Written here because litert-torch's own ``set_module_name`` refuses ``None`` and matches the
    ``nn_module_stack`` keys, which torch 2.13 fills with ids; the values hold the module paths."""

    def keep_quantized(node: Any) -> bool:
        for path, _type in node.meta.get("nn_module_stack", {}).values():
            if any(path == f or path.startswith(f + ".") for f in float_layers):
                return False
        return True

    return keep_quantized


def _quantizer(float_layers: tuple[str, ...]) -> Any:
    pt2e = require("litert_torch.quantize.pt2e_quantizer", EXTRA, "litert-torch")

    class _Quantizer(pt2e.PT2EQuantizer):
        """litert-torch's quantizer with the global config applied everywhere but ``float_layers``."""

        def _annotate_for_static_quantization_config(self, model: Any) -> Any:
            return self._annotate_all_static_patterns(
                model, self.global_config, _float_layer_filter(float_layers)
            )

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            if SHARE_MOVEMENT_SCALES:
                share_scales_through_movement(model)
            return model

    config = pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    config = with_act_observer(config, ACT_OBSERVER)
    return _Quantizer().set_global(config)


def _quantized_graph(model: nn.Module, example: torch.Tensor, calib: torch.Tensor, quantizer: Any) -> Any:
    """PT2E: capture (strict, see the module docstring), observe on ``calib`` one image at a time (the
    graph is specialised to batch 1), convert to quantize/dequantize form for the LiteRT converter."""
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", EXTRA, "torchao")
    graph = torch.export.export(model, (example,), strict=True).module()
    graph = pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(calib.shape[0]):
            graph(calib[i : i + 1])
    return pt2e.convert_pt2e(graph, fold_quantize=False)


def export(req: ExportRequest) -> Path:
    """Write ``req.out_path`` (.tflite, NHWC input, batch 1) and its metadata sidecar."""
    litert_torch = require("litert_torch", EXTRA, "litert-torch")
    if req.quantize not in (None, "int8"):
        raise ValueError(f"tflite: quantize must be None or 'int8', got {req.quantize!r}")
    nhwc = litert_torch.to_channel_last_io(export_ready(req.model), args=[0]).eval()
    example = req.example[:1].permute(0, 2, 3, 1).contiguous()
    if req.quantize == "int8":
        if req.calib is None or req.calib.shape[0] == 0:
            raise ValueError("tflite int8 export needs calibration images (ExportRequest.calib)")
        calib = req.calib.permute(0, 2, 3, 1).contiguous()
        if SHARE_MOVEMENT_SCALES:  # the channel split as slices (one-output ops that can share a scale)
            from .executorch import slice_channel_split

            slice_channel_split(nhwc)
        # the NHWC wrapper holds the model as ``wrapped``: module paths in the graph gain that prefix
        quantizer = _quantizer(tuple(f"wrapped.{name}" for name in req.float_layers))
        graph = _quantized_graph(nhwc, example, calib, quantizer)
        qcfg = require("litert_torch.quantize.quant_config", EXTRA, "litert-torch")
        edge = litert_torch.convert(graph, (example,), quant_config=qcfg.QuantConfig(pt2e_quantizer=quantizer))
    else:
        edge = litert_torch.convert(nhwc, (example,))
    out = Path(req.out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:  # litert-torch writes only to a path: write beside, then rename (atomic)
        edge.export(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_sidecar(out, {**req.metadata, "layout": "NHWC", "quantize": req.quantize})
    return out


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def load(path: Path, threads: int | None = None) -> Runner:
    """The LiteRT interpreter on ``path`` (XNNPACK on CPU), ``threads`` threads; NCHW float in, logits out."""
    litert = require("ai_edge_litert.interpreter", EXTRA, "ai-edge-litert")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tflite file not found: {path}")
    interp = litert.Interpreter(model_path=str(path), num_threads=threads or None)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

    def run_one(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], _quantize(x.transpose(0, 2, 3, 1), inp))
        interp.invoke()
        return _dequantize(interp.get_tensor(outp["index"]), outp)

    return batch1_loop(run_one)


FORMAT = register_format(
    Format(
        name="tflite",
        suffix=".tflite",
        extra=EXTRA,
        export=export,
        load=load,
        read_metadata=read_sidecar,  # the metadata is the sidecar JSON
        packages=("litert_torch", "ai_edge_litert"),
    )
)
