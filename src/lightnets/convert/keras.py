"""Keras ``keras.applications`` MobileNet / MobileNetV2 / MobileNetV3 files as lightnets checkpoints.

Reads ``.keras`` (a zip of config.json + model.weights.h5), Keras 3 ``.weights.h5`` and legacy ``.h5`` files
(``model.save("x.h5")`` and ``save_weights`` in the HDF5 layout of Keras 2 / tf.keras) with h5py alone: no
Keras or TensorFlow is imported.  Layers are found by the names keras.applications gives them, also inside a
wrapping model (the tutorial pattern ``Sequential([MobileNetV2(include_top=False), ..., Dense(n)])``, whose
one extra Dense layer becomes the classifier).

What differs between Keras's networks and ours, and the lightnets kwargs that reproduce Keras exactly:

- BatchNorm epsilon 1e-3 (``bn_eps=1e-3`` for V1 / V2; our V3 already uses 1e-3).
- Padding: Keras pads stride-2 convs by TF's SAME rule (``padding="same"``), except MobileNet (V1), whose
  stride-2 depthwise convs always pad one row / column at the bottom / right (``padding="same_even",
  stem_padding="same"``), as do V2 / V3 models built without a fixed input size (V3's default).
- MobileNet (V1) uses ReLU6 (``act_layer="relu6"``; ours defaults to the paper's ReLU) and ``int(c * alpha)``
  widths (equal to our ``make_divisible`` at its alphas 0.25 / 0.5 / 0.75 / 1.0; other alphas are refused with
  the first mismatching layer named).
- MobileNetV3: ``width_policy="keras"`` (stem kept at 16, see ``models/mobilenet_v3.py``).
- Kernels: Conv2D (kh, kw, in, out), DepthwiseConv2D (kh, kw, in, 1), Dense (in, out); the 1x1-conv classifiers
  (V1 ``conv_preds``, V3 ``conv_2`` / ``logits``) become Linear layers.
- Preprocessing: x / 127.5 - 1 on 0..255 pixels, Keras's ``preprocess_input`` for V1 / V2 and V3's built-in
  ``Rescaling`` layer; the checkpoint records it as mean = std = 0.5.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..models.layers import ConvNormAct, SqueezeExcite, make_divisible
from .common import (
    ConvertError,
    build_and_load,
    check_family,
    conv_weight,
    linear_weight,
    require,
    tf_preprocessing,
    write_checkpoint,
)

_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")
_RENAME = {"depthwise_kernel": "kernel"}


class KerasFile(NamedTuple):
    """A Keras file's weights by layer name ({var: array}) and its model config (None in .weights.h5)."""

    layers: dict[str, dict[str, np.ndarray]]
    config: dict[str, Any] | None
    kind: str


