"""MobileNet V1 / V2 / V3 ``.tflite`` files (TF-slim releases and the like) as lightnets checkpoints.

The flatbuffer is read with the ``tflite`` schema package (no interpreter needed).  Constant weights are
dequantised with each tensor's scale and zero point (per output channel where the file gives several, as int8
per-channel files do; float16 files' DEQUANTIZE ops are followed to their constants).  BatchNorm is already
folded into the convolutions there, so the lightnets model gets identity BatchNorms (weight 1, mean 0,
variance 1 - eps, so ``(x - 0) / sqrt(var + eps)`` is exactly ``x``) that carry the folded bias.

The file's weight-bearing ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, in graph order) are matched one by
one to the lightnets model's convolutions / Linear layers; the width multiplier (and, for V3, minimalistic
and the width policy) is the one whose layer shapes all agree.  A 1001-class classifier (TF-slim's background
class at index 0) loses that row.  Padding: SAME convs give ``padding="same"``; VALID stride-2 convs after an
explicit PAD op (Keras-exported files) give the mode whose pads the file holds: ``"same_even"`` (Keras built
without an input size; preferred where both fit) or ``"same"`` (a static-size ``correct_pad``), the stem
(``stem_padding``) decided on its own; any other padding is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.layers import same_pads
from ..registry import create_model
from .common import ConvertError, build_and_load, check_family, require, tf_preprocessing, write_checkpoint

_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8}
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ACT = {1: "relu", 3: "relu6"}  # tflite ActivationFunctionType: RELU, RELU6
_WIDTHS = {
    "mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v3_large": (0.35, 0.5, 0.75, 1.0, 1.25),
    "mobilenet_v3_small": (0.35, 0.5, 0.75, 1.0, 1.25),
}


def _op_names(tfl: Any) -> dict[int, str]:
    return {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}


class _Graph:
    """The first subgraph of a .tflite file: ops in order, constant tensors dequantised to float32."""

    def __init__(self, path: Path) -> None:
        tfl = require("tflite")
        data = path.read_bytes()
        try:
            self.model = tfl.Model.GetRootAsModel(data, 0)
            self.sub = self.model.Subgraphs(0)
            names = _op_names(tfl)
            self.ops = []
            for i in range(self.sub.OperatorsLength()):
                op = self.sub.Operators(i)
                code = self.model.OperatorCodes(op.OpcodeIndex())
                self.ops.append((names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"), op))
        except Exception as e:  # flatbuffers raises assorted errors on a file that is not one
            raise ConvertError(f"cannot read {path} as a .tflite flatbuffer: {type(e).__name__}: {e}") from None
        self.tfl = tfl
        self.producer = {int(o): (n, op) for n, op in self.ops for o in op.OutputsAsNumpy()}

    def tensor(self, index: int) -> np.ndarray:
        """A constant tensor as float32, dequantised (per channel along its quantized dimension)."""
        t = self.sub.Tensors(index)
        raw = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:  # computed: float16 weights arrive through DEQUANTIZE
            name, op = self.producer.get(index, (None, None))
            if name == "DEQUANTIZE":
                return self.tensor(int(op.InputsAsNumpy()[0]))
            raise ConvertError(f"tensor {t.Name().decode()} is not a constant")
        values = np.frombuffer(raw.tobytes(), _NUMPY_TYPES[t.Type()]).reshape(t.ShapeAsNumpy())
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0 and t.Type() != 0:
            scale, zero = q.ScaleAsNumpy().astype(np.float64), q.ZeroPointAsNumpy().astype(np.float64)
            shape = [1] * values.ndim
            if scale.size > 1:
                shape[q.QuantizedDimension()] = scale.size
            values = (values.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
        return values.astype(np.float32)

    def options(self, op: Any, kind: str) -> Any:
        cls = {"CONV_2D": self.tfl.Conv2DOptions, "DEPTHWISE_CONV_2D": self.tfl.DepthwiseConv2DOptions,
               "FULLY_CONNECTED": self.tfl.FullyConnectedOptions}[kind]  # fmt: skip
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def weight_ops(self) -> list[dict[str, Any]]:
        """Each weight op's kind, PyTorch-layout weight, bias, stride, padding and whether a PAD precedes it."""
        out = []
        for kind, op in self.ops:
            if kind not in _WEIGHT_OPS:
                continue
            inputs = [int(i) for i in op.InputsAsNumpy()]
            w = self.tensor(inputs[1])
            if kind == "CONV_2D":  # OHWI -> OIHW
                w = w.transpose(0, 3, 1, 2)
            elif kind == "DEPTHWISE_CONV_2D":  # 1HWO -> O1HW
                w = w.transpose(3, 0, 1, 2)
            bias = self.tensor(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
            opts = self.options(op, kind)
            stride = opts.StrideH() if kind != "FULLY_CONNECTED" else 1
            same = kind == "FULLY_CONNECTED" or opts.Padding() == 0
            out.append({"kind": kind, "weight": w, "bias": bias, "stride": stride, "same": same,
                        "pads": None if same else self.explicit_pads(inputs[0]),
                        "act": _ACT.get(opts.FusedActivationFunction())})  # fmt: skip
        return out

    def explicit_pads(self, index: int) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
        """(input height, (top, bottom), (left, right)) of the PAD op producing tensor ``index`` (Keras's
        ``ZeroPadding2D`` before a VALID conv), or None where no PAD op produces it."""
        name, op = self.producer.get(index, ("", None))
        if name not in ("PAD", "PADV2"):
            return None
        source, pads = (int(i) for i in op.InputsAsNumpy()[:2])
        p = self.tensor(pads).astype(np.int64).reshape(4, 2)  # NHWC rows of (before, after)
        height = int(self.sub.Tensors(source).ShapeAsNumpy()[1])
        return height, (int(p[1, 0]), int(p[1, 1])), (int(p[2, 0]), int(p[2, 1]))

    def input_details(self) -> tuple[tuple[int, int], int, tuple[float, int] | None]:
        """(input H, W), numpy type code, (scale, zero point) of a quantised input or None."""
        t = self.sub.Tensors(int(self.sub.InputsAsNumpy()[0]))
        shape = t.ShapeAsNumpy()
        q = t.Quantization()
        quant = (float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0])) if q is not None and q.ScaleLength() else None
        return (int(shape[1]), int(shape[2])), t.Type(), quant


