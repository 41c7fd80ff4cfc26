"""What every converter shares: the error type, the families it can target, loading converted tensors into a
lightnets model strictly, and writing the result as a normal lightnets checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import make_preprocessing
from ..registry import create_model
from ..train.checkpoint import save_checkpoint

#: ``--model`` values: the registry's base name of each family a TF / Keras file can hold.
FAMILIES: tuple[str, ...] = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")

#: x / 127.5 - 1 on 0..255 pixels (Keras's "tf" mode, MobileNetV3's built-in Rescaling, TF-slim's inception
#: preprocessing) is (x / 255 - 0.5) / 0.5 in the lightnets preprocessing dict.
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)


class ConvertError(ValueError):
    """A file that cannot be converted: unreadable, of another family, or an architecture not supported."""


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ConvertError(f"--model must be one of {list(FAMILIES)}, got {family!r}")
    return family


def require(module: str) -> Any:
    """Import an optional dependency of ``lightnets[convert]`` or fail with one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConvertError(
            f"converting needs the '{module}' package: pip install 'lightnets[convert]'"
        ) from None


def tf_preprocessing(input_size: int | tuple[int, int], mean: tuple = TF_MEAN, std: tuple = TF_STD) -> dict:
    """The ImageNet eval preprocessing (resize shorter side, centre crop) with TF's normalisation."""
    return make_preprocessing("imagenet", input_size, mean=mean, std=std)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def conv_weight(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """TF's (kh, kw, in, out) kernel as PyTorch's (out, in / groups, kh, kw); a depthwise kernel is
    (kh, kw, in, multiplier) in TF and becomes (in * multiplier, 1, kh, kw)."""
    if kernel.ndim != 4:
        raise ConvertError(f"expected a 4-D convolution kernel, got shape {kernel.shape}")
    if depthwise:
        kh, kw, cin, mult = kernel.shape
        return kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
    return kernel.transpose(3, 2, 0, 1)


def linear_weight(kernel: np.ndarray) -> np.ndarray:
    """A Dense (in, out) kernel or a 1x1 conv (1, 1, in, out) kernel as a Linear's (out, in) weight."""
    if kernel.ndim == 4:
        if kernel.shape[:2] != (1, 1):
            raise ConvertError(f"classifier conv must be 1x1, got kernel shape {kernel.shape}")
        kernel = kernel[0, 0]
    if kernel.ndim != 2:
        raise ConvertError(f"expected a Dense kernel (in, out), got shape {kernel.shape}")
    return kernel.T


def build_and_load(arch: str, kwargs: dict[str, Any], state: Mapping[str, np.ndarray], source: str) -> nn.Module:
    """``create_model(arch, **kwargs)`` with ``state`` loaded; every key and shape must match, and the error
    lists what the model expected against what the file gave."""
    model = create_model(arch, **kwargs)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{name} {items[:6]}{' ...' if len(items) > 6 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch", mismatched)) if items]  # fmt: skip
        raise ConvertError(f"{source} does not fit {arch} with {kwargs}: " + "; ".join(parts))
    full = {k: (to_tensor(v) if k in state else own[k]) for k, v in ((k, state.get(k)) for k in own)}
    model.load_state_dict(full)
    return model.eval()


def write_checkpoint(
    out: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str,
    kwargs: dict[str, Any],
    preprocessing: dict[str, Any],
    classes: list[str] | None,
    converted_from: dict[str, Any],
) -> Path:
    """Save a converted model as a lightnets checkpoint (atomic write); class names default to "0".."N-1"."""
    num_classes = int(kwargs["num_classes"])
    if classes is None:
        classes = [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ConvertError(f"{len(classes)} class names given for a {num_classes}-class model")
    return save_checkpoint(
        out, model, arch=arch, kwargs=kwargs, classes=list(classes), preprocessing=preprocessing,
        converted_from=converted_from,
    )
