"""Annotated images: a copy of a picture with a caption on a banner above it (the prediction shown next to
the image it was made for), drawn with Pillow's default font."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 (or without FreeType): fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:  # a word wider than the banner
                cut = len(line) - 1
                while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def annotate_image(image: Image.Image, text: str, min_width: int = 224) -> Image.Image:
    """An RGB copy of ``image`` with ``text`` on a dark banner added above it (the picture is not covered).

    Images narrower than ``min_width`` are first enlarged by an integer factor (nearest neighbour), so a
    28-pixel digit still gets a readable label.  Long text wraps; newlines start new lines.  Uses Pillow's
    default font, scaled with the width.
    """
    img = image.convert("RGB") if image.mode != "RGB" else image.copy()
    if img.width < min_width:
        factor = math.ceil(min_width / max(img.width, 1))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    size = int(np.clip(img.width // 18, 12, 40))
    font = _font(size)
    pad = max(4, size // 3)
    measure = ImageDraw.Draw(img)
    lines = _wrap(measure, text, font, img.width - 2 * pad)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, size // 4)
    line_h = ascent + descent + max(2, size // 6)
    banner_h = len(lines) * line_h + 2 * pad - max(2, size // 6)
    out = Image.new("RGB", (img.width, img.height + banner_h), (24, 26, 33))
    out.paste(img, (0, banner_h))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=(255, 255, 255), font=font)
    return out