def _indexed_vars(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Name a Keras 3 layer's vars (stored as 0, 1, ...) by their order: BatchNorm holds four 1-D vectors."""
    if len(arrays) == 4 and all(a.ndim == 1 for a in arrays):
        return dict(zip(_BN_ORDER, arrays, strict=True))
    return dict(zip(("kernel", "bias"), arrays, strict=False))


def _read_keras3_h5(h5: Any) -> dict[str, dict[str, np.ndarray]]:
    layers: dict[str, dict[str, np.ndarray]] = {}

    def visit(name: str, obj: Any) -> None:
        if not name.endswith("/vars") or not hasattr(obj, "keys") or len(obj) == 0:
            return
        arrays = [np.asarray(obj[str(i)]) for i in range(len(obj))]
        layer = obj.attrs.get("name") or name.split("/")[-2]
        layers[str(layer)] = _indexed_vars(arrays)

    if "layers" not in h5:
        raise ConvertError("no 'layers' group: not a Keras 3 weights file")
    h5["layers"].visititems(lambda n, o: visit(f"layers/{n}", o))
    return layers


def _read_legacy_h5(h5: Any) -> dict[str, dict[str, np.ndarray]]:
    group = h5["model_weights"] if "model_weights" in h5 else h5
    layers: dict[str, dict[str, np.ndarray]] = {}
    for layer_name in group.attrs["layer_names"]:
        layer_group = group[layer_name.decode() if isinstance(layer_name, bytes) else layer_name]
        for weight_name in layer_group.attrs.get("weight_names", []):
            weight_name = weight_name.decode() if isinstance(weight_name, bytes) else str(weight_name)
            parts = weight_name.split("/")
            var = parts[-1].split(":")[0]
            layers.setdefault(parts[-2], {})[_RENAME.get(var, var)] = np.asarray(layer_group[weight_name])
    return layers


def read_keras_file(path: str | os.PathLike) -> KerasFile:
    """Read the weights (and config where the format has one) of a .keras, .weights.h5 or legacy .h5 file."""
    h5py = require("h5py")
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"Keras file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
                with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
                    return KerasFile(_read_keras3_h5(h5), config, "keras")
        with h5py.File(path, "r") as h5:
            if "model_weights" in h5 or "layer_names" in h5.attrs:
                raw = h5.attrs.get("model_config")
                config = json.loads(raw) if raw is not None else None
                return KerasFile(_read_legacy_h5(h5), config, "h5")
            return KerasFile(_read_keras3_h5(h5), None, "weights.h5")
    except ConvertError as e:
        raise ConvertError(f"{path}: {e}") from None
    except (OSError, KeyError, ValueError) as e:
        raise ConvertError(f"cannot read {path} as a Keras file (.keras, .weights.h5, .h5): {e}") from None


def _input_hw(config: dict[str, Any] | None) -> tuple[int | None, int | None] | None:
    """The first InputLayer's (H, W) in a model config (None entries: built without a fixed size)."""
    if config is None:
        return None
    stack = [config]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if node.get("class_name") == "InputLayer":
                cfg = node.get("config", {})
                shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                if shape and len(shape) == 4:
                    return shape[1], shape[2]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


# --------------------------------------------------------------------------- per-family layer names

_SIGNATURES = {  # a layer only that family's keras.applications model has
    "mobilenet_v1": "conv_dw_1",
    "mobilenet_v2": "block_1_expand",
    "mobilenet_v3": "expanded_conv_1_expand",
}


def _detect(layers: dict[str, Any]) -> str:
    found = [f for f, sig in _SIGNATURES.items() if sig in layers]
    if found == ["mobilenet_v3"]:
        return "mobilenet_v3_large" if "expanded_conv_14_project" in layers else "mobilenet_v3_small"
    return found[0] if found else "unknown"


def _conv(state: dict, prefix: str, layer: dict, depthwise: bool = False) -> None:
    state[f"{prefix}.weight"] = conv_weight(layer["kernel"], depthwise)
    if "bias" in layer:
        state[f"{prefix}.bias"] = layer["bias"]


def _bn(state: dict, prefix: str, layer: dict) -> None:
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                         ("running_var", "moving_variance")):  # fmt: skip
        state[f"{prefix}.{ours}"] = layer[theirs]


def _linear(state: dict, prefix: str, layer: dict) -> None:
    state[f"{prefix}.weight"] = linear_weight(layer["kernel"])
    state[f"{prefix}.bias"] = layer["bias"]


