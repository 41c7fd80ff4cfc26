"""Write a MobileNet V1 / V2 / V3 as a .tflite flatbuffer (tests only), so the converter can be checked against the
TFLite interpreter without files from a model hub.

The graph is TF-slim's: CONV_2D / DEPTHWISE_CONV_2D with SAME padding and fused ReLU6, ADD for residuals, MEAN
over H and W, FULLY_CONNECTED to 1001 classes (index 0 the background class).  V3 adds HARD_SWISH ops after
the convs (TFLite fuses only ReLU / ReLU6), SE blocks as MEAN (keep dims), two 1x1 convs, the hard-sigmoid
``relu6(x + 3) * (1/6)`` as ADD (fused RELU6) and MUL, and a MUL gate; its head is 1x1 convs and a RESHAPE.  Weights come from a lightnets
model with BatchNorm folded, as float32 or as int8 with per-output-channel scales ("dynamic range" files:
float activations, so the interpreter dequantises the same int8 values the converter does).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite
from torch import nn

from lightnets.deploy import fold_batchnorm

_ACT = {nn.ReLU6: tflite.ActivationFunctionType.RELU6, nn.ReLU: tflite.ActivationFunctionType.RELU}


class _Graph:
    def __init__(self, int8: bool, explicit_pad: str | None = None) -> None:
        self.int8 = int8
        self.explicit_pad = explicit_pad
        self.convs = 0
        self.tensors: list[dict] = []
        self.buffers: list[bytes] = [b""]
        self.ops: list[tuple[int, list[int], list[int], int, object]] = []
        self.codes: list[int] = []

    def tensor(self, shape, dtype=tflite.TensorType.FLOAT32, data: bytes | None = None, quant=None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(data)
            buffer = len(self.buffers) - 1
        self.tensors.append({"shape": list(shape), "type": dtype, "buffer": buffer, "quant": quant})
        return len(self.tensors) - 1

    def weight(self, w: np.ndarray, channel_axis: int) -> int:
        if not self.int8:
            return self.tensor(w.shape, data=w.astype(np.float32).tobytes())
        moved = np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)
        scale = np.maximum(np.abs(moved).max(1), 1e-8) / 127.0
        shape = [1] * w.ndim
        shape[channel_axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        return self.tensor(w.shape, tflite.TensorType.INT8, q.tobytes(), (scale, channel_axis))

    def bias(self, b: np.ndarray) -> int:
        return self.tensor(b.shape, data=b.astype(np.float32).tobytes())

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, options_type, options))


def _conv(g: _Graph, x: int, hw: tuple[int, int], conv: nn.Conv2d, act: int) -> tuple[int, tuple[int, int]]:
    bias = conv.bias.detach().numpy() if conv.bias is not None else np.zeros(conv.out_channels, np.float32)
    return _conv_arrays(g, x, hw, conv.weight.detach().numpy(), bias, conv.stride[0], conv.groups, act)


def _conv_arrays(g: _Graph, x: int, hw, w: np.ndarray, bias: np.ndarray, stride: int, groups: int, act: int):
    padding = tflite.Padding.SAME
    if stride > 1 and g.explicit_pad and g.convs > 0:  # Keras: ZeroPadding2D + VALID (the stem stays SAME)
        if g.explicit_pad != "none":  # "none": VALID with no PAD at all (a file the converter must refuse)
            x, hw = _pad(g, x, hw, w.shape[-1])
        padding = tflite.Padding.VALID
    g.convs += 1
    if padding == tflite.Padding.SAME:
        out_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
    else:
        out_hw = ((hw[0] - w.shape[-2]) // stride + 1, (hw[1] - w.shape[-1]) // stride + 1)
    out = g.tensor([1, *out_hw, w.shape[0]])
    b = g.bias(bias)
    if groups > 1:  # depthwise: (C, 1, kh, kw) -> (1, kh, kw, C)
        wt = g.weight(w.transpose(1, 2, 3, 0), 3)
        opts = ("dw", stride, act, padding)
        g.op(tflite.BuiltinOperator.DEPTHWISE_CONV_2D, [x, wt, b], [out],
             tflite.BuiltinOptions.DepthwiseConv2DOptions, opts)
    else:  # (O, I, kh, kw) -> OHWI
        wt = g.weight(w.transpose(0, 2, 3, 1), 0)
        g.op(tflite.BuiltinOperator.CONV_2D, [x, wt, b], [out], tflite.BuiltinOptions.Conv2DOptions,
             ("conv", stride, act, padding))
    return out, out_hw


def _pad(g: _Graph, x: int, hw, kernel: int):
    """A PAD op as Keras's ``correct_pad`` writes it: (k // 2 - adjust, k // 2) per axis, adjust 1 for an even
    axis when the size is known (``explicit_pad="static"``), 1 always when it is not (``"unknown"``)."""
    pads = [[0, 0]]
    for n in hw:
        adjust = 1 - n % 2 if g.explicit_pad == "static" else 1
        pads.append([kernel // 2 - adjust, kernel // 2])
    pads.append([0, 0])
    spec = g.tensor([4, 2], tflite.TensorType.INT32, np.array(pads, np.int32).tobytes())
    new_hw = (hw[0] + sum(pads[1]), hw[1] + sum(pads[2]))
    out = g.tensor([1, *new_hw, g.tensors[x]["shape"][-1]])
    g.op(tflite.BuiltinOperator.PAD, [x, spec], [out], tflite.BuiltinOptions.PadOptions, ("pad",))
    return out, new_hw


def _conv_norm_act(g: _Graph, x: int, hw, seq: nn.Sequential):
    act = seq[2] if len(seq) > 2 else None
    if isinstance(act, nn.Hardswish):  # no fused hard-swish in TFLite: a HARD_SWISH op after the conv
        y, hw = _conv(g, x, hw, seq[0], 0)
        return _unary(g, tflite.BuiltinOperator.HARD_SWISH, y), hw
    return _conv(g, x, hw, seq[0], _ACT.get(type(act), 0))


def _unary(g: _Graph, code: int, x: int) -> int:
    out = g.tensor(g.tensors[x]["shape"])
    g.op(code, [x], [out])
    return out


def _scalar(g: _Graph, value: float) -> int:
    return g.tensor([1], data=np.array([value], np.float32).tobytes())


def _binary(g: _Graph, code: int, a: int, b: int, act: int = 0) -> int:
    """ADD / MUL of ``a`` and ``b`` (broadcast to ``a``'s shape)."""
    out = g.tensor(g.tensors[a]["shape"])
    if code == tflite.BuiltinOperator.ADD:
        g.op(code, [a, b], [out], tflite.BuiltinOptions.AddOptions, ("add", act))
    else:
        g.op(code, [a, b], [out], tflite.BuiltinOptions.MulOptions, ("mul", act))
    return out


def _mean_hw(g: _Graph, x: int, keep_dims: bool) -> int:
    channels = g.tensors[x]["shape"][-1]
    axes = g.tensor([2], tflite.TensorType.INT32, np.array([1, 2], np.int32).tobytes())
    out = g.tensor([1, 1, 1, channels] if keep_dims else [1, channels])
    g.op(tflite.BuiltinOperator.MEAN, [x, axes], [out], tflite.BuiltinOptions.ReducerOptions, ("mean", keep_dims))
    return out


def _squeeze_excite(g: _Graph, x: int, se: nn.Module) -> int:
    """TF-slim's SE: MEAN (keep dims), 1x1 conv + ReLU, 1x1 conv, hard-sigmoid as relu6(x + 3) * (1/6), MUL."""
    s, _ = _conv(g, _mean_hw(g, x, True), (1, 1), se.fc1, tflite.ActivationFunctionType.RELU)
    s, _ = _conv(g, s, (1, 1), se.fc2, 0)
    s = _binary(g, tflite.BuiltinOperator.ADD, s, _scalar(g, 3.0), tflite.ActivationFunctionType.RELU6)
    gate = _binary(g, tflite.BuiltinOperator.MUL, s, _scalar(g, 1.0 / 6.0))
    return _binary(g, tflite.BuiltinOperator.MUL, x, gate)


def _v3(g: _Graph, model: nn.Module, x: int, hw) -> int:
    """A lightnets MobileNetV3 as TF-slim writes it; returns the (1, 1001) logits tensor."""
    for block in model.features:
        if type(block).__name__ != "InvertedResidual":  # stem, last 1x1 conv
            x, hw = _conv_norm_act(g, x, hw, block)
            continue
        y, y_hw = x, hw
        for layer in block.block:
            if type(layer).__name__ == "SqueezeExcite":
                y = _squeeze_excite(g, y, layer)
            else:
                y, y_hw = _conv_norm_act(g, y, y_hw, layer)
        x = _binary(g, tflite.BuiltinOperator.ADD, y, x) if block.use_residual else y
        hw = y_hw
    head, act, logits = model.classifier[0], model.classifier[1], model.classifier[3]
    x, _ = _conv_arrays(g, _mean_hw(g, x, True), (1, 1), head.weight.detach().numpy()[:, :, None, None],
                        head.bias.detach().numpy(), 1, 1, _ACT.get(type(act), 0))  # fmt: skip
    if isinstance(act, nn.Hardswish):
        x = _unary(g, tflite.BuiltinOperator.HARD_SWISH, x)
    w, b = _with_background(logits)
    x, _ = _conv_arrays(g, x, (1, 1), w[:, :, None, None], b, 1, 1, 0)
    shape = g.tensor([2], tflite.TensorType.INT32, np.array([1, w.shape[0]], np.int32).tobytes())
    out = g.tensor([1, w.shape[0]])
    g.op(tflite.BuiltinOperator.RESHAPE, [x, shape], [out], tflite.BuiltinOptions.ReshapeOptions,
         ("reshape", [1, w.shape[0]]))  # fmt: skip
    return out


def _with_background(fc: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's weight and bias with TF-slim's background class prepended at index 0."""
    w, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    w = np.concatenate([np.zeros((1, w.shape[1]), np.float32), w])
    return w, np.concatenate([np.full(1, -5.0, np.float32), b])


def _body(g: _Graph, model: nn.Module, x: int, hw):
    name = type(model).__name__
    for block in model.features:
        if type(block).__name__ == "DepthwiseSeparable":
            x, hw = _conv_norm_act(g, x, hw, block.dw)
            x, hw = _conv_norm_act(g, x, hw, block.pw)
        elif type(block).__name__ == "InvertedResidual":
            inp, y, y_hw = x, x, hw
            layers = list(block.conv)
            for layer in layers:
                if isinstance(layer, nn.Sequential):
                    y, y_hw = _conv_norm_act(g, y, y_hw, layer)
                elif isinstance(layer, nn.Conv2d):  # the linear projection
                    y, y_hw = _conv(g, y, y_hw, layer, 0)
            if block.use_residual:
                y = _binary(g, tflite.BuiltinOperator.ADD, inp, y)
            x, hw = y, y_hw
        else:
            x, hw = _conv_norm_act(g, x, hw, block)
    assert name in ("MobileNetV1", "MobileNetV2"), name
    return x, hw


def write_tflite(model: nn.Module, size: int, int8: bool = False, explicit_pad: str | None = None) -> bytes:
    """``model`` (a lightnets MobileNetV1 / V2 / V3, any padding) as a .tflite file at ``size`` px, 1001
    classes.  V3's classifier is TF-slim's: 1x1 convs after a MEAN, then RESHAPE (int8 too when ``int8``).
    ``explicit_pad`` ("static" / "unknown"): strided convs after the stem as Keras exports them, PAD + VALID
    with ``correct_pad``'s amounts for a model built with / without a known input size ("none": VALID alone)."""
    import copy

    model = copy.deepcopy(model).eval()
    fold_batchnorm(model)
    g = _Graph(int8, explicit_pad)
    x = g.tensor([1, size, size, 3])
    inp = x
    if type(model).__name__ == "MobileNetV3":
        return _serialize(g, [inp], [_v3(g, model, x, (size, size))])
    x, hw = _body(g, model, x, (size, size))
    pooled = _mean_hw(g, x, False)
    w, b = _with_background(model.get_classifier())
    g.int8, was = False, g.int8  # FULLY_CONNECTED stays float: per-channel hybrid FC is not in every runtime
    fw = g.weight(w, 0)
    g.int8 = was
    logits = g.tensor([1, w.shape[0]])
    g.op(tflite.BuiltinOperator.FULLY_CONNECTED, [pooled, fw, g.bias(b)], [logits],
         tflite.BuiltinOptions.FullyConnectedOptions, ("fc",))
    return _serialize(g, [inp], [logits])


def _options(b: flatbuffers.Builder, spec) -> int | None:
    if spec is None:  # ops without options (HARD_SWISH)
        return None
    kind = spec[0]
    new_shape = _ints(b, spec[1]) if kind == "reshape" else None  # vectors go before the table starts
    if kind == "conv":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, spec[3])
        tflite.Conv2DOptionsAddStrideW(b, spec[1])
        tflite.Conv2DOptionsAddStrideH(b, spec[1])
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, spec[2])
        return tflite.Conv2DOptionsEnd(b)
    if kind == "dw":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, spec[3])
        tflite.DepthwiseConv2DOptionsAddStrideW(b, spec[1])
        tflite.DepthwiseConv2DOptionsAddStrideH(b, spec[1])
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, spec[2])
        return tflite.DepthwiseConv2DOptionsEnd(b)
    if kind == "add":
        tflite.AddOptionsStart(b)
        tflite.AddOptionsAddFusedActivationFunction(b, spec[1])
        return tflite.AddOptionsEnd(b)
    if kind == "pad":
        tflite.PadOptionsStart(b)
        return tflite.PadOptionsEnd(b)
    if kind == "mul":
        tflite.MulOptionsStart(b)
        tflite.MulOptionsAddFusedActivationFunction(b, spec[1])
        return tflite.MulOptionsEnd(b)
    if kind == "mean":
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, spec[1])
        return tflite.ReducerOptionsEnd(b)
    if kind == "reshape":
        tflite.ReshapeOptionsStart(b)
        tflite.ReshapeOptionsAddNewShape(b, new_shape)
        return tflite.ReshapeOptionsEnd(b)
    tflite.FullyConnectedOptionsStart(b)
    return tflite.FullyConnectedOptionsEnd(b)


