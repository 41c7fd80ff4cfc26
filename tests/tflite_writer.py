"""Write a MobileNet V1 / V2 as a .tflite flatbuffer (tests only), so the converter can be checked against the
TFLite interpreter without files from a model hub.

The graph is TF-slim's: CONV_2D / DEPTHWISE_CONV_2D with SAME padding and fused ReLU6, ADD for residuals, MEAN
over H and W, FULLY_CONNECTED to 1001 classes (index 0 the background class).  Weights come from a lightnets
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
    def __init__(self, int8: bool) -> None:
        self.int8 = int8
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
    w = conv.weight.detach().numpy()
    stride = conv.stride[0]
    out_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
    out = g.tensor([1, *out_hw, w.shape[0]])
    b = g.bias(conv.bias.detach().numpy())
    if conv.groups > 1:  # depthwise: (C, 1, kh, kw) -> (1, kh, kw, C)
        wt = g.weight(w.transpose(1, 2, 3, 0), 3)
        opts = ("dw", stride, act)
        g.op(tflite.BuiltinOperator.DEPTHWISE_CONV_2D, [x, wt, b], [out],
             tflite.BuiltinOptions.DepthwiseConv2DOptions, opts)
    else:  # (O, I, kh, kw) -> OHWI
        wt = g.weight(w.transpose(0, 2, 3, 1), 0)
        g.op(tflite.BuiltinOperator.CONV_2D, [x, wt, b], [out], tflite.BuiltinOptions.Conv2DOptions,
             ("conv", stride, act))
    return out, out_hw


def _conv_norm_act(g: _Graph, x: int, hw, seq: nn.Sequential):
    act = _ACT.get(type(seq[2]), 0) if len(seq) > 2 else 0
    return _conv(g, x, hw, seq[0], act)


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
                out = g.tensor([1, *y_hw, block.out_channels])
                g.op(tflite.BuiltinOperator.ADD, [inp, y], [out], tflite.BuiltinOptions.AddOptions, ("add",))
                y = out
            x, hw = y, y_hw
        else:
            x, hw = _conv_norm_act(g, x, hw, block)
    assert name in ("MobileNetV1", "MobileNetV2"), name
    return x, hw


def write_tflite(model: nn.Module, size: int, int8: bool = False) -> bytes:
    """``model`` (a lightnets MobileNetV1 / V2, any padding) as a .tflite file at ``size`` px, 1001 classes."""
    import copy

    model = copy.deepcopy(model).eval()
    fold_batchnorm(model)
    g = _Graph(int8)
    x = g.tensor([1, size, size, 3])
    inp = x
    x, hw = _body(g, model, x, (size, size))
    channels = model.num_features
    axes = g.tensor([2], tflite.TensorType.INT32, np.array([1, 2], np.int32).tobytes())
    pooled = g.tensor([1, channels])
    g.op(tflite.BuiltinOperator.MEAN, [x, axes], [pooled], tflite.BuiltinOptions.ReducerOptions, ("mean",))
    fc = model.get_classifier()
    w = fc.weight.detach().numpy()
    b = fc.bias.detach().numpy()
    w = np.concatenate([np.zeros((1, w.shape[1]), np.float32), w])  # background class 0
    b = np.concatenate([np.full(1, -5.0, np.float32), b])
    g.int8, was = False, g.int8  # FULLY_CONNECTED stays float: per-channel hybrid FC is not in every runtime
    fw = g.weight(w, 0)
    g.int8 = was
    logits = g.tensor([1, w.shape[0]])
    g.op(tflite.BuiltinOperator.FULLY_CONNECTED, [pooled, fw, g.bias(b)], [logits],
         tflite.BuiltinOptions.FullyConnectedOptions, ("fc",))
    return _serialize(g, [inp], [logits])


def _options(b: flatbuffers.Builder, spec) -> int:
    kind = spec[0]
    if kind == "conv":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, tflite.Padding.SAME)
        tflite.Conv2DOptionsAddStrideW(b, spec[1])
        tflite.Conv2DOptionsAddStrideH(b, spec[1])
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, spec[2])
        return tflite.Conv2DOptionsEnd(b)
    if kind == "dw":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, tflite.Padding.SAME)
        tflite.DepthwiseConv2DOptionsAddStrideW(b, spec[1])
        tflite.DepthwiseConv2DOptionsAddStrideH(b, spec[1])
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, spec[2])
        return tflite.DepthwiseConv2DOptionsEnd(b)
    if kind == "add":
        tflite.AddOptionsStart(b)
        return tflite.AddOptionsEnd(b)
    if kind == "mean":
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, False)
        return tflite.ReducerOptionsEnd(b)
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