class _Mapper:
    """Takes layers out of a Keras file by name, so whatever is left over can be reported."""

    def __init__(self, layers: dict[str, dict[str, np.ndarray]], family: str, source: str) -> None:
        self.layers, self.family, self.source = dict(layers), family, source
        self.state: dict[str, np.ndarray] = {}

    def take(self, name: str) -> dict[str, np.ndarray]:
        try:
            return self.layers.pop(name)
        except KeyError:
            names = sorted(self.layers)
            raise ConvertError(
                f"{self.source} is not a keras.applications {self.family} file: expected layer {name!r}, "
                f"found {len(names)} layers ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); "
                f"it looks like {_detect(self.layers)}"
            ) from None

    def conv_bn(self, prefix: str, conv: str, bn: str, depthwise: bool = False) -> None:
        """A ConvNormAct at ``prefix`` (keys ``prefix.0`` conv, ``prefix.1`` norm) from two Keras layers."""
        _conv(self.state, f"{prefix}.0", self.take(conv), depthwise)
        _bn(self.state, f"{prefix}.1", self.take(bn))

    def head(self, known: str, in_features: int, target: str) -> int:
        """Map the classifier (``known`` name, or one extra Dense layer); returns the class count (0: none)."""
        layer = self.layers.pop(known, None)
        if layer is None:
            extra = {n: v for n, v in self.layers.items() if "kernel" in v}
            if len(extra) > 1:
                raise ConvertError(f"{self.source}: more than one layer beside the {self.family} backbone: "
                                   f"{sorted(extra)} (expected one Dense classifier or none)")  # fmt: skip
            if not extra:
                return 0
            name, layer = next(iter(extra.items()))
            del self.layers[name]
        weight = linear_weight(layer["kernel"])
        if weight.shape[1] != in_features:
            raise ConvertError(f"{self.source}: classifier takes {weight.shape[1]} features, the backbone "
                               f"gives {in_features}")  # fmt: skip
        _linear(self.state, target, layer)
        return int(weight.shape[0])

    def finish(self) -> dict[str, np.ndarray]:
        leftover = sorted(n for n, v in self.layers.items() if v)
        if leftover:
            raise ConvertError(f"{self.source}: layers with weights not in a keras.applications "
                               f"{self.family}: {leftover[:8]}")  # fmt: skip
        return self.state


def _alpha(m: _Mapper, layer: str, table_channels: int, rounding: Any) -> float:
    """The width multiplier that gives ``layer``'s output width: the multiple of 0.05 closest to the ratio
    among those that round to it (the strict load afterwards checks every other layer)."""
    kernel = m.layers.get(layer, {}).get("kernel")
    if kernel is None:
        m.take(layer)  # raises the "not a ... file" error
    out = int(kernel.shape[-1])
    fits = [k / 20 for k in range(1, 61) if rounding(table_channels * k / 20) == out]
    if not fits:
        raise ConvertError(f"{m.source}: {layer} has {out} channels, which no width multiplier gives")
    return min(fits, key=lambda a: abs(a - out / table_channels))


def _v1(m: _Mapper) -> tuple[dict, str]:
    alpha = _alpha(m, "conv_pw_13", 1024, int)  # Keras's V1 widths are int(c * alpha)
    m.conv_bn("features.0", "conv1", "conv1_bn")
    for i in range(1, 14):
        m.conv_bn(f"features.{i}.dw", f"conv_dw_{i}", f"conv_dw_{i}_bn", depthwise=True)
        m.conv_bn(f"features.{i}.pw", f"conv_pw_{i}", f"conv_pw_{i}_bn")
    features = m.state["features.13.pw.1.weight"].shape[0]
    classes = m.head("conv_preds", features, "classifier.1")
    kwargs = {"width_mult": alpha, "act_layer": "relu6", "bn_eps": 1e-3, "padding": "same_even",
              "stem_padding": "same", "num_classes": classes}  # fmt: skip
    return kwargs, "mobilenet_v1"


def _v2(m: _Mapper) -> tuple[dict, str]:
    alpha = _alpha(m, "block_16_project", 320, lambda c: make_divisible(int(c), 8))
    m.conv_bn("features.0", "Conv1", "bn_Conv1")
    for b in range(17):
        name, base = ("expanded_conv", "features.1.conv") if b == 0 else (f"block_{b}", f"features.{b + 1}.conv")
        i = 0
        if b:
            m.conv_bn(f"{base}.0", f"{name}_expand", f"{name}_expand_BN")
            i = 1
        m.conv_bn(f"{base}.{i}", f"{name}_depthwise", f"{name}_depthwise_BN", depthwise=True)
        _conv(m.state, f"{base}.{i + 1}", m.take(f"{name}_project"))
        _bn(m.state, f"{base}.{i + 2}", m.take(f"{name}_project_BN"))
    m.conv_bn("features.18", "Conv_1", "Conv_1_bn")
    classes = m.head("predictions", m.state["features.18.1.weight"].shape[0], "classifier.1")
    return {"width_mult": alpha, "bn_eps": 1e-3, "padding": "same", "num_classes": classes}, "mobilenet_v2"