def quantized_input_preprocessing(size: tuple[int, int], tensor_type: int, scale: float, zero: int) -> dict:
    """The preprocessing dict equivalent to feeding 0..255 pixels to a quantised input: uint8 takes the pixel
    as q (real = scale * (pixel - zero)); int8 takes pixel - 128."""
    offset = zero + (128 if tensor_type == 9 else 0)
    return tf_preprocessing(size, mean=(offset / 255.0,) * 3, std=(1.0 / (255.0 * scale),) * 3)


def _slots(model: nn.Module) -> list[tuple[str, nn.Module, str | None, nn.Module | None]]:
    """(name, Conv2d or Linear, name and module of the BatchNorm right after it, or None) in module order:
    what the file's weight ops fill."""
    slots: list[tuple[str, nn.Module, str | None, nn.Module | None]] = []
    pending: tuple[str, nn.Module] | None = None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if pending is not None:
                slots.append((*pending, None, None))
            pending = (name, m)
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            slots.append((*pending, name, m))
            pending = None
    if pending is not None:
        slots.append((*pending, None, None))
    return slots


def _norm_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1x1 conv's (out, in, 1, 1) compares equal to a fully connected (out, in)."""
    return shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else shape


def _candidates(family: str) -> list[tuple[str, dict[str, Any]]]:
    arch = family
    out = []
    for width in _WIDTHS[family]:
        if family.startswith("mobilenet_v3"):
            for minimal in (False, True):
                for policy in ("paper", "keras", "torchvision"):
                    out.append((arch, {"width_mult": width, "minimalistic": minimal, "width_policy": policy}))
        else:
            out.append((arch, {"width_mult": width}))
    return out


def _match(family: str, ops: list[dict[str, Any]], path: Path) -> tuple[str, dict[str, Any], list]:
    want = [_norm_shape(tuple(o["weight"].shape)) for o in ops[:-1]]  # the classifier's class count is free
    for arch, kw in _candidates(family):
        with torch.device("meta"):
            model = create_model(arch, num_classes=1, **kw)
        slots = _slots(model)
        have = [_norm_shape(tuple(s[1].weight.shape)) for s in slots[:-1]]
        if have == want and len(slots) == len(ops):
            return arch, kw, slots
    raise ConvertError(
        f"{path}: {len(ops)} weight ops (first shapes {want[:3]}) fit no {family} at widths {_WIDTHS[family]}; "
        "is it another family?"
    )


def _pad_modes(op: dict[str, Any]) -> set[str]:
    """The lightnets padding modes that pad this strided op as the file does."""
    if op["same"]:  # SAME: the runtime pads for each input size, as "same" does
        return {"same"}
    if op["pads"] is None:
        return set()
    height, rows, cols = op["pads"]
    kernel = op["weight"].shape[-1]
    return {mode for mode in ("same_even", "same")  # a static-size ZeroPadding2D equals SAME at that size
            if rows == cols == same_pads(height, kernel, op["stride"], even=mode == "same_even")}  # fmt: skip


