"""Preprocessing presets, the preprocessing dict round trip, and the hand-written transforms."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    ToTensor,
    check_preprocessing,
    convert_image_mode,
    default_padding,
    eval_transform,
    make_preprocessing,
    train_transform,
)


def _noise_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


# --------------------------------------------------------------------------- the preprocessing dict


def test_imagenet_preset_defaults() -> None:
    p = make_preprocessing("imagenet", 224)
    assert p["input_size"] == [224, 224]
    assert p["resize"] == "shorter" and p["resize_size"] == 256  # 224 / 0.875
    assert p["mean"] == list(IMAGENET_MEAN) and p["std"] == list(IMAGENET_STD)
    assert p["mode"] == "RGB" and p["in_chans"] == 3 and p["interpolation"] == "bilinear"
    assert make_preprocessing("imagenet", 160)["resize_size"] == 182  # floor(160 / 0.875)
    gray = make_preprocessing("small", 28, in_chans=1)
    assert (
        gray["mode"] == "L"
        and gray["mean"] == [0.5]
        and gray["resize"] == "exact"
        and gray["resize_size"] is None
    )


def test_preprocessing_is_plain_data(tmp_path) -> None:
    p = make_preprocessing("imagenet", (192, 160), interpolation="bicubic")
    assert json.loads(json.dumps(p)) == p
    torch.save({"preprocessing": p}, tmp_path / "ck.pt")
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["preprocessing"] == p


@pytest.mark.parametrize("preset,size", [("imagenet", 224), ("imagenet", (96, 128)), ("small", 28)])
def test_eval_transform_rebuilt_from_dict_is_identical(preset: str, size) -> None:
    p = make_preprocessing(preset, size, interpolation="bicubic")
    rebuilt = json.loads(json.dumps(p))  # what a checkpoint hands back
    img = _noise_image(300, 250)
    a, b = eval_transform(p)(img), eval_transform(rebuilt)(img)
    assert a.shape == (3, *p["input_size"]) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert repr(eval_transform(p)) == repr(eval_transform(rebuilt))


def test_eval_transform_geometry_and_normalisation() -> None:
    # a flat colour survives resize + crop exactly; its normalised value is (c / 255 - mean) / std
    img = Image.new("RGB", (400, 300), (10, 200, 255))
    out = eval_transform(make_preprocessing("imagenet", 224))(img)
    expect = (torch.tensor([10, 200, 255]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0], expect, atol=1e-6) and torch.allclose(
        out[:, -1, -1], expect, atol=1e-6
    )
    # shorter side to 256 (torchvision's int(size * long / short)), then a centred crop
    assert Resize(256).output_size(400, 300) == (341, 256)
    assert Resize(256).output_size(300, 400) == (256, 341)
    assert Resize((20, 30)).output_size(400, 300) == (30, 20)


def test_center_crop_offsets_and_padding() -> None:
    arr = np.arange(10 * 7, dtype=np.uint8).reshape(10, 7)  # H=10, W=7
    out = np.asarray(CenterCrop((4, 3))(Image.fromarray(arr)))
    top, left = int(round((10 - 4) / 2)), int(round((7 - 3) / 2))
    assert np.array_equal(out, arr[top : top + 4, left : left + 3])
    # larger than the image: zero padding around it
    big = np.asarray(CenterCrop((12, 9))(Image.fromarray(arr)))
    assert big.shape == (12, 9) and big[0].sum() == 0 and np.array_equal(big[1:11, 1:8], arr)


def test_small_preset_resizes_only_when_needed() -> None:
    p = make_preprocessing("small", 28, in_chans=1)
    img = _noise_image(28, 28, "L")
    out = eval_transform(p)(img)
    assert out.shape == (1, 28, 28)
    assert torch.allclose(out, (ToTensor()(img) - 0.5) / 0.5)
    assert eval_transform(p)(_noise_image(32, 40, "L")).shape == (1, 28, 28)
    # an RGB image given to a grayscale pipeline is converted, not rejected
    assert eval_transform(p)(_noise_image(28, 28, "RGB")).shape == (1, 28, 28)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"resize": "squash"}, "resize"),
        ({"interpolation": "area"}, "interpolation"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"std": [1.0, 0.0, 1.0]}, "std"),
        ({"resize_size": 100}, "resize_size"),
        ({"mode": "CMYK"}, "mode"),
        ({"in_chans": 1}, "in_chans"),
        ({"input_size": [0, 3]}, "input_size"),
    ],
)
def test_check_preprocessing_names_bad_values(change: dict, match: str) -> None:
    p = {**make_preprocessing("imagenet", 224), **change}
    with pytest.raises(ValueError, match=match):
        check_preprocessing(p)


def test_check_preprocessing_missing_keys() -> None:
    p = make_preprocessing("imagenet", 224)
    del p["mean"]
    with pytest.raises(ValueError, match="mean"):
        eval_transform(p)
    with pytest.raises(ValueError, match="preset"):
        make_preprocessing("tiny")


# --------------------------------------------------------------------------- training augmentation


def test_random_resized_crop_draws_in_range() -> None:
    rrc = RandomResizedCrop(64, generator=torch.Generator().manual_seed(0))
    areas, ratios = [], []
    for _ in range(300):
        top, left, h, w = rrc.get_params(320, 240)
        assert 0 <= top <= 240 - h and 0 <= left <= 320 - w
        areas.append(h * w / (320 * 240))
        ratios.append(w / h)
    assert 0.06 < min(areas) < 0.2 and max(areas) > 0.8  # scale (0.08, 1), up to rounding
    assert min(ratios) > 0.7 and max(ratios) < 1.4 and min(ratios) < 0.85 and max(ratios) > 1.2
    # an image far outside the ratio range falls back to a centred crop clamped to the range
    fallback = RandomResizedCrop(8, scale=(0.9, 1.0), generator=torch.Generator().manual_seed(0))
    assert fallback.get_params(1000, 10) == (0, (1000 - 13) // 2, 10, 13)


def test_train_transform_imagenet_is_random_but_seedable() -> None:
    p = make_preprocessing("imagenet", 64)
    img = _noise_image(120, 90)
    outs = [train_transform(p, generator=torch.Generator().manual_seed(s))(img) for s in (0, 0, 1)]
    assert outs[0].shape == (3, 64, 64)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    arr = np.arange(1, 8 * 8 + 1, dtype=np.uint8).reshape(8, 8)
    padded = np.pad(arr, 2)
    windows = {padded[i : i + 8, j : j + 8].tobytes() for i in range(5) for j in range(5)}
    crop = RandomCrop(8, padding=2, generator=torch.Generator().manual_seed(3))
    seen = set()
    for _ in range(60):
        out = np.asarray(crop(Image.fromarray(arr)))
        assert out.tobytes() in windows
        seen.add(out.tobytes())
    assert len(seen) > 5  # positions really vary


def test_small_train_transform_pads_by_size_over_8() -> None:
    assert (
        default_padding(32) == 4
        and default_padding(28) == 4
        and default_padding(8) == 1
        and default_padding(64) == 8
    )
    p = make_preprocessing("small", 32)
    t = train_transform(p, generator=torch.Generator().manual_seed(0))
    assert "padding=4" in repr(t) and "RandomHorizontalFlip" in repr(t)
    img = _noise_image(32, 32)
    outs = {t(img).numpy().tobytes() for _ in range(10)}
    assert len(outs) > 1 and t(img).shape == (3, 32, 32)


# --------------------------------------------------------------------------- mode conversion


def test_convert_transparency_composites_on_white() -> None:
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    assert convert_image_mode(rgba).getpixel((0, 0)) == (255, 127, 127)
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0])
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    out = convert_image_mode(pal)
    assert (
        out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 255, 0)
    )
    assert convert_image_mode(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert convert_image_mode(rgba, "L").mode == "L"


def test_convert_16_bit_scales_instead_of_clipping() -> None:
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)  # I;16
    assert img.mode.startswith("I;16")
    out = np.asarray(convert_image_mode(img, "L"))
    assert out.tolist() == [[0, 1, 128, 255]]
    rgb = np.asarray(convert_image_mode(img, "RGB"))
    assert rgb.shape == (1, 4, 3) and rgb[0, 3].tolist() == [255, 255, 255]
    # 32-bit data beyond 16 bits: rescaled by its range
    wide = Image.fromarray(np.array([[-100, 100000]], dtype=np.int32))
    assert np.asarray(convert_image_mode(wide, "L")).tolist() == [[0, 255]]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(convert_image_mode(floats, "L")).tolist() == [[0, 128, 255]]


def test_convert_cmyk_bilevel_and_luma() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(buf, "JPEG", quality=100)
    cmyk = Image.open(buf)
    assert cmyk.mode == "CMYK"
    r, g, b = convert_image_mode(cmyk).getpixel((1, 1))
    assert r > 240 and g < 15 and b > 240  # magenta
    assert convert_image_mode(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert (
        convert_image_mode(Image.new("RGB", (1, 1), (255, 0, 0)), "L").getpixel((0, 0)) == 76
    )  # 0.299 * 255
    with pytest.raises(ValueError, match="mode"):
        convert_image_mode(cmyk, "RGBA")
