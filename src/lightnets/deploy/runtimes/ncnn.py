"""ncnn files (``.ncnn.param`` + ``.ncnn.bin``), converted with ``pnnx`` and run with the ``ncnn`` Python package.

Conversion: ``pnnx.export`` traces the model with TorchScript and writes pnnx's intermediate files and the
ncnn pair; it runs in a temporary folder and only the two ncnn files are moved beside ``out_path``.  Weights
are stored as fp32 (``fp16=False``; pnnx stores fp16 by default).  The runner switches off ncnn's reduced
precision (fp16 packed / storage / arithmetic, bf16 storage), which is on by default and breaks fp32 parity.
The file is written for batch 1 (ncnn's blobs are C x H x W); the runner loops over a batch.

int8: not supported here.  ncnn's int8 path is a post-processing of the fp32 pair with two command-line
tools, ``ncnn2table`` (calibration table from images) and ``ncnn2int8`` (quantized pair), that are built
from ncnn's source tree.  Neither PyPI package ships them: the ``ncnn`` wheel holds only the Python
extension, the ``pnnx`` wheel only the ``pnnx`` converter, which writes fp32/fp16 ncnn files but no int8
(pnnx's int8 is only for models already quantized in torch's old eager quantization API, which lightnets'
PT2E-based int8 does not produce).  The Python ``ncnn`` module has no calibration API either.

Metadata: a sidecar ``<file>.ncnn.param.json``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import ExportRequest, Format, Runner, read_sidecar, register_format, write_sidecar
from ._common import batch1_loop, export_ready, require

EXTRA = "ncnn"
SUFFIX = ".ncnn.param"
INPUT, OUTPUT = "in0", "out0"  # the blob names pnnx gives the first input and output


def bin_path(param: Path) -> Path:
    """``m.ncnn.param`` -> ``m.ncnn.bin``."""
    return Path(param).with_suffix(".bin")


def export(req: ExportRequest) -> Path:
    """Write ``req.out_path`` (.ncnn.param) and its .ncnn.bin (fp32 weights) and the metadata sidecar."""
    pnnx = require("pnnx", EXTRA)
    if req.quantize is not None:
        raise ValueError(
            "ncnn: int8 export is not supported (ncnn2table / ncnn2int8 are not in the PyPI packages); "
            "export fp32 or pick another format for int8"
        )
    out = Path(req.out_path)
    if not out.name.endswith(SUFFIX):
        raise ValueError(f"ncnn: the output file must end in {SUFFIX}, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = export_ready(req.model)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        param, weights = Path(tmp) / "model.ncnn.param", Path(tmp) / "model.ncnn.bin"
        pnnx.export(
            model,
            str(Path(tmp) / "model.pt"),
            inputs=req.example[:1],
            ncnnparam=str(param),
            ncnnbin=str(weights),
            pnnxparam=str(Path(tmp) / "model.pnnx.param"),
            pnnxbin=str(Path(tmp) / "model.pnnx.bin"),
            pnnxpy=str(Path(tmp) / "model_pnnx.py"),
            pnnxonnx=str(Path(tmp) / "model.pnnx.onnx"),
            ncnnpy=str(Path(tmp) / "model_ncnn.py"),
            fp16=False,
        )
        if not param.is_file() or not weights.is_file():
            raise RuntimeError(f"pnnx wrote no ncnn files for {out.name}")
        os.replace(weights, bin_path(out))
        os.replace(param, out)
    write_sidecar(out, {**req.metadata, "quantize": None, "input_blob": INPUT, "output_blob": OUTPUT})
    return out


def _full_precision(opt: Any, threads: int | None) -> None:
    for name in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        if hasattr(opt, name):
            setattr(opt, name, False)
    if threads:
        opt.num_threads = int(threads)


def load(path: Path, threads: int | None = None) -> Runner:
    """ncnn on ``path`` with fp16/bf16 off (fp32 parity) and ``threads`` threads; NCHW float in, logits out."""
    ncnn = require("ncnn", EXTRA)
    path = Path(path)
    if not path.is_file() or not bin_path(path).is_file():
        raise ValueError(f"ncnn files not found: {path} and {bin_path(path).name} are both needed")
    net = ncnn.Net()
    _full_precision(net.opt, threads)
    if net.load_param(str(path)) != 0 or net.load_model(str(bin_path(path))) != 0:
        raise ValueError(f"ncnn could not load {path}")

    def run_one(x: np.ndarray) -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input(INPUT, ncnn.Mat(np.ascontiguousarray(x[0])))
        ret, out = extractor.extract(OUTPUT)
        if ret != 0:
            raise RuntimeError(f"ncnn failed to run {path.name} (code {ret})")
        return np.array(out, dtype=np.float32).reshape(1, -1)

    return batch1_loop(run_one)


FORMAT = register_format(
    Format(
        name="ncnn",
        suffix=SUFFIX,
        extra=EXTRA,
        export=export,
        load=load,
        read_metadata=read_sidecar,  # the metadata is the sidecar JSON
        companions=(".bin",),
        supports_int8=False,
        packages=("ncnn", "pnnx"),
    )
)