def _padding_kwargs(ops: list[dict[str, Any]], path: Path) -> dict[str, str]:
    """``padding`` (and ``stem_padding`` where the stem differs) from the file's strided ops: SAME convs, or
    VALID convs after PAD ops whose amounts are SAME's at that size or the fixed even-size ones (Keras's
    ``correct_pad`` with or without a known input size).  Where both fit (even sizes) "same_even" is kept for
    PAD files: Keras's own network pads that way at any size."""
    strided = [(i, o) for i, o in enumerate(ops) if o["stride"] > 1]
    stem = [o for i, o in strided if i == 0]
    rest = [o for i, o in strided if i > 0]
    modes = set.intersection({"same", "same_even"}, *(_pad_modes(o) for o in rest))
    stem_modes = _pad_modes(stem[0]) if stem else {"same", "same_even"}
    if not modes or not stem_modes:
        bad = next(o for o in ops if o["stride"] > 1 and not _pad_modes(o))
        found = "no PAD op before it" if bad["pads"] is None else f"PAD (input height, rows, cols) {bad['pads']}"
        raise ConvertError(
            f"{path}: a stride-{bad['stride']} {bad['kind']} is VALID with {found}; expected SAME, or a PAD of "
            "TF's SAME amounts (for that size or for an even size)"
        )
    padding = "same_even" if "same_even" in modes and any(not o["same"] for o in rest) else min(modes)
    stem_padding = padding if padding in stem_modes else min(stem_modes)
    return {"padding": padding} if stem_padding == padding else {"padding": padding, "stem_padding": stem_padding}


def convert_tflite(path: str | os.PathLike, family: str) -> tuple[nn.Module, str, dict, dict, dict]:
    """(model, arch, kwargs, preprocessing, info) for a .tflite file of ``family``."""
    family, path = check_family(family), Path(path)
    if not path.is_file():
        raise ConvertError(f".tflite file not found: {path}")
    graph = _Graph(path)
    ops = graph.weight_ops()
    if not ops:
        raise ConvertError(f"{path}: no convolution or fully connected ops")
    arch, kwargs, slots = _match(family, ops, path)
    head = ops[-1]
    head_w = head["weight"].reshape(head["weight"].shape[0], -1)
    head_b = head["bias"] if head["bias"] is not None else np.zeros(head_w.shape[0], np.float32)
    if head_w.shape[0] == 1001:  # TF-slim's background class at index 0
        head_w, head_b = head_w[1:], head_b[1:]
    kwargs.update(_padding_kwargs(ops, path))
    if family == "mobilenet_v1" and ops[0]["act"] == "relu6":
        kwargs["act_layer"] = "relu6"
    kwargs["num_classes"] = int(head_w.shape[0])
    state: dict[str, np.ndarray] = {}
    for (name, layer, bn_name, bn), op in zip(slots, ops, strict=True):
        weight, bias = (head_w, head_b) if op is head else (op["weight"], op["bias"])
        state[f"{name}.weight"] = weight.reshape(layer.weight.shape) if op is not head else weight
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
        if bn is None:
            state[f"{name}.bias"] = bias
            continue
        eps = bn.eps
        state.update({f"{bn_name}.weight": np.ones_like(bias), f"{bn_name}.bias": bias,
                      f"{bn_name}.running_mean": np.zeros_like(bias),
                      f"{bn_name}.running_var": np.full_like(bias, 1.0 - eps)})  # fmt: skip
    model = build_and_load(arch, kwargs, state, str(path))
    size, tensor_type, quant = graph.input_details()
    if quant is not None:
        preprocessing = quantized_input_preprocessing(size, tensor_type, *quant)
    else:
        preprocessing = tf_preprocessing(size)
    info = {"format": "tflite", "file": str(path), "family": family,
            "input": "float" if quant is None else f"quantised (scale {quant[0]:g}, zero point {quant[1]})"}  # fmt: skip
    return model, arch, kwargs, preprocessing, info


def from_tflite(
    path: str | os.PathLike,
    family: str,
    out: str | os.PathLike | None = None,
    classes: list[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert a MobileNet .tflite file; returns (model in eval mode, checkpoint fields) and, with ``out``,
    writes the lightnets checkpoint there."""
    model, arch, kwargs, preprocessing, info = convert_tflite(path, family)
    fields = {"arch": arch, "kwargs": kwargs, "preprocessing": preprocessing, "classes": classes,
              "converted_from": info}  # fmt: skip
    if out is not None:
        write_checkpoint(out, model, **fields)
    return model, fields
