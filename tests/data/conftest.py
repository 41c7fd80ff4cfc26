"""Synthetic image files shared by the data tests: awkward-but-valid images, unreadable ones, and a small
class folder holding both (written into tmp_path, never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _noise(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_odd_images(d: Path) -> dict[str, Path]:
    """One file per awkward case; returns name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([0, 0, 0, 200, 30, 30])
    pal.putpixel((5, 3), 1)
    files["palette_transparent"] = d / "palette.png"
    pal.save(files["palette_transparent"], transparency=0)

    files["rgba"] = d / "alpha.png"
    Image.new("RGBA", (5, 5), (0, 0, 255, 0)).save(files["rgba"])

    files["cmyk"] = d / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(files["cmyk"], quality=100)

    files["gray16"] = d / "gray16.png"
    Image.fromarray(np.full((4, 6), 65535, dtype=np.uint16)).save(files["gray16"])

    files["gray"] = d / "gray.bmp"
    Image.new("L", (7, 3), 100).save(files["gray"])

    files["exif6"] = d / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(_noise(40, 20)).save(files["exif6"], exif=exif)

    files["animated"] = d / "anim.gif"
    frames = [Image.new("RGB", (9, 9), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=50, loop=0)

    files["webp"] = d / "pic.webp"
    Image.fromarray(_noise(10, 10)).save(files["webp"])

    files["tiff"] = d / "pic.TIFF"  # upper-case extension
    Image.fromarray(_noise(10, 10)).save(files["tiff"])

    files["unicode"] = d / "été photo ñ 1.jpg"
    Image.fromarray(_noise(12, 12)).save(files["unicode"])
    return files


def _write_bad_images(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "zero": d / "empty.jpg",
        "text": d / "notes.jpg",
        "trunc_jpg": d / "cut.jpg",
        "trunc_png": d / "cut.png",
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    for key, fmt in (("trunc_jpg", "JPEG"), ("trunc_png", "PNG")):
        full = d / f"full.{fmt.lower()}.tmp"
        Image.fromarray(_noise(64, 64, seed=3)).save(full, fmt)
        data = full.read_bytes()
        files[key].write_bytes(data[: len(data) * 2 // 3])
        full.unlink()
    return files


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return _write_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.fixture()
def bad_images(tmp_path: Path) -> dict[str, Path]:
    return _write_bad_images(tmp_path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for c, cls in enumerate(["zèbre", "cat", "big dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_noise(16 + i, 12, seed=10 * c + i)).save(root / cls / f"img {i}.png")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "cat" / "readme.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "sub" / "nested.JPG")
    bad = _write_bad_images(root / "big dog")
    return root, bad

