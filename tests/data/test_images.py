"""Decoding one image file (lightnets.data.images): every Pillow mode, EXIF orientation, 16-bit data,
unreadable files and the decompression-bomb guard."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightnets.data import (
    ImageReadError,
    load_image,
)


def test_every_mode_decodes_to_rgb_and_l(odd_files: dict[str, Path]) -> None:
    for name, path in odd_files.items():
        for mode in ("RGB", "L"):
            img = load_image(path, mode)
            assert img.mode == mode, name
            assert img.size[0] > 0
    assert load_image(odd_files["palette_transparent"]).getpixel((0, 0)) == (
        255,
        255,
        255,
    )  # transparent -> white
    assert load_image(odd_files["palette_transparent"]).getpixel((5, 3)) == (200, 30, 30)
    assert load_image(odd_files["rgba"]).getpixel((2, 2)) == (255, 255, 255)
    r, g, b = load_image(odd_files["cmyk"]).getpixel((4, 4))
    assert r > 240 and g < 15 and b > 240
    assert (
        load_image(odd_files["gray16"], "L").getpixel((0, 0)) == 255
    )  # scaled, not clipped to 255 by accident
    assert load_image(odd_files["gray"]).getpixel((0, 0)) == (100, 100, 100)
    assert load_image(odd_files["animated"]).getpixel((4, 4)) == (255, 0, 0)  # first frame
    assert load_image(odd_files["unicode"]).size == (12, 12)


def test_exif_orientation_is_applied(odd_files: dict[str, Path]) -> None:
    with Image.open(odd_files["exif6"]) as raw:
        assert raw.size == (40, 20)
    assert load_image(odd_files["exif6"]).size == (20, 40)


def test_16_bit_png_keeps_its_gradations(tmp_path: Path) -> None:
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)).save(path)
    assert np.asarray(load_image(path, "L")).tolist() == [[0, 64, 128, 255]]


def test_unreadable_files_raise_image_read_error_with_path(tmp_path: Path, bad_images: dict[str, Path]) -> None:
    bad = bad_images
    expect = {"zero": "empty", "text": "identify", "trunc_jpg": "truncated", "trunc_png": "truncated"}
    for key, path in bad.items():
        with pytest.raises(ImageReadError, match=expect[key]) as info:
            load_image(path)
        assert info.value.path == str(path) and str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ImageReadError, match="cannot open"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch, caplog) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is > 2x: refused
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 6000
    )  # between 1x and 2x: decoded, with a warning naming the file
    with (
        caplog.at_level(logging.WARNING, logger="lightnets.data"),
        pytest.warns(Image.DecompressionBombWarning),
    ):
        assert load_image(path).size == (100, 100)
    assert "big.png" in caplog.text and "decompression bomb" in caplog.text
