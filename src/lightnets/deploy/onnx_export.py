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

import io
import json
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..util.atomic import atomic_write, write_json

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
DEFAULT_OPSET = 17
#: opsets the TorchScript exporter writes; HardSwish (MobileNetV3) is an ONNX op from opset 14 on
TORCHSCRIPT_OPSETS = range(14, 21)
PARITY_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "input", "logits", "batch"
SAFETENSORS_FORMAT = "lightnets-safetensors"


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


def _require(module: str, extra: str = "export") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(
            f"this needs the '{module}' package: pip install {module} (or pip install 'lightnets[{extra}]')"
        ) from None


def _check_input_shape(input_shape: Any) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(
            f"input_shape must be (batch, channels, height, width) with positive sizes, got {input_shape!r}"
        )
    return shape  # type: ignore[return-value]


def _seeded_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


_SHAPE_ARITHMETIC = frozenset(
    {"Gather", "Add", "Sub", "Mul", "Div", "Cast", "Unsqueeze", "Squeeze", "Concat", "Slice", "Range"}
)
_FOLD_MAX_ELEMENTS = 64  # shape arithmetic only; tensors larger than this (weights) are never folded


def _fold_shape_arithmetic(proto: Any) -> Any:
    """Fold the static graph's shape arithmetic (Shape -> Gather -> Div ... -> Slice inputs) into constants,
    and route Identity nodes on initializers straight to the initializer.

    The TorchScript exporter leaves ``chunk``'s split points as arithmetic on ``Shape``, which onnx's shape
    inference cannot see through (so the Slice outputs have unknown shapes).  On the fixed-shape graph every
    ``Shape`` is known, and each small all-constant node is evaluated with onnx's reference evaluator.
    """
    from onnx import numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    static = shape_inference.infer_shapes(proto).graph
    shapes = {}
    for vi in (*static.value_info, *static.input, *static.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.HasField("shape") and None not in dims:
            shapes[vi.name] = dims
    initializers = {init.name for init in graph.initializer}
    known = {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if np.prod(init.dims) <= _FOLD_MAX_ELEMENTS
    }
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        value = None
        if node.op_type == "Constant" and not node.input:
            value = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" else None
        elif node.op_type == "Shape" and node.input[0] in shapes:
            attrs = {a.name: a.i for a in node.attribute}
            dims = shapes[node.input[0]]
            value = np.array(dims[attrs.get("start", 0) : attrs.get("end", len(dims))], dtype=np.int64)
        elif node.op_type == "Identity" and node.input[0] in initializers:
            rename[node.output[0]] = node.input[0]
            continue
        elif node.op_type in _SHAPE_ARITHMETIC and node.input and all(i in known for i in node.input if i):
            feeds = {i: known[i] for i in node.input if i}
            value = ReferenceEvaluator(node).run(None, feeds)[0]
        if (
            value is None
            or np.size(value) > _FOLD_MAX_ELEMENTS
            or node.output[0] in {o.name for o in graph.output}
        ):
            kept.append(node)
            continue
        known[node.output[0]] = np.asarray(value)
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), node.output[0]))
        initializers.add(node.output[0])
    for output in graph.output:
        if output.name in rename:  # keep an Identity that feeds a graph output directly
            kept.append(next(n for n in graph.node if n.output and n.output[0] == output.name))
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph)
    return proto


