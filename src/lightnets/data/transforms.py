"""Per-image transforms on Pillow images: mode conversion, resize, crops, flip, to-tensor, normalise, and
the two presets built from a preprocessing dict (``eval_transform``, ``train_transform``).

The transforms are written here on Pillow, numpy and torch because the project does not depend on
torchvision.  Where torchvision has the same operation, the arithmetic follows its documented behaviour
(shorter-side resize ``long = int(size * long / short)``, centre-crop offset ``int(round((H - h) / 2))``,
RandomResizedCrop's ten tries at a scale/log-ratio draw and its centre-crop fallback), so numbers quoted for
torchvision's recipes apply.

The preprocessing dict itself (make_preprocessing, check_preprocessing, the statistics) lives in
``lightnets.data.preprocessing``; its public names are importable from here too, where other packages and
scripts have always imported them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .preprocessing import (
    _MODES,
    _PIL_FILTERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _size_hw,
    check_preprocessing,
    make_preprocessing,
    mode_for_chans,
)
from .tensor_steps import BatchNormalize, Normalize, ToTensor, ToUint8Tensor

__all__ = [
    "CenterCrop",
    "Compose",
    "ConvertMode",
    "BatchNormalize",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToTensor",
    "ToUint8Tensor",
    "convert_image_mode",
    "default_padding",
    "eval_transform",
    "train_transform",
    # re-exported from .preprocessing, where callers have always imported them
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "check_preprocessing",
    "make_preprocessing",
    "mode_for_chans",
]


def _to_uint8_array(arr: np.ndarray, bits16: bool) -> np.ndarray:
    """Scale integer/float pixel data to 0-255 (rescale, never clip): 16-bit data by 255/65535, data already in
    0-255 as is, floats in [0, 1] by 255, anything else by its own min-max range."""
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    # NaN / +-inf (no-data markers in float images) take the ends of the finite range: left in, they overflow
    # the scaling and turn every other pixel into garbage
    lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
    arr = np.where(finite, arr, np.where(arr > 0, hi, lo))
    if bits16 and lo >= 0 and hi <= 65535:
        out = arr * (255.0 / 65535.0)
    elif is_float and lo >= 0 and hi <= 1.0:
        out = arr * 255.0
    elif lo >= 0 and hi <= 255:
        out = arr
    elif hi > lo:
        out = (arr - lo) * (255.0 / (hi - lo))
    else:
        out = np.zeros_like(arr)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def convert_image_mode(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """Convert any decoded Pillow image to ``mode`` ("RGB" or "L").

    - transparency (RGBA, LA, PA, palette with a transparent index) is composited on white;
    - 16-bit grayscale (I;16*) is scaled by 255/65535; 32-bit "I" holding 16-bit values likewise (Pillow's
      mode for some 16-bit files), other "I"/"F" data by its range (see _to_uint8_array);
    - CMYK, YCbCr, LAB, HSV and 1-bit go through Pillow's converters; RGB to L uses ITU-R 601-2 luma.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if img.mode.startswith("I;16"):
        img = Image.fromarray(_to_uint8_array(np.asarray(img), bits16=True), "L")
    elif img.mode in ("I", "F"):
        arr = np.asarray(img)
        img = Image.fromarray(_to_uint8_array(arr, bits16=img.mode == "I"), "L")
    if img.mode == "P" and "transparency" in img.info or img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBa", "La"):  # premultiplied alpha
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode == mode:
        return img
    if mode == "L" and img.mode != "RGB":
        img = img.convert("RGB")
    return img.convert(mode)


# --------------------------------------------------------------------------- transforms


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high_exclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high_exclusive, (), generator=generator))


class Compose:
    """Apply callables in order.  ``preprocessing`` is the dict a preset was built from (None otherwise): a
    dataset with a decode cache reads it to know the working resolution (lightnets.data.decode_cache)."""

    def __init__(
        self, steps: Sequence[Callable[[Any], Any]], preprocessing: Mapping[str, Any] | None = None
    ) -> None:
        self.steps = list(steps)
        self.preprocessing = dict(preprocessing) if preprocessing is not None else None

    def __call__(self, x: Any) -> Any:
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {s!r}," for s in self.steps)
        return f"Compose({inner}\n)"


