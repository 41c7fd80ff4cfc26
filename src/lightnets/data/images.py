"""Decoding and checking one image file: which file names are images, ``load_image`` (any Pillow mode to
RGB or L, EXIF orientation applied, the decompression-bomb limit kept) and ``check_image`` (why a file is not
a readable image, cheaply).  Every failure is an ImageReadError naming the file and the cause.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import zlib
from collections.abc import Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError
from .transforms import convert_image_mode

log = logging.getLogger(__name__)


IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def _check_pixels(img: Image.Image, path: str | os.PathLike) -> None:
    # Image.open itself raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS; between 1x and 2x Pillow only
    # warns, so say here which file it is.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        log.warning(
            "%s: %dx%d = %d pixels exceeds Image.MAX_IMAGE_PIXELS (%d); possible decompression bomb, decoding anyway",
            path, img.width, img.height, img.width * img.height, limit,
        )  # fmt: skip


def _check_mode(mode: str) -> str:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    return mode


def _reason(e: BaseException) -> str:
    if isinstance(e, Image.DecompressionBombError):
        return f"decompression bomb refused ({e})"
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can identify (wrong extension, or not an image file at all)"
    if isinstance(e, OSError) and e.errno is not None:  # the file system refused (permissions, link loop...)
        return f"cannot open ({e.strerror or e})"
    if isinstance(e, (OSError, EOFError, SyntaxError, struct.error, zlib.error)):
        return f"corrupt or truncated image data ({type(e).__name__}: {e})"
    return f"{type(e).__name__}: {e}"


def _file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an image file before reading a byte: missing, not a regular file, or empty."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot open ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever; a device never ends
        return "not a regular file (a directory, pipe or device)"
    return "empty file (0 bytes)" if st.st_size == 0 else None


def _jpeg_ends_early(path: str | os.PathLike) -> bool:
    # A complete JPEG ends with the EOI marker FF D9 (entropy-coded data never contains it); a cut one almost
    # never does.  Some writers append bytes after EOI, so a missing marker only asks for a full decode.
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        return b"\xff\xd9" not in f.read()


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into a Pillow image in ``mode`` ("RGB", or "L" for in_chans=1).

    Any file mode is accepted (palette, alpha, CMYK, 16-bit, 1-bit...; see transforms.convert_image_mode), the
    EXIF orientation is applied, and an animated image gives its first frame.  Pillow's decompression-bomb
    limit (Image.MAX_IMAGE_PIXELS) stays in force.  Raises ImageReadError naming the path and the cause for
    empty, truncated, unidentifiable or oversized files.
    """
    _check_mode(mode)
    problem = _file_problem(path)
    if problem is not None:
        raise ImageReadError(path, problem)
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            try:
                img = ImageOps.exif_transpose(im)
            except Exception as e:  # a malformed EXIF block should not lose the picture
                log.warning("%s: ignoring unreadable EXIF orientation (%s)", path, e)
                img = im
            out = convert_image_mode(img, mode)
            if out is im:  # detach from the file handle the with-block closes
                out = im.copy()
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plugins raise many types for malformed files
        raise ImageReadError(path, _reason(e)) from None
    return out


def check_image(path: str | os.PathLike, *, full_decode: bool = False, mode: str = "RGB") -> str | None:
    """Why ``path`` is not a readable image, or None if it is.

    The cheap check reads the header and runs Pillow's ``verify()``, which validates PNG checksums and WebP data
    but decodes no JPEG data; so a JPEG is decoded only when its end-of-image marker is missing (how a cut-off
    JPEG looks), and other formats (GIF, BMP, TIFF..., rare in datasets, where verify() misses truncation) are
    always decoded.  ``full_decode=True`` decodes every image with load_image.
    """
    if full_decode:
        try:
            load_image(path, mode)
        except ImageReadError as e:
            return e.reason
        return None
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        with Image.open(path) as im:
            im.verify()
            fmt = im.format
        if fmt not in ("PNG", "WEBP", "JPEG") or fmt == "JPEG" and _jpeg_ends_early(path):
            load_image(path, mode)
    except MemoryError:
        raise
    except ImageReadError as e:
        return e.reason
    except Exception as e:
        return _reason(e)
    return None


def is_image_file(path: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(tuple(extensions))