def _relax_batch(proto: Any, batch: int) -> Any:
    """Make axis 0 of a graph traced at a fixed ``batch`` symbolic (see the module docstring)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    graph = proto.graph
    static = shape_inference.infer_shapes(proto)
    shapes = {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in (*static.graph.value_info, *static.graph.input, *static.graph.output)
    }
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        src, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not out or out[0] != batch or any(d is None for d in out) or (src and src[0] not in (None, batch)):
            continue
        target = f"{node.output[0]}__batchless_shape"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, *out[1:]], dtype=np.int64), target))
        node.input[1] = target
    for vi in (*graph.input, *graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # the static shapes are stale now; re-inferred below
    _drop_unused(graph)
    return onnx.shape_inference.infer_shapes(proto)


def _drop_unused(graph: Any) -> None:
    """Remove nodes and initializers nothing reads (the replaced Reshape targets)."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        for n in dead:
            graph.node.remove(n)
        if not dead:
            break
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def onnx_model(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    opset: int | None = None,
    exporter: str = "torchscript",
    dynamic_batch: bool = True,
) -> Any:
    """The model as an in-memory ``onnx.ModelProto`` (eval mode, batch axis symbolic unless told otherwise).

    ``model`` is put in eval mode for the trace and restored afterwards.  No checks are run here; see
    ``export_onnx``.
    """
    onnx = _require("onnx")
    input_shape = _check_input_shape(input_shape)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    example = _seeded_input(input_shape)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # TracerWarning: shape checks in the models (e.g. channel_shuffle's divisibility test) become constants,
            # which is what we want for a fixed-shape trace; DeprecationWarning: the exporter's own notice.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            if exporter == "torchscript":
                if opset < TORCHSCRIPT_OPSETS.start:
                    raise ValueError(
                        f"opset {opset} is too old: lightnets exports need opset >= 14 (ONNX HardSwish)"
                    )
                if opset not in TORCHSCRIPT_OPSETS:
                    raise ValueError(
                        f"opset {opset} is newer than the TorchScript exporter writes (<= {TORCHSCRIPT_OPSETS.stop - 1}); "
                        "use exporter='dynamo' (needs the onnxscript package)"
                    )
                buf = io.BytesIO()
                torch.onnx.export(
                    model, (example,), buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                )  # fmt: skip
                proto = _fold_shape_arithmetic(onnx.load_from_string(buf.getvalue()))
                if dynamic_batch:
                    proto = _relax_batch(proto, input_shape[0])
            elif exporter == "dynamo":
                _require("onnxscript")
                dims = ({0: torch.export.Dim(BATCH_DIM, min=1)},) if dynamic_batch else None
                program = torch.onnx.export(
                    model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME], dynamic_shapes=dims, verbose=False,
                )  # fmt: skip
                proto = program.model_proto
            else:
                raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    finally:
        model.train(was_training)
    proto.producer_name = "lightnets"
    return proto


def _ort_session(model_bytes: bytes, threads: int | None = None) -> Any:
    ort = _require("onnxruntime")
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


def _metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
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
        onnx = _require("onnx")
        raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _write_sidecar(path: Path, metadata: dict[str, Any]) -> Path:
    return write_json(path.with_name(path.name + ".json"), metadata, what="metadata file")


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
    onnx = _require("onnx")
    start = time.perf_counter()
    input_shape = _check_input_shape(input_shape)
    path = Path(path)
    proto = onnx_model(model, input_shape, opset=opset, exporter=exporter)
    meta = {**(metadata or {}), "input_shape": list(input_shape)}
    for key, value in _metadata_strings(meta).items():
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
        report.sidecar = _write_sidecar(path, meta)
    report.num_bytes = len(data)
    report.seconds = time.perf_counter() - start
    return report


def export_safetensors(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    arch: str,
    kwargs: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    sidecar: bool = False,
) -> ExportReport:
    """Write ``model``'s weights as safetensors with arch / kwargs / classes / preprocessing in its metadata."""
    from safetensors.torch import save

    start = time.perf_counter()
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": SAFETENSORS_FORMAT, "arch": arch, "kwargs": dict(kwargs or {})}
    if classes is not None:
        meta["classes"] = list(classes)
    if preprocessing is not None:
        meta["preprocessing"] = dict(preprocessing)
    atomic_write(path, save(state, metadata=_metadata_strings(meta)), what="safetensors file")
    report = ExportReport(path=path, format="safetensors", metadata=meta, num_bytes=path.stat().st_size)
    if sidecar:
        report.sidecar = _write_sidecar(path, meta)
    report.seconds = time.perf_counter() - start
    return report


def load_safetensors(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model (eval mode) from a file written by ``export_safetensors``; returns (model, metadata)."""
    from ..registry import create_model

    meta = read_metadata(path)
    if meta.get("format") != SAFETENSORS_FORMAT or "arch" not in meta:
        raise ExportError(
            f"{path} has no lightnets metadata (arch, kwargs); load it with create_model(name, weights=...)"
        )
    model = create_model(meta["arch"], weights=str(path), **meta.get("kwargs", {}))
    return model.eval(), meta


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
