"""The engine layer: the engines that run a model's inference form (``optimize``, in
``lightnets.deploy.inference_form``) behind one ``Runner`` interface.

``make_runner(model, engine, input_shape=..., threads=...)`` wraps one of ``ENGINES`` in a ``Runner``: a
callable from a float32 NCHW tensor (any batch size; channels, height and width as in ``input_shape``) to a
tensor of logits.  ``lightnets predict --engine`` and ``lightnets bench`` use it.

=====================  ==================================================================================
engine                 what runs
=====================  ==================================================================================
eager                  the model as given (a copy), eval mode, ``torch.inference_mode`` -- the baseline
optimized              ``optimize`` (BN folded, channels-last) traced and frozen with TorchScript
                       (``torch.jit.freeze`` folds weights into the graph; PyTorch then fuses conv +
                       activation); pure PyTorch, no extra package
onnxruntime            (``onnx_engines``) ``optimize`` exported by ``lightnets.deploy.onnx_export`` (shape arithmetic folded, batch axis
                       symbolic), onnxruntime with every graph optimisation, sequential execution and the
                       given intra-op thread count
onnxruntime-naive      the eager model through ``torch.onnx.export`` with a dynamic batch axis as it comes,
                       onnxruntime with a default ``SessionOptions`` except the thread count -- the
                       baseline the speed goals compare against
openvino               the same ONNX graph as ``onnxruntime``, compiled by OpenVINO's CPU plugin for the
                       latency hint with fp32 inference precision (OpenVINO would otherwise use bf16 on
                       CPUs with AVX512-BF16/AMX), one compiled model per batch size (compiled on first use)
onnxruntime-int8,      the on-device formats of ``lightnets.deploy.runtimes`` (``lightnets.deploy.format_engines``): the
executorch[-int8],     model exported to a temporary file and run in that format's own runtime; the int8
tflite[-int8],         forms are calibrated on random inputs, for timing only (``lightnets export
openvino-int8,         --quantize int8 --calib DIR`` makes the int8 file that keeps accuracy)
ncnn[-int8]
=====================  ==================================================================================

Which is fastest, and by how much, is measured by ``benchmarks/deploy_latency.py``; the numbers are in
``docs/benchmarks.md`` ("Inference latency (deploy path)").
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..models.layers import check_positive_int
from .export_common import MissingPackageError
from .format_engines import FORMAT_ENGINES
from .inference_form import CHANNELS_LAST_DEFAULT, fold_batchnorm, optimize, remove_dropout
from .onnx_engines import (
    MICRO_BATCH,
    STREAMS_MIN_BATCH,
    onnxruntime_engine,
    onnxruntime_naive_engine,
    openvino_engine,
)

__all__ = [
    "CHANNELS_LAST_DEFAULT",
    "ENGINES",
    "EngineUnavailableError",
    "MICRO_BATCH",
    "Runner",
    "STREAMS_MIN_BATCH",
    "available_engines",
    "check_engine",
    "fold_batchnorm",
    "load_runner",
    "make_runner",
    "optimize",
    "remove_dropout",
    "torch_threads",
]

ENGINES: tuple[str, ...] = ("eager", "optimized", "onnxruntime", "onnxruntime-naive", "openvino", *FORMAT_ENGINES)

#: the Python package each engine needs beyond torch (the pip name, and the extra that installs it)
_ENGINE_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "eager": (),
    "optimized": (),
    "onnxruntime": (("onnx", "export"), ("onnxruntime", "export")),
    "onnxruntime-naive": (("onnx", "export"), ("onnxruntime", "export")),
    "openvino": (("onnx", "export"), ("openvino", "openvino")),
}

class EngineUnavailableError(MissingPackageError):
    """An engine whose package is not installed (the message names the package and the pip command).

    Also a ValueError, so the CLI reports it as a one-line, user-fixable error."""


# --------------------------------------------------------------------------------------------------------
# engines


def _missing_packages(engine: str) -> list[tuple[str, str]]:
    if engine in FORMAT_ENGINES:  # the on-device formats (lightnets.deploy.format_engines)
        from .format_engines import missing_packages

        return missing_packages(engine)
    missing = []
    for package, extra in _ENGINE_PACKAGES[engine]:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append((package, extra))
    return missing


def available_engines() -> list[str]:
    """The engines whose packages are installed here."""
    return [e for e in ENGINES if not _missing_packages(e)]


def check_engine(engine: str) -> None:
    """ValueError for an unknown engine; ``EngineUnavailableError`` for one whose packages are missing."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    missing = _missing_packages(engine)
    if missing:
        packages = " ".join(p for p, _ in missing)
        extras = ",".join(sorted({e for _, e in missing}))
        raise EngineUnavailableError(
            f"engine {engine!r} needs the package(s) {packages}, which are not installed: "
            f"pip install {packages} (or pip install 'lightnets[{extras}]')"
        )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with PyTorch's intra-op thread count set to ``threads`` (None: leave it as it is)."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Runner:
    """A model behind an engine: ``runner(x)`` maps a float32 NCHW tensor to a tensor of logits.

    Any batch size works; channels, height and width must be those of ``input_shape``.  ``engine`` is the
    engine's key in ``ENGINES``, ``name`` a readable description (engine, model, settings), ``info`` the
    settings and versions as a dict, ``build_seconds`` the time it took to prepare (export, compile, ...).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        engine: str,
        name: str,
        input_shape: tuple[int, int, int, int],
        threads: int | None,
        info: dict[str, Any] | None = None,
        build_seconds: float = 0.0,
    ) -> None:
        self._forward = forward
        self.engine = engine
        self.name = name
        self.input_shape = tuple(input_shape)
        self.threads = threads
        self.info = dict(info or {})
        self.build_seconds = build_seconds

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.engine} runner expects a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise ValueError(f"{self.engine} runner expects float32 input, got {x.dtype}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape[1:] or x.shape[0] < 1:
            raise ValueError(
                f"{self.engine} runner expects input of shape (N, {', '.join(map(str, self.input_shape[1:]))}), "
                f"got {tuple(x.shape)}"
            )
        return self._forward(x)

    def __repr__(self) -> str:
        return f"Runner({self.name!r})"


def _model_label(model: nn.Module) -> str:
    return type(model).__name__


def _eager(model: nn.Module, input_shape: tuple[int, ...], threads: int | None) -> tuple[Callable, dict]:
    model = copy.deepcopy(model).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.inference_mode():
            return model(x)

    return forward, {"memory_format": "contiguous"}


def _optimized(model: nn.Module, input_shape: tuple[int, ...], threads: int | None) -> tuple[Callable, dict]:
    example = torch.randn(*input_shape)
    with torch_threads(threads), torch.no_grad():
        deployed = optimize(model, channels_last="auto", example_input=example)
    first_conv = next(
        (m for m in deployed.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)), None
    )
    channels_last = first_conv is not None and not first_conv.weight.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    example = example.contiguous(memory_format=fmt)
    graph = "torch.jit.freeze"
    with torch_threads(threads), torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated from PyTorch 2.13 on, in favour of torch.compile.  It is used here because
        # it measured as fast as torch.compile (inductor, freezing) for these models on CPU, which took ~23 s
        # to compile MobileNetV3-Large on our 2 cores; if it stops working, the folded module runs as it is.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            runnable: Callable = torch.jit.freeze(torch.jit.trace(deployed, example, check_trace=False))
            for _ in range(2):  # the profiling executor specialises on the first calls
                runnable(example)
        except Exception:  # pragma: no cover - TorchScript removed or unable to trace
            runnable, graph = deployed, "eager module"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.no_grad():
            return runnable(x.contiguous(memory_format=fmt))

    return forward, {"memory_format": "channels_last" if channels_last else "contiguous", "graph": graph}


_BUILDERS: dict[str, Callable[[nn.Module, tuple[int, ...], int | None], tuple[Callable, dict]]] = {
    "eager": _eager,
    "optimized": _optimized,
    "onnxruntime": onnxruntime_engine,
    "onnxruntime-naive": onnxruntime_naive_engine,
    "openvino": openvino_engine,
}


def make_runner(
    model: nn.Module,
    engine: str,
    *,
    input_shape: tuple[int, int, int, int],
    threads: int | None = None,
) -> Runner:
    """Prepare ``model`` for ``engine`` (one of ``ENGINES``) and return its ``Runner``.

    ``input_shape`` is (batch, channels, height, width): channels and size are fixed, the batch is not (the
    batch given is the one prepared first).  ``threads``: intra-op threads of the engine (None: the
    engine's default -- PyTorch's current setting, onnxruntime's and OpenVINO's own choice).  The model
    itself is not changed.  An engine whose package is missing raises ``EngineUnavailableError``.
    """
    check_engine(engine)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f"input_shape must be (batch, channels, height, width), got {input_shape!r}")
    if threads is not None:
        check_positive_int("threads", threads)
    start = time.perf_counter()
    if engine in FORMAT_ENGINES:
        from .format_engines import build

        forward, info = build(model, engine, shape, threads)
    else:
        forward, info = _BUILDERS[engine](model, shape, threads)
    info = {**info, "threads": threads}
    settings = ", ".join(f"{k}={v}" for k, v in info.items() if v is not None)
    return Runner(
        forward,
        engine=engine,
        name=f"{engine}: {_model_label(model)} ({settings})",
        input_shape=shape,
        threads=threads,
        info=info,
        build_seconds=time.perf_counter() - start,
    )


def load_runner(
    source: str | Any, engine: str, *, threads: int | None = None
) -> tuple[Runner, nn.Module, dict[str, Any]]:
    """A runner for a checkpoint (file or run directory): (runner, eager model, checkpoint).

    The input shape comes from the checkpoint's preprocessing (channels and crop size), so the runner takes
    exactly what ``lightnets.data.transforms.eval_transform`` produces.
    """
    from ..train.checkpoint import load_checkpoint, model_from_checkpoint

    if FORMAT_ENGINES.get(engine, (None, None))[1]:
        raise ValueError(f"engine {engine!r} is calibrated on random inputs (for timing only); for int8 predictions "
                         "export with `lightnets export SOURCE --quantize int8 --calib DIR` and predict with the file")
    model, ckpt = model_from_checkpoint(source if isinstance(source, dict) else load_checkpoint(source))
    prep = ckpt["preprocessing"]
    height, width = (int(s) for s in prep["input_size"])
    chans = int(prep.get("in_chans", ckpt["kwargs"].get("in_chans", 3)))
    runner = make_runner(model, engine, input_shape=(1, chans, height, width), threads=threads)
    runner.name = runner.name.replace(_model_label(model), ckpt["arch"], 1)
    return runner, model, ckpt

