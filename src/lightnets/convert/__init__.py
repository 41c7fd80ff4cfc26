"""Weights from the TensorFlow / Keras world as lightnets checkpoints.

``from_keras`` reads keras.applications MobileNet / MobileNetV2 / MobileNetV3 files (``.keras``, ``.weights.h5``,
legacy ``.h5``), ``from_tflite`` MobileNet V1 / V2 / V3 ``.tflite`` files (float, float16 or int8 / uint8
weights).  Each returns the model and writes a normal lightnets checkpoint (architecture, kwargs with
``padding="same"`` and the other conventions that make the network TF's, class names, preprocessing) that
``lightnets eval``, ``predict``, ``export`` and ``train --weights`` accept.  ``convert_file`` picks the reader
by file name (the ``lightnets convert`` command).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .common import FAMILIES, ConvertError
from .keras import from_keras
from .tflite import from_tflite

__all__ = ["FAMILIES", "ConvertError", "convert_file", "from_keras", "from_tflite"]


def convert_file(
    source: str | os.PathLike, family: str, out: str | os.PathLike, classes: list[str] | None = None
) -> dict[str, Any]:
    """Convert ``source`` (.tflite, or a Keras .keras / .weights.h5 / .h5 file) to the checkpoint ``out``;
    returns the checkpoint's fields (arch, kwargs, preprocessing, classes, converted_from)."""
    suffix = Path(source).suffix.lower()
    if suffix == ".tflite":
        return from_tflite(source, family, out=out, classes=classes)[1]
    if suffix in (".keras", ".h5", ".hdf5"):
        _, fields = from_keras(source, family, out=out, classes=classes)
        return fields
    raise ConvertError(f"cannot tell the format of {source}: expected .keras, .weights.h5, .h5 or .tflite")
