"""Matplotlib figures without pyplot: a new figure on the Agg canvas and an atomic PNG save.

Every plot of the package (training curves, confusion matrices, benchmark and guideline-lab charts) goes
through these two functions, so no plot changes matplotlib's global backend, a missing matplotlib is one clear
error naming the extra, and no PNG is left half-written.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from .atomic import atomic_write


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib figure of ``width x height`` inches on the Agg canvas (no pyplot, no global backend)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'lightnets[train]'") from None
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike | BinaryIO, *, what: str = "plot") -> Path | None:
    """Render ``fig`` as PNG into ``path`` (written atomically, parent folders made) or into an open binary
    file; returns the path, or None for a file object.

    No "Software" metadata, so the PNG (and a report embedding it) does not carry the matplotlib URL and
    version.  Names in scripts the default font lacks (e.g. CJK class names) draw as boxes; matplotlib's
    warning for each missing glyph is dropped.
    """
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        fig.savefig(buf, format="png", metadata={"Software": None})
    if isinstance(path, str | os.PathLike):
        return atomic_write(path, buf.getbuffer(), what=what)
    path.write(buf.getvalue())
    return None