def _v3(m: _Mapper, large: bool) -> tuple[dict, str]:
    from ..registry import create_model

    last, table_out = ("expanded_conv_14_project", 160) if large else ("expanded_conv_10_project", 96)
    alpha = _alpha(m, last, table_out, make_divisible)
    minimal = not any("squeeze_excite" in n for n in m.layers)
    arch = "mobilenet_v3_large" if large else "mobilenet_v3_small"
    kwargs: dict[str, Any] = {"width_mult": alpha, "width_policy": "keras", "minimalistic": minimal,
                              "padding": "same"}  # fmt: skip
    with torch.device("meta"):
        shape = create_model(arch, **kwargs)  # the block structure to map onto
    m.conv_bn("features.0", "conv", "conv_bn")
    for j, block in enumerate(shape.features[1:-1]):
        name, base = ("expanded_conv", f"features.{j + 1}.block") if j == 0 else (
            f"expanded_conv_{j}", f"features.{j + 1}.block")
        seen_dw = False
        for i, layer in enumerate(block.block):
            if isinstance(layer, SqueezeExcite):
                _conv(m.state, f"{base}.{i}.fc1", m.take(f"{name}_squeeze_excite_conv"))
                _conv(m.state, f"{base}.{i}.fc2", m.take(f"{name}_squeeze_excite_conv_1"))
            elif isinstance(layer, ConvNormAct) and layer[0].groups > 1:
                m.conv_bn(f"{base}.{i}", f"{name}_depthwise", f"{name}_depthwise_bn", depthwise=True)
                seen_dw = True
            else:
                part = "project" if seen_dw else "expand"
                m.conv_bn(f"{base}.{i}", f"{name}_{part}", f"{name}_{part}_bn")
    n = len(shape.features) - 1
    m.conv_bn(f"features.{n}", "conv_1", "conv_1_bn")
    if "conv_2" not in m.layers:
        raise ConvertError(f"{m.source}: MobileNetV3 without its 'conv_2' head layer (include_top=False) is not "
                           "supported: the lightnets MobileNetV3 always has the 1x1 head")  # fmt: skip
    _linear(m.state, "classifier.0", m.take("conv_2"))
    kwargs["num_classes"] = m.head("logits", m.state["classifier.0.weight"].shape[0], "classifier.3")
    return kwargs, arch


def convert_keras(path: str | os.PathLike, family: str) -> tuple[Any, str, dict, dict, dict]:
    """(model, arch, kwargs, preprocessing, info) for a Keras file of ``family``."""
    family = check_family(family)
    keras_file = read_keras_file(path)
    mapper = _Mapper(keras_file.layers, family, str(path))
    if family == "mobilenet_v1":
        kwargs, arch = _v1(mapper)
    elif family == "mobilenet_v2":
        kwargs, arch = _v2(mapper)
    else:
        found = _detect(mapper.layers)
        if found.startswith("mobilenet_v3") and found != family:
            raise ConvertError(f"{path} holds {found}, not {family} (--model {found})")
        kwargs, arch = _v3(mapper, large=family == "mobilenet_v3_large")
    state = mapper.finish()
    hw = _input_hw(keras_file.config)
    if hw is not None and family != "mobilenet_v1" and (hw[0] is None or hw[1] is None):
        kwargs.update(padding="same_even", stem_padding="same")  # Keras's correct_pad without a size
    model = build_and_load(arch, kwargs, state, str(path))
    size = (int(hw[0]), int(hw[1])) if hw is not None and hw[0] and hw[1] else 224
    info = {"format": f"keras ({keras_file.kind})", "file": str(path), "family": family}
    return model, arch, kwargs, tf_preprocessing(size), info


def from_keras(
    path: str | os.PathLike,
    family: str,
    out: str | os.PathLike | None = None,
    classes: list[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Convert a keras.applications MobileNet / V2 / V3 file; returns (model in eval mode, checkpoint fields)
    and, with ``out``, writes the lightnets checkpoint there."""
    model, arch, kwargs, preprocessing, info = convert_keras(path, family)
    fields = {"arch": arch, "kwargs": kwargs, "preprocessing": preprocessing, "classes": classes,
              "converted_from": info}  # fmt: skip
    if out is not None:
        write_checkpoint(out, model, **fields)
    return model, fields
