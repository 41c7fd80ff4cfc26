"""The "onnx" format: onnxruntime, fp32 or int8 (static QDQ).

fp32 is the graph of ``lightnets.deploy.onnx_export.onnx_model`` (TorchScript exporter, shape arithmetic folded, batch axis
symbolic).  int8 is that graph through onnxruntime's ``quantize_static``: QDQ format (Quantize/DequantizeLinear
pairs around each quantized operator, which onnxruntime fuses into integer kernels), weights int8 per output
channel, activations uint8 per tensor, min/max ranges calibrated on the real images of the request.  uint8
activations with int8 weights (u8s8) measured faster here than int8 activations (s8s8: 4.8 against 3.6 ms for
ShuffleNetV2 1.0x, 5.2 against 2.4 ms for MobileNetV2 at 224 px on two x86 cores), because x86's VNNI / AVX2
integer dot products take unsigned activations.

Layers kept in float (``ExportRequest.float_layers``, module names of the model) are excluded by node name:
the TorchScript exporter names a node ``/a/a.b/a.b.c/Conv`` for module ``a.b.c``.  The lightnets metadata goes
into the file's ``metadata_props`` (every value a JSON string) and into a sidecar ``<file>.json``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import ExportRequest, Format, atomic_write, register_format, write_sidecar

#: onnxruntime ``quantize_static`` settings of the int8 export (module constants, so the selection benchmark
#: ``benchmarks/int8_agreement.py --select`` can try others): the CalibrationMethod name and ``extra_options``.
#: Measured there (ImageNet ShuffleNetV2 1.0x, calibrated on 64 train photos, agreement with fp32 on the 180
#: other train photos): MinMax 97.8 % (mean relative logit error 0.107), Entropy 97.8 % (0.107), Percentile
#: 96.7 %, MinMax with float Gemm outputs (``OpTypesToExcludeOutputQuantization``) 96.7 % (0.105): MinMax kept.
CALIBRATION = "MinMax"
EXTRA_OPTIONS: dict[str, Any] = {}

__all__ = ["export", "layer_nodes", "load", "node_prefixes", "read_metadata"]


def node_prefixes(module_name: str) -> tuple[str, ...]:
    """The node-name prefixes the TorchScript exporter gives the operators of module ``module_name``.

    One path segment per module level, an index joined to its container's segment: module
    ``stage2.0.branch1.0`` -> ``/stage2/stage2.0/branch1/branch1.0/``.  A module reached through a slice of
    its container (MobileNetV3's ``self.classifier[:3](x)``) lacks the container's own segment:
    ``/classifier.0/``; both forms are returned.
    """
    segments: list[str] = []
    for part in module_name.split("."):
        segments.append(f"{segments[-1]}.{part}" if part.isdigit() and segments else part)
    sliced = [s for i, s in enumerate(segments) if not (i + 1 < len(segments) and segments[i + 1].startswith(s + "."))]
    return tuple(dict.fromkeys("/" + "/".join(form) + "/" for form in (segments, sliced)))


def layer_nodes(proto: Any, module_name: str) -> list[str]:
    """Names of the graph nodes that belong to module ``module_name``."""
    prefixes = node_prefixes(module_name)
    return [n.name for n in proto.graph.node if n.name.startswith(prefixes)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an (N, C, H, W) array, a few images per call."""

    def __init__(self, name: str, images: np.ndarray, batch: int = 8) -> None:
        self._batches = iter([{name: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - only the entropy / percentile calibrators rewind
        raise NotImplementedError


def _quantize(proto: Any, request: ExportRequest) -> Any:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if request.calib is None or len(request.calib) == 0:
        raise ValueError("int8 export needs calibration images (ExportRequest.calib)")
    exclude = {name: layer_nodes(proto, name) for name in request.float_layers}
    unmatched = [name for name, nodes in exclude.items() if not nodes]
    if unmatched:
        raise ValueError(f"onnx: no graph node belongs to the float layer(s) {unmatched}")
    root = logging.getLogger()  # quantize_static logs a "consider pre-processing" notice to the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="lightnets-onnx-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        quantize_static(
            str(src), str(dst), _Reader(proto.graph.input[0].name, request.calib.numpy().astype(np.float32)),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=[n for nodes in exclude.values() for n in nodes],
            calibrate_method=getattr(CalibrationMethod, CALIBRATION), extra_options=dict(EXTRA_OPTIONS),
        )  # fmt: skip
        root.setLevel(level)
        return onnx.load(str(dst))


def export(request: ExportRequest) -> Path:
    """Write the fp32 or int8 ONNX file with the metadata in ``metadata_props`` and a sidecar."""
    from ..export_common import metadata_strings
    from ..onnx_graph import onnx_model

    if request.quantize not in (None, "int8"):
        raise ValueError(f"onnx: quantize must be None or 'int8', got {request.quantize!r}")
    proto = onnx_model(request.model, tuple(request.example.shape))
    if request.quantize == "int8":
        proto = _quantize(proto, request)
    del proto.metadata_props[:]
    for key, value in metadata_strings(request.metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "lightnets"
    path = atomic_write(Path(request.out_path), proto.SerializeToString())
    write_sidecar(path, request.metadata)
    return path


def load(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on ``path`` (every graph optimisation, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run


def read_metadata(path: Path) -> dict[str, Any]:
    from ..export_common import read_metadata as _read

    return _read(path)


FORMAT = register_format(
    Format(name="onnx", suffix=".onnx", extra="export", export=export, load=load, read_metadata=read_metadata,
           packages=("onnx", "onnxruntime"))  # fmt: skip
)