class ConvertMode:
    """Bring an image to "RGB" or "L" (see convert_image_mode); a no-op for images already in that mode."""

    def __init__(self, mode: str) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else convert_image_mode(img, self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


class Resize:
    """Resize the shorter side to ``size`` keeping the aspect ratio (int), or to exactly (height, width)."""

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        self.size = int(size) if isinstance(size, (int, np.integer)) else tuple(_size_hw(size, "size"))
        self.interpolation = interpolation
        self._filter = _PIL_FILTERS[interpolation]

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing an image of that size."""
        if isinstance(self.size, tuple):
            return self.size[1], self.size[0]
        if width <= height:
            return self.size, int(self.size * height / width)
        return int(self.size * width / height), self.size

    def __call__(self, img: Image.Image) -> Image.Image:
        size = self.output_size(*img.size)
        return img if size == img.size else img.resize(size, self._filter)

    def __repr__(self) -> str:
        return f"Resize({self.size}, interpolation={self.interpolation!r})"


def _pad(img: Image.Image, left: int, top: int, right: int, bottom: int, fill: int = 0) -> Image.Image:
    if left == top == right == bottom == 0:
        return img
    out = Image.new(
        img.mode, (img.width + left + right, img.height + top + bottom), (fill,) * len(img.getbands())
    )
    out.paste(img, (left, top))
    return out


class CenterCrop:
    """Crop the centre (height, width); an image smaller than that is first padded with zeros around it."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = tuple(_size_hw(size, "size"))

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        w, h = img.size
        if tw > w or th > h:
            pw, ph = max(tw - w, 0), max(th - h, 0)
            img = _pad(img, pw // 2, ph // 2, (pw + 1) // 2, (ph + 1) // 2)
            w, h = img.size
        top = int(round((h - th) / 2.0))
        left = int(round((w - tw) / 2.0))
        return img.crop((left, top, left + tw, top + th))

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio log-uniform in ``ratio``, resized to ``size``
    (the Inception / ImageNet recipe: 10 tries, then a centre crop clamped to the ratio range)."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(
                f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}"
            )
        self.size = tuple(_size_hw(size, "size"))
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        self._filter = _PIL_FILTERS[interpolation]
        self.generator = generator

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(self.scale[0], self.scale[1], self.generator)
            aspect = math.exp(_uniform(log_lo, log_hi, self.generator))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(0, height - h + 1, self.generator)
                left = _randint(0, width - w + 1, self.generator)
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = self.get_params(*img.size)
        crop = img.crop((left, top, left + w, top + h))
        return crop.resize((self.size[1], self.size[0]), self._filter)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio}, interpolation={self.interpolation!r})"


class RandomCrop:
    """Pad every side by ``padding`` zeros, then crop ``size`` at a uniformly random position."""

    def __init__(
        self, size: int | Sequence[int], padding: int = 0, generator: torch.Generator | None = None
    ) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.size = tuple(_size_hw(size, "size"))
        self.padding = int(padding)
        self.generator = generator

    def __call__(self, img: Image.Image) -> Image.Image:
        p = self.padding
        img = _pad(img, p, p, p, p)
        th, tw = self.size
        w, h = img.size
        if tw > w or th > h:
            img = CenterCrop((max(th, h), max(tw, w)))(img)  # pads to at least the crop
            w, h = img.size
        top = _randint(0, h - th + 1, self.generator)
        left = _randint(0, w - tw + 1, self.generator)
        return img.crop((left, top, left + tw, top + th))

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = p
        self.generator = generator

    def __call__(self, img: Image.Image) -> Image.Image:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


# --------------------------------------------------------------------------- presets


def default_padding(size: int) -> int:
    """Pad for the small-image random crop: 4 px at 32 px (the CIFAR recipe), size / 8 in general, at least 1."""
    return max(1, int(round(size / 8)))


def _to_tensor_steps(p: Mapping[str, Any], uint8: bool) -> list[Callable[[Any], Any]]:
    return [ToUint8Tensor()] if uint8 else [ToTensor(p["value_scale"]), Normalize(p["mean"], p["std"])]


def eval_transform(preprocessing: Mapping[str, Any], *, uint8: bool = False) -> Compose:
    """PIL image -> normalised float tensor (C, H, W), exactly as described by ``preprocessing``; with
    ``uint8`` the uint8 (C, H, W) pixels instead, for ``BatchNormalize`` to finish per batch."""
    p = check_preprocessing(preprocessing)
    steps: list[Callable[[Any], Any]] = [ConvertMode(p["mode"])]
    if p["resize"] == "shorter":
        steps += [Resize(p["resize_size"], p["interpolation"]), CenterCrop(p["input_size"])]
    else:
        steps.append(Resize(p["input_size"], p["interpolation"]))
    return Compose(steps + _to_tensor_steps(p, uint8), p)


def train_transform(
    preprocessing: Mapping[str, Any],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    padding: int | None = None,
    generator: torch.Generator | None = None,
    uint8: bool = False,
) -> Compose:
    """Training augmentation matching ``preprocessing``'s preset, ending in the same ToTensor/Normalize (or,
    with ``uint8``, in ToUint8Tensor, as ``eval_transform``).

    imagenet: RandomResizedCrop(input_size, scale, ratio) + horizontal flip.
    small: resize to input_size (if needed) + pad ``padding`` (default input/8, 4 at 32 px) and random crop
    + horizontal flip.  Randomness comes from torch's global RNG (seeded per DataLoader worker) unless a
    ``generator`` is given.
    """
    p = check_preprocessing(preprocessing)
    steps: list[Callable[[Any], Any]] = [ConvertMode(p["mode"])]
    if p["preset"] == "imagenet":
        steps.append(RandomResizedCrop(p["input_size"], scale, ratio, p["interpolation"], generator))
    else:
        pad = default_padding(min(p["input_size"])) if padding is None else padding
        steps += [Resize(p["input_size"], p["interpolation"]), RandomCrop(p["input_size"], pad, generator)]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip, generator))
    return Compose(steps + _to_tensor_steps(p, uint8), p)
