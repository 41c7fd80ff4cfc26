"""The on-device formats as engines of ``lightnets.deploy.make_runner`` (``lightnets bench``, ``predict --engine``).

An engine here exports the model with its format module into a temporary folder (kept as long as the runner
lives) and runs the file in the format's own runtime.  int8 engines are calibrated on seeded random inputs:
they exist to *time* int8 on the user's machine (the work per image does not depend on the values), not to
classify -- for an int8 model that keeps its accuracy, calibrate on real images with ``lightnets export
--quantize int8 --calib DIR`` and run the file (``lightnets predict FILE``).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .runtimes import MODULES, ExportRequest, get_format

__all__ = ["FORMAT_ENGINES", "build", "missing_packages"]

#: engine -> (format, quantize).  The fp32 ONNX and OpenVINO engines are deploy's own ("onnxruntime",
#: "openvino": the same graph, built in memory).
FORMAT_ENGINES: dict[str, tuple[str, str | None]] = {
    "onnxruntime-int8": ("onnx", "int8"),
    "executorch": ("executorch", None),
    "executorch-int8": ("executorch", "int8"),
    "tflite": ("tflite", None),
    "tflite-int8": ("tflite", "int8"),
    "openvino-int8": ("openvino", "int8"),
    "ncnn": ("ncnn", None),  # no "ncnn-int8": the PyPI packages lack ncnn2table / ncnn2int8 (runtimes/ncnn.py)
}
CALIB_INPUTS = 8


def missing_packages(engine: str) -> list[tuple[str, str]]:
    """(package, extra) pairs the engine lacks; [] when it can run.  A format module not in this install
    counts as missing itself."""
    fmt_name = FORMAT_ENGINES[engine][0]
    if importlib.util.find_spec(f"lightnets.deploy.runtimes.{MODULES[fmt_name]}") is None:
        return [(f"lightnets.deploy.runtimes.{MODULES[fmt_name]}", fmt_name)]
    try:
        fmt = get_format(fmt_name)
    except ImportError as e:
        return [(str(e).split("'")[1] if "'" in str(e) else fmt_name, fmt_name)]
    return [(p, fmt.extra) for p in fmt.packages if importlib.util.find_spec(p) is None]


def build(model: nn.Module, engine: str, input_shape: tuple[int, ...], threads: int | None) -> tuple[Callable, dict]:
    """(forward: tensor -> tensor, info) for a format engine (see the module docstring)."""
    from .inference_form import optimize

    fmt_name, quantize = FORMAT_ENGINES[engine]
    fmt = get_format(fmt_name)
    tmp = tempfile.TemporaryDirectory(prefix=f"lightnets-{engine}-")
    gen = torch.Generator().manual_seed(0)
    calib = torch.randn((CALIB_INPUTS, *input_shape[1:]), generator=gen) if quantize else None
    request = ExportRequest(optimize(model, channels_last=False), torch.zeros((1, *input_shape[1:])),
                            Path(tmp.name) / f"model{fmt.suffix}", {"arch": type(model).__name__}, quantize, calib)  # fmt: skip
    run = fmt.load(fmt.export(request), threads)

    def forward(x: torch.Tensor, _keep: Any = tmp) -> torch.Tensor:  # _keep: the folder lives with the runner
        return torch.from_numpy(np.asarray(run(x.detach().cpu().numpy())))

    info = {"format": fmt_name, "quantize": quantize}
    if quantize:
        info["calibration"] = "random (latency only)"
    return forward, info
