"""Making the ONNX graph: ``onnx_model`` traces a model at a fixed batch, folds the shape arithmetic into
constants and makes the batch axis symbolic (see ``lightnets.deploy.onnx_export``'s docstring for why)."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.layers import Conv2dSame, Pool2dSame, fix_same_padding
from .export_common import require

__all__ = ["BATCH_DIM", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "TORCHSCRIPT_OPSETS", "onnx_model"]

DEFAULT_OPSET = 17
#: opsets the TorchScript exporter writes; HardSwish (MobileNetV3) is an ONNX op from opset 14 on
TORCHSCRIPT_OPSETS = range(14, 21)
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "input", "logits", "batch"


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
    onnx = require("onnx")
    input_shape = _check_input_shape(input_shape)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    example = _seeded_input(input_shape)
    if any(isinstance(m, (Conv2dSame, Pool2dSame)) for m in model.modules()):  # constant pads (fix_same_padding)
        model = copy.deepcopy(model).eval()
        fix_same_padding(model, (1, *input_shape[1:]))
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
                require("onnxscript")
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
