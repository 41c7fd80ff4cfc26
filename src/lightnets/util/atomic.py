"""Writing files so that they are never half-written: the one helper every output of a run goes through.

A file is written to a temporary file in the same directory, flushed, fsynced and renamed over the target
(``os.replace`` is atomic on POSIX and Windows), then the directory is fsynced so the rename is durable.  A
process killed mid-write, or a full disk, leaves the previous file (or no file) and never a truncated one; a
failed write raises ``OSError`` naming the file and the cause.

JSON is written losslessly: file names that are not valid UTF-8 (Latin-1 bytes, which Python decodes to lone
surrogates such as ``\\udce9``) are written as JSON ``\\udce9`` escapes, so the file stays valid UTF-8 and
``json.loads`` gives back the very string ``os.fsencode`` maps to the original bytes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def atomic_write(
    path: str | os.PathLike,
    data: bytes | bytearray | memoryview | str,
    *,
    what: str = "file",
    encoding: str = "utf-8",
    errors: str = "surrogateescape",
) -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``/``errors``) to ``path`` atomically.

    ``what`` names the kind of file in the error message ("checkpoint", "metrics file", ...).  Text uses
    ``surrogateescape`` by default: a name that came from a non-UTF-8 file name is written as its original bytes.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, f"cannot write {what} {path}: it is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if isinstance(data, str):
            f = os.fdopen(fd, "w", encoding=encoding, errors=errors, newline="")
        else:
            f = os.fdopen(fd, "wb")
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {what} {path} ({e.strerror or e}); the previous file is intact") from e
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems do not allow fsync on directories
        pass


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """``json.dumps`` that keeps non-ASCII text readable and escapes lone surrogates (see the module docstring)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_json(path: str | os.PathLike, obj: Any, *, what: str = "file", indent: int | None = 2) -> Path:
    """``obj`` as JSON (plus a final newline) to ``path``, atomically and losslessly."""
    return atomic_write(path, json_text(obj, indent=indent) + "\n", what=what, errors="strict")


def save_image(image: Any, path: str | os.PathLike, *, what: str = "image", format: str = "PNG") -> Path:
    """A Pillow image encoded in memory, then written to ``path`` atomically (never a half-written PNG)."""
    import io

    buf = io.BytesIO()
    image.save(buf, format=format)
    return atomic_write(path, buf.getbuffer(), what=what)


def display_name(text: str) -> str:
    """A string safe to print or put in HTML: lone surrogates (bytes of a non-UTF-8 file name) as ``\\xe9``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no byte maps to
        return text.encode("utf-8", "backslashreplace").decode("ascii")