def _ints(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.int32))


def _serialize(g: _Graph, inputs: list[int], outputs: list[int]) -> bytes:
    b = flatbuffers.Builder(1 << 20)
    buffers = []
    for data in g.buffers:
        vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        buffers.append(tflite.BufferEnd(b))
    tensors = []
    for i, t in enumerate(g.tensors):
        name = b.CreateString(f"t{i}")
        shape = _ints(b, t["shape"])
        quant = None
        if t["quant"] is not None:
            scale, axis = t["quant"]
            s = b.CreateNumpyVector(scale.astype(np.float32))
            z = b.CreateNumpyVector(np.zeros(scale.size, np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, s)
            tflite.QuantizationParametersAddZeroPoint(b, z)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["type"])
        tflite.TensorAddBuffer(b, t["buffer"])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensors.append(tflite.TensorEnd(b))
    ops = []
    for code_index, ins, outs, opt_type, spec in g.ops:
        opt = _options(b, spec)
        iv, ov = _ints(b, ins), _ints(b, outs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index)
        tflite.OperatorAddInputs(b, iv)
        tflite.OperatorAddOutputs(b, ov)
        if opt is not None:
            tflite.OperatorAddBuiltinOptionsType(b, opt_type)
            tflite.OperatorAddBuiltinOptions(b, opt)
        ops.append(tflite.OperatorEnd(b))
    codes = []
    for code in g.codes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        codes.append(tflite.OperatorCodeEnd(b))

    def vector(start, items) -> int:
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    tv = vector(tflite.SubGraphStartTensorsVector, tensors)
    ov = vector(tflite.SubGraphStartOperatorsVector, ops)
    iv, outv = _ints(b, inputs), _ints(b, outputs)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tv)
    tflite.SubGraphAddInputs(b, iv)
    tflite.SubGraphAddOutputs(b, outv)
    tflite.SubGraphAddOperators(b, ov)
    sub = tflite.SubGraphEnd(b)
    subs = vector(tflite.ModelStartSubgraphsVector, [sub])
    cv = vector(tflite.ModelStartOperatorCodesVector, codes)
    bv = vector(tflite.ModelStartBuffersVector, buffers)
    desc = b.CreateString("lightnets test writer")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, cv)
    tflite.ModelAddSubgraphs(b, subs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bv)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())
