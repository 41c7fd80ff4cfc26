"""Exporting models: ONNX (checked, with an onnxruntime parity check on every export) and safetensors weights.

ONNX
  ``export_onnx`` writes a graph with a dynamic batch axis and then proves it: ``onnx.checker`` (full check,
  with strict shape inference) and onnxruntime against the eager model on random input at two batch sizes,
  max abs diff <= 1e-4.  Any failure raises ``ExportError``; nothing half-checked is left behind.

  How the graph is made.  The model is traced by PyTorch's TorchScript-based exporter at a *fixed* batch
  size (the input shape you give), so every shape computation (``view`` in channel shuffle, ``chunk`` in
  ShuffleNetV2's channel split) is folded into constants: ShuffleNetV2 exports as 169 nodes instead of the
  455 (Shape -> Gather -> Div -> Concat chains) of a dynamic-axes trace.  The batch axis is then made symbolic:
  the input and output get dim 0 = ``"batch"`` and every Reshape whose target keeps the batch on axis 0 gets
  ``-1`` there (its other dims come from ONNX shape inference of the static graph).  The parity check at a
  second batch size proves the relaxation.  BatchNorm is folded into the convolutions and dropout dropped
  by the exporter itself (eval mode).  Channel shuffle becomes Reshape -> Transpose -> Reshape, hard-swish
  ``HardSwish`` and hard-sigmoid ``HardSigmoid`` (opset >= 14), all standard ONNX ops.

  Why that exporter: PyTorch's newer ``torch.onnx.export(dynamo=True)`` gives an equally small graph but
  needs the extra ``onnxscript`` package and took 8-10 s per model on our 2-core machine against about
  1 s; it is available as ``exporter="dynamo"`` (and is the way forward once the TorchScript exporter is
  removed from PyTorch; it also reaches opsets above 20).

safetensors
  ``export_safetensors`` writes the state_dict with ``safetensors.torch.save_file`` (no pickle, no code)
  and the architecture, its keyword arguments, class names and preprocessing as JSON strings in the file's
  metadata; ``load_safetensors`` rebuilds the model from the file alone.

Exports made from a checkpoint carry the class names and preprocessing: in the ONNX file's
``metadata_props`` and in a sidecar ``<file>.json``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..util.atomic import atomic_write
from .export_common import (
    ExportError,
    ExportReport,
    MissingPackageError,
    metadata_strings,
    read_metadata,
    require,
    write_sidecar,
)
from .onnx_graph import DEFAULT_OPSET, _check_input_shape, _seeded_input, onnx_model
from .safetensors_export import export_safetensors, load_safetensors

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "PARITY_ATOL",
    "ExportError",
    "ExportReport",
    "MissingPackageError",
    "check_onnx_parity",
    "export",
    "export_onnx",
    "export_safetensors",
    "load_safetensors",
    "onnx_model",
    "read_metadata",
]

FORMATS = ("onnx", "safetensors")
PARITY_ATOL = 1e-4


def _ort_session(model_bytes: bytes, threads: int | None = None) -> Any:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_onnx_parity(
    model_bytes: bytes,
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    batch_sizes: tuple[int, ...] = (1, 3),
) -> tuple[float, float]:
    """Run the ONNX graph in onnxruntime and the eager model on the same random input at each batch size.

    Returns (max abs difference of the logits, max |logit| of the eager model).
    """
    session = _ort_session(model_bytes)
    was_training = model.training
    model.eval()
    worst, scale = 0.0, 0.0
    try:
        for i, batch in enumerate(batch_sizes):
            x = _seeded_input((batch, *input_shape[1:]), seed=1 + i)
            ref = model(x)
            try:
                (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            except Exception as e:  # onnxruntime raises its own exception types
                raise ExportError(f"onnxruntime cannot run the export at batch {batch}: {e}") from None
            if got.shape != tuple(ref.shape):
                raise ExportError(
                    f"onnxruntime gives shape {got.shape} at batch {batch}, eager {tuple(ref.shape)}"
                )
            worst = max(worst, float(np.abs(got - ref.numpy()).max()))
            scale = max(scale, float(ref.abs().max()))
    finally:
        model.train(was_training)
    return worst, scale


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_shape: tuple[int, int, int, int],
    opset: int | None = None,
    check: bool = True,
    metadata: dict[str, Any] | None = None,
    exporter: str = "torchscript",
    parity_atol: float = PARITY_ATOL,
) -> ExportReport:
    """Export ``model`` to an ONNX file with a dynamic batch axis, checked (see the module docstring).

    ``input_shape`` is (batch, channels, height, width); channels and size are fixed in the graph, the batch
    is not.  ``metadata`` (arch, classes, preprocessing, ...) goes into ``metadata_props`` and a sidecar
    ``<path>.json``.  With ``check=True`` (the default) the file is written only after ``onnx.checker`` and
    the onnxruntime parity check (batch sizes ``input_shape[0]`` and ``input_shape[0] + 2``) pass.
    """
    onnx = require("onnx")
    start = time.perf_counter()
    input_shape = _check_input_shape(input_shape)
    path = Path(path)
    proto = onnx_model(model, input_shape, opset=opset, exporter=exporter)
    meta = {**(metadata or {}), "input_shape": list(input_shape)}
    for key, value in metadata_strings(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    report = ExportReport(
        path=path,
        format="onnx",
        input_shape=input_shape,
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        exporter=exporter,
        op_counts=dict(
            Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in proto.graph.node)
        ),
        metadata=meta,
    )
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"onnx.checker rejected the export of {type(model).__name__}: {e}") from None
        batches = (input_shape[0], input_shape[0] + 2)
        report.max_abs_diff, report.logit_scale = check_onnx_parity(data, model, input_shape, batches)
        report.checked_batch_sizes = batches
        if not report.max_abs_diff <= parity_atol:
            raise ExportError(
                f"onnxruntime output differs from eager by {report.max_abs_diff:.3g} (> {parity_atol:g}) for "
                f"{type(model).__name__} at batch sizes {batches}; the export was not written"
            )
    atomic_write(path, data, what="ONNX file")
    if metadata:
        report.sidecar = write_sidecar(path, meta)
    report.num_bytes = len(data)
    report.seconds = time.perf_counter() - start
    return report


def _resolve_source(
    source: str | os.PathLike,
) -> tuple[nn.Module, dict[str, Any], tuple[int, int, int, int] | None]:
    """(model, metadata, input shape or None) from a checkpoint file, a run directory or a registry name."""
    from ..registry import create_model, get_card
    from ..train.checkpoint import load_checkpoint, model_from_checkpoint

    if Path(source).exists():
        model, ckpt = model_from_checkpoint(load_checkpoint(source))
        prep = ckpt["preprocessing"]
        chans = int(prep.get("in_chans", ckpt["kwargs"].get("in_chans", 3)))
        height, width = (int(s) for s in prep["input_size"])
        meta = {
            "arch": ckpt["arch"],
            "kwargs": ckpt["kwargs"],
            "classes": ckpt["classes"],
            "preprocessing": prep,
        }
        return model, meta, (1, chans, height, width)
    name = str(source)
    card = get_card(name)  # ValueError naming close matches when unknown
    model = create_model(name).eval()
    chans = int(card.kwargs.get("in_chans", 3))
    return model, {"arch": name, "kwargs": dict(card.kwargs)}, (1, chans, card.input_size, card.input_size)


def export(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    format: str = "onnx",
    input_size: int | tuple[int, int] | None = None,
    opset: int | None = None,
    check: bool = True,
) -> ExportReport:
    """Export a checkpoint (file or run directory) or a registered model name (random weights) -- ``lightnets export``.

    From a checkpoint the input size and channels come from its preprocessing, and the export carries its
    class names and preprocessing.  ``input_size`` (N or (H, W)) overrides the size.  The default output is
    ``<checkpoint or name>.<format>`` beside the checkpoint / in the current directory.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if output is not None and Path(output).is_dir():
        raise ValueError(f"output {output} is a directory; give a file name, e.g. {Path(output) / ('model.' + format)}")
    model, meta, shape = _resolve_source(source)
    if input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        shape = (1, shape[1], int(h), int(w))
    if output is None:
        src = Path(source)
        base = src / "model" if src.is_dir() else src.with_suffix("") if src.exists() else Path(str(source))
        output = base.with_name(base.name + "." + format)
    if format == "safetensors":
        return export_safetensors(model, output, arch=meta["arch"], kwargs=meta["kwargs"], classes=meta.get("classes"),
                                  preprocessing=meta.get("preprocessing"), sidecar="classes" in meta)  # fmt: skip
    return export_onnx(model, output, input_shape=shape, opset=opset, check=check, metadata=meta)
