"""The preprocessing dict: a plain description of evaluation preprocessing, complete enough that a
checkpoint can carry it and ``transforms.eval_transform(preprocessing)`` rebuilds exactly the transform the
model was evaluated with; the two presets that make one (``make_preprocessing``) and its validation
(``check_preprocessing``).

The preprocessing dict (every value a plain int/float/str/list, so it survives JSON and
``torch.load(weights_only=True)``)::

    {
        "preset": "imagenet" | "small",      # which training augmentation goes with it
        "input_size": [H, W],                # what the model sees
        "resize": "shorter" | "exact",       # shorter side to resize_size then centre crop, or straight to H x W
        "resize_size": int | None,           # shorter side for "shorter" (default floor(input / 0.875)); None for "exact"
        "interpolation": "bilinear",         # nearest | bilinear | bicubic | lanczos (PIL filters, antialiased)
        "mean": [...], "std": [...],         # one per channel, applied to pixels scaled to [0, 1]
        "mode": "RGB" | "L", "in_chans": 3 | 1,
        "value_scale": 255.0,                # uint8 pixels are divided by this before normalisation
    }

Images are RGB in channel order R, G, B (never BGR), values divided by 255, then ``(x - mean) / std``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# A neutral normalisation for data without published statistics: maps [0, 1] to [-1, 1].
HALF_MEAN: tuple[float] = (0.5,)
HALF_STD: tuple[float] = (0.5,)
# Share of the resized image kept by the ImageNet centre crop (224 of 256), as in torchvision's and timm's recipes.
DEFAULT_CROP_PCT = 0.875

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# F.interpolate modes for the same filters; "nearest-exact" samples pixel centres as PIL does.
TENSOR_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
_MODES = {"RGB": 3, "L": 1}
_PRESETS = ("imagenet", "small")
_RESIZES = ("shorter", "exact")


# --------------------------------------------------------------------------- the preprocessing dict


def _size_hw(size: int | Sequence[int], what: str = "input_size") -> list[int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = [int(size), int(size)]
    elif (
        isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size)
    ):
        hw = [int(size[0]), int(size[1])]
    else:
        raise ValueError(f"{what} must be an int or (height, width), got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return hw


def mode_for_chans(in_chans: int) -> str:
    """The Pillow mode images are decoded to for a model with ``in_chans`` input channels."""
    for mode, chans in _MODES.items():
        if chans == in_chans:
            return mode
    raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB) for image data, got {in_chans!r}")


def make_preprocessing(
    preset: str = "imagenet",
    input_size: int | Sequence[int] = 224,
    *,
    resize_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = "bilinear",
    in_chans: int = 3,
) -> dict[str, Any]:
    """The preprocessing dict for a preset.

    ``imagenet``: resize the shorter side to ``resize_size`` (default ``floor(input / 0.875)``, 256 for 224),
    centre crop ``input_size``.  ``small`` (28-64 px datasets): resize straight to ``input_size`` when the image
    is not already that size, no crop.  ``mean``/``std`` default to ImageNet's for RGB and (0.5,)/(0.5,) for
    grayscale.
    """
    if preset not in _PRESETS:
        raise ValueError(f"preset must be one of {_PRESETS}, got {preset!r}")
    mode = mode_for_chans(in_chans)
    hw = _size_hw(input_size)
    if preset == "imagenet":
        resize = "shorter"
        if resize_size is None:
            resize_size = int(math.floor(min(hw) / DEFAULT_CROP_PCT))
    else:
        resize = "exact"
        if resize_size is not None:
            raise ValueError("the 'small' preset resizes straight to input_size; resize_size must be None")
    if mean is None:
        mean = IMAGENET_MEAN if in_chans == 3 else HALF_MEAN
    if std is None:
        std = IMAGENET_STD if in_chans == 3 else HALF_STD
    return check_preprocessing(
        {
            "preset": preset,
            "input_size": hw,
            "resize": resize,
            "resize_size": resize_size,
            "interpolation": interpolation,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "mode": mode,
            "in_chans": in_chans,
            "value_scale": 255.0,
        }
    )


def check_preprocessing(p: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a preprocessing dict (e.g. read from a checkpoint) and return a normalised plain copy.

    Raises ValueError naming the first bad or missing key.
    """
    required = ("input_size", "resize", "interpolation", "mean", "std", "mode")
    missing = [k for k in required if k not in p]
    if missing:
        raise ValueError(f"preprocessing lacks keys {missing} (has {sorted(p)})")
    out = dict(p)
    out["input_size"] = _size_hw(p["input_size"])
    if out["resize"] not in _RESIZES:
        raise ValueError(f"preprocessing['resize'] must be one of {_RESIZES}, got {out['resize']!r}")
    if out["resize"] == "shorter":
        rs = out.get("resize_size")
        if not isinstance(rs, (int, np.integer)) or isinstance(rs, bool) or rs < min(out["input_size"]):
            raise ValueError(
                f"preprocessing['resize_size'] must be an int >= the crop {out['input_size']}, got {rs!r}"
            )
        out["resize_size"] = int(rs)
    else:
        out["resize_size"] = None
    if out["interpolation"] not in _PIL_FILTERS:
        raise ValueError(
            f"preprocessing['interpolation'] must be one of {list(_PIL_FILTERS)}, got {out['interpolation']!r}"
        )
    if out["mode"] not in _MODES:
        raise ValueError(f"preprocessing['mode'] must be one of {list(_MODES)}, got {out['mode']!r}")
    chans = _MODES[out["mode"]]
    if out.get("in_chans", chans) != chans:
        raise ValueError(f"preprocessing has mode {out['mode']!r} but in_chans={out['in_chans']!r}")
    out["in_chans"] = chans
    for key in ("mean", "std"):
        values = [float(v) for v in out[key]]
        if len(values) != chans:
            raise ValueError(
                f"preprocessing['{key}'] needs {chans} values for mode {out['mode']}, got {values}"
            )
        out[key] = values
    if min(out["std"]) <= 0:
        raise ValueError(f"preprocessing['std'] must be positive, got {out['std']}")
    out["value_scale"] = float(out.get("value_scale", 255.0))
    out.setdefault("preset", "imagenet" if out["resize"] == "shorter" else "small")
    if out["preset"] not in _PRESETS:
        raise ValueError(f"preprocessing['preset'] must be one of {_PRESETS}, got {out['preset']!r}")
    return out


# --------------------------------------------------------------------------- mode conversion
