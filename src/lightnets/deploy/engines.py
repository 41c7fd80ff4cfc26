"""The deploy path: a model's inference form, and the engines that run it.

``optimize(model)`` returns the inference form of any registered model: a copy in eval mode with every
BatchNorm folded into the convolution before it, dropout removed, gradients off, and channels-last memory
where that measured faster.  Activations are left exactly as they are (ReLU6 stays a clamp, hard-swish stays
``x * relu6(x + 3) / 6``), so its outputs equal the eager model's up to float rounding (<= 1e-5 in the tests).

Folding is done with PyTorch's ``torch.nn.utils.fusion.fuse_conv_bn_eval`` on every Conv2d -> BatchNorm2d
pair that sits next to each other in an ``nn.Sequential`` (every lightnets block is built that way:
``ConvNormAct`` and the ShuffleNet branches).  The pairs are found by walking the modules rather than with
``torch.fx``-based fusion because symbolic tracing fails on three of the five families (channel shuffle
branches on the tensor's shape; MobileNetV3 slices its classifier ``nn.Sequential``).  The BatchNorm is
replaced by ``nn.Identity`` so the containers keep their indices.

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
onnxruntime            ``optimize`` exported by ``lightnets.deploy.onnx_export`` (shape arithmetic folded, batch axis
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
import io
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .format_engines import FORMAT_ENGINES
from .onnx_export import MissingPackageError

__all__ = [
    "ENGINES",
    "EngineUnavailableError",
    "Runner",
    "available_engines",
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

#: ``optimize(channels_last="auto")`` without an example input: channels-last on CPU.  Measured with
#: benchmarks/deploy_latency.py-style interleaved timing at batch 1 (docs/benchmarks.md): channels-last was
#: faster for ShuffleNetV2, MobileNetV2 and MobileNetV3 but not MobileNetV1 (dense 1x1 convolutions), so with
#: an example input "auto" times both layouts on it and keeps the faster.
CHANNELS_LAST_DEFAULT = True


class EngineUnavailableError(MissingPackageError):
    """An engine whose package is not installed (the message names the package and the pip command).

    Also a ValueError, so the CLI reports it as a one-line, user-fixable error."""


# --------------------------------------------------------------------------------------------------------
# optimize


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a Conv2d (BatchNorm1d: a Linear) in an
    ``nn.Sequential``; the norm becomes ``nn.Identity``.  The model must be in eval mode.  Returns the count."""
    if model.training:
        raise ValueError(
            "fold_batchnorm needs a model in eval mode (the running statistics are what is folded)"
        )
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            first, norm = module[i], module[i + 1]
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
                if isinstance(first, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(first, norm)
                elif isinstance(first, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                    module[i] = fuse_linear_bn_eval(first, norm)
                else:
                    continue
                module[i + 1] = nn.Identity()
                folded += 1
    return folded


def remove_dropout(model: nn.Module) -> int:
    """Replace, in place, every dropout module with ``nn.Identity`` (they are identities in eval mode anyway).
    Returns the count."""
    removed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(module, name, nn.Identity())
                removed += 1
    return removed


def _faster_layout_is_channels_last(
    model: nn.Module, x: torch.Tensor, rounds: int = 3, repeats: int = 3
) -> bool:
    """Time ``model`` on ``x`` in both memory formats (interleaved, medians) and say whether channels-last won."""
    candidates = {
        False: (model, x.contiguous()),
        True: (
            copy.deepcopy(model).to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        ),
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for module, inp in candidates.values():
        module(inp)  # warm-up (allocations, oneDNN primitive creation)
    for _ in range(rounds):
        for key, (module, inp) in candidates.items():
            for _ in range(repeats):
                start = time.perf_counter()
                module(inp)
                times[key].append(time.perf_counter() - start)
    return float(np.median(times[True])) < float(np.median(times[False]))


@torch.no_grad()
def optimize(
    model: nn.Module,
    *,
    channels_last: bool | str = "auto",
    example_input: torch.Tensor | None = None,
    atol: float = 1e-4,
) -> nn.Module:
    """The inference form of ``model`` (a copy; ``model`` itself is not changed).

    BatchNorm folded into the preceding convolutions, dropout removed, eval mode, no gradients, and
    channels-last memory if ``channels_last`` is True, or "auto" and it is faster: "auto" times both memory
    formats on ``example_input`` when one is given (a few calls each), else uses ``CHANNELS_LAST_DEFAULT``.
    A channels-last model accepts either memory format.  With ``example_input`` the result is also checked
    against the eager model on it (max abs diff <= ``atol``, else RuntimeError).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if channels_last != "auto" and not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
    deployed = copy.deepcopy(model).eval()
    fold_batchnorm(deployed)
    remove_dropout(deployed)
    deployed.requires_grad_(False)
    if channels_last == "auto":
        if example_input is not None:
            channels_last = _faster_layout_is_channels_last(deployed, example_input)
        else:
            channels_last = CHANNELS_LAST_DEFAULT
    if channels_last:
        deployed = deployed.to(memory_format=torch.channels_last)
    if example_input is not None:
        was_training = model.training
        model.eval()
        try:
            ref = model(example_input)
        finally:
            model.train(was_training)
        diff = float((deployed(example_input) - ref).abs().max())
        if not diff <= atol:
            raise RuntimeError(
                f"optimized {type(model).__name__} differs from the eager model by {diff:.3g} (> {atol:g})"
            )
    return deployed


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


def _check_engine(engine: str) -> None:
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


def _ort_options(threads: int | None, tuned: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
    return options


def _ort_forward(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    input_name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {input_name: np.ascontiguousarray(x.detach().cpu().numpy())})
        return torch.from_numpy(logits)

    return forward


#: Large batches on ``threads >= 2`` run as micro-batches of this size on ``threads`` single-threaded streams
#: (sessions / OpenVINO streams) side by side: no per-layer synchronisation between threads, and each
#: micro-batch's activations stay in cache.  ShuffleNetV2 x1.0 at batch 32 on 2 cores: 2.3 ms per image
#: against 2.5 as one 2-thread batch (docs/benchmarks.md).
MICRO_BATCH = 4
STREAMS_MIN_BATCH = 8


def _split_rounds(n: int, streams: int) -> list[list[slice]]:
    """Micro-batch slices of a batch of ``n``, dealt round-robin to ``streams`` workers."""
    chunks = [slice(i, min(i + MICRO_BATCH, n)) for i in range(0, n, MICRO_BATCH)]
    return [chunks[w::streams] for w in range(streams)]


def _onnxruntime(
    model: nn.Module, input_shape: tuple[int, ...], threads: int | None
) -> tuple[Callable, dict]:
    import onnxruntime as ort

    from .onnx_export import onnx_model

    data = onnx_model(optimize(model, channels_last=False), input_shape).SerializeToString()
    session = ort.InferenceSession(
        data, _ort_options(threads, tuned=True), providers=["CPUExecutionProvider"]
    )
    latency_forward = _ort_forward(session)
    streams = threads if threads and threads > 1 else 0
    if not streams:
        return latency_forward, {"onnxruntime": ort.__version__, "graph_optimization": "all"}
    workers = [
        ort.InferenceSession(data, _ort_options(1, tuned=True), providers=["CPUExecutionProvider"])
        for _ in range(streams)
    ]
    pool = ThreadPoolExecutor(streams, thread_name_prefix="lightnets-ort")
    input_name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < STREAMS_MIN_BATCH:
            return latency_forward(x)
        array = np.ascontiguousarray(x.detach().cpu().numpy())
        out: list[np.ndarray | None] = [None] * x.shape[0]

        def work(worker: Any, slices: list[slice]) -> None:
            for sl in slices:  # onnxruntime releases the GIL while it runs
                out[sl] = list(worker.run(None, {input_name: array[sl]})[0])

        list(pool.map(work, workers, _split_rounds(x.shape[0], streams)))
        return torch.from_numpy(np.stack(out))

    return forward, {"onnxruntime": ort.__version__, "graph_optimization": "all", "streams": streams}


def _onnxruntime_naive(
    model: nn.Module, input_shape: tuple[int, ...], threads: int | None
) -> tuple[Callable, dict]:
    import onnxruntime as ort

    model = copy.deepcopy(model).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(*input_shape),), buf, dynamo=False, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    session = ort.InferenceSession(
        buf.getvalue(), _ort_options(threads, tuned=False), providers=["CPUExecutionProvider"]
    )
    return _ort_forward(session), {"onnxruntime": ort.__version__, "session_options": "default"}


_OPENVINO_MAX_COMPILED = 8  # compiled batch sizes kept per runner


def _openvino(model: nn.Module, input_shape: tuple[int, ...], threads: int | None) -> tuple[Callable, dict]:
    import openvino as ov

    from .onnx_export import onnx_model

    proto = onnx_model(optimize(model, channels_last=False), input_shape)
    core = ov.Core()
    ov_model = core.read_model(proto.SerializeToString(), ov.Tensor(np.empty(0, dtype=np.uint8)))
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "NUM_STREAMS": 1,
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled: dict[int, Any] = {}

    def request_for(batch: int) -> Any:
        if batch not in compiled:
            if len(compiled) >= _OPENVINO_MAX_COMPILED:  # bounded: drop the oldest batch size
                compiled.pop(next(iter(compiled)))
            static = ov_model.clone()
            static.reshape([batch, *input_shape[1:]])
            compiled[batch] = core.compile_model(static, "CPU", config).create_infer_request()
        return compiled[batch]

    request_for(input_shape[0])
    streams = threads if threads and threads > 1 else 0
    queue = None
    if streams:  # throughput path for large batches (see MICRO_BATCH)
        micro = ov_model.clone()
        micro.reshape([MICRO_BATCH, *input_shape[1:]])
        throughput = {**config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
        compiled_micro = core.compile_model(micro, "CPU", throughput)
        out_shape = tuple(compiled_micro.output(0).shape)[1:]
        queue = ov.AsyncInferQueue(compiled_micro, streams)

    def latency_forward(x: torch.Tensor) -> torch.Tensor:
        request = request_for(x.shape[0])
        request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy())}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if queue is None or n < STREAMS_MIN_BATCH:
            return latency_forward(x)
        full = n - n % MICRO_BATCH
        array = np.ascontiguousarray(x[:full].detach().cpu().numpy())
        out = np.empty((full, *out_shape), dtype=np.float32)

        def done(request: Any, start: int) -> None:
            out[start : start + MICRO_BATCH] = request.get_output_tensor(0).data

        queue.set_callback(done)
        for start in range(0, full, MICRO_BATCH):
            queue.start_async({0: array[start : start + MICRO_BATCH]}, userdata=start)
        queue.wait_all()
        result = torch.from_numpy(out)
        return torch.cat([result, latency_forward(x[full:])]) if full < n else result

    info = {"openvino": ov.__version__, "precision": "f32", "hint": "LATENCY"}
    return forward, {**info, "streams": streams} if streams else info


_BUILDERS: dict[str, Callable[[nn.Module, tuple[int, ...], int | None], tuple[Callable, dict]]] = {
    "eager": _eager,
    "optimized": _optimized,
    "onnxruntime": _onnxruntime,
    "onnxruntime-naive": _onnxruntime_naive,
    "openvino": _openvino,
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
    _check_engine(engine)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f"input_shape must be (batch, channels, height, width), got {input_shape!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
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

