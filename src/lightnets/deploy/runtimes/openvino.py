"""OpenVINO IR files (``.xml`` + ``.bin``), converted from the torch model and run with OpenVINO's CPU plugin.

fp32: ``openvino.convert_model`` on the torch model (static batch-1 shape) and ``save_model`` with
``compress_to_fp16=False`` (its default stores fp16 weights, which breaks fp32 parity).  The runner sets
``INFERENCE_PRECISION_HINT=f32``: on CPUs with AMX/AVX512-BF16 OpenVINO otherwise runs in bf16 by default.

int8: NNCF post-training quantization (``nncf.quantize``, performance preset = symmetric int8, per-channel
weights) of the converted model, calibrated on ``ExportRequest.calib``; ``float_layers`` become an NNCF
``IgnoredScope`` over the operations the converter named after those modules (``__module.<name>/...``).

Metadata: in the IR's own ``rt_info`` (``<rt_info><lightnets><metadata>`` in the .xml), read back by
``read_metadata`` without compiling the model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from . import ExportRequest, Format, Runner, register_format
from ._common import batch1_loop, export_ready, require

EXTRA = "openvino"
RT_INFO_PATH = ["lightnets", "metadata"]
#: ``nncf.quantize`` settings of the int8 export: the preset ("performance": symmetric activations, or
#: "mixed": asymmetric activations) and the bias correction (True: NNCF's fast one; False: the full one).
#: Measured with ``benchmarks/int8_agreement.py --select`` (ImageNet ShuffleNetV2 1.0x, 64 calibration train
#: photos, agreement on the 180 other train photos): performance 97.2 % (mean relative logit error 0.142),
#: mixed 97.2 % (0.148), performance + full bias correction 95.0 %, mixed + full 96.1 %: the defaults kept.
PRESET = "performance"
FAST_BIAS_CORRECTION = True


def _convert(model: nn.Module, example: Any) -> Any:
    ov = require("openvino", EXTRA)
    return ov.convert_model(model, example_input=example[:1], input=[tuple(example[:1].shape)])


def _ignored_scope(float_layers: tuple[str, ...]) -> Any:
    """OpenVINO names the operations of a torch module ``__module.<path>/aten::...``: one pattern per layer."""
    nncf = require("nncf", EXTRA)
    patterns = [rf"__module\.{re.escape(name)}(/|\.).*" for name in float_layers]
    return nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None


def _quantize(ov_model: Any, calib: Any, float_layers: tuple[str, ...]) -> Any:
    nncf = require("nncf", EXTRA)
    images = [calib[i : i + 1].numpy() for i in range(calib.shape[0])]  # the model is batch 1
    kwargs: dict[str, Any] = {"preset": nncf.QuantizationPreset(PRESET), "subset_size": len(images),
                              "fast_bias_correction": FAST_BIAS_CORRECTION}  # fmt: skip
    scope = _ignored_scope(float_layers)
    if scope is not None:
        kwargs["ignored_scope"] = scope
    return nncf.quantize(ov_model, nncf.Dataset(images), **kwargs)


def _save(ov_model: Any, out: Path) -> None:
    """``save_model`` into a temporary folder beside ``out``, then rename .bin and .xml into place (the .xml
    last: a reader that finds the .xml finds its weights)."""
    ov = require("openvino", EXTRA)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        xml = Path(tmp) / out.name
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)


def export(req: ExportRequest) -> Path:
    """Write ``req.out_path`` (.xml) and its .bin; the metadata goes into the IR's rt_info."""
    if req.quantize not in (None, "int8"):
        raise ValueError(f"openvino: quantize must be None or 'int8', got {req.quantize!r}")
    out = Path(req.out_path)
    if out.suffix != ".xml":
        raise ValueError(f"openvino: the output file must end in .xml, got {out}")
    ov_model = _convert(export_ready(req.model), req.example)
    if req.quantize == "int8":
        if req.calib is None or req.calib.shape[0] == 0:
            raise ValueError("openvino int8 export needs calibration images (ExportRequest.calib)")
        ov_model = _quantize(ov_model, req.calib, tuple(req.float_layers))
    ov_model.set_rt_info(json.dumps({**req.metadata, "quantize": req.quantize}), RT_INFO_PATH)
    _save(ov_model, out)
    return out


def load(path: Path, threads: int | None = None) -> Runner:
    """OpenVINO's CPU plugin on ``path``: f32 inference precision (no bf16), latency hint, one stream."""
    ov = require("openvino", EXTRA)
    path = Path(path)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ValueError(f"openvino IR not found: {path} and {path.with_suffix('.bin').name} are both needed")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()

    def run_one(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.astype(np.float32, copy=True)

    return batch1_loop(run_one)


def read_metadata(path: Path) -> dict[str, Any]:
    """The lightnets metadata from the IR's rt_info (reads the .xml and .bin, compiles nothing)."""
    ov = require("openvino", EXTRA)
    model = ov.Core().read_model(str(path))
    if not model.has_rt_info(RT_INFO_PATH):
        raise ValueError(f"{path} has no lightnets metadata in its rt_info (not written by lightnets export)")
    return json.loads(model.get_rt_info(RT_INFO_PATH).astype(str))


FORMAT = register_format(
    Format(
        name="openvino",
        suffix=".xml",
        extra=EXTRA,
        export=export,
        load=load,
        read_metadata=read_metadata,
        companions=(".bin",),
        packages=("openvino", "nncf"),
    )
)
