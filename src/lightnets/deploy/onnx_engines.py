"""The engines that run an ONNX graph: ``onnxruntime``, ``onnxruntime-naive`` and ``openvino``.

Each builder takes (model, input shape, threads) and returns (forward, info) for ``engines.make_runner``:
``forward`` maps a float32 NCHW tensor to logits, ``info`` records the settings and versions.  The tuned
engines export ``optimize``'s inference form with ``lightnets.deploy.onnx_graph.onnx_model``; large batches
on several threads run as micro-batches on single-threaded streams (see ``MICRO_BATCH``).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from .inference_form import optimize

__all__ = ["MICRO_BATCH", "STREAMS_MIN_BATCH", "onnxruntime_engine", "onnxruntime_naive_engine", "openvino_engine"]


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


def onnxruntime_engine(
    model: nn.Module, input_shape: tuple[int, ...], threads: int | None
) -> tuple[Callable, dict]:
    """onnxruntime on ``optimize``'s ONNX graph with every graph optimisation and sequential execution; on
    ``threads >= 2`` large batches run as micro-batches on single-threaded sessions side by side."""
    import onnxruntime as ort

    from .onnx_graph import onnx_model

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


def onnxruntime_naive_engine(
    model: nn.Module, input_shape: tuple[int, ...], threads: int | None
) -> tuple[Callable, dict]:
    """The baseline: the eager model through ``torch.onnx.export`` with a dynamic batch axis as it comes, in
    onnxruntime with default session options except the thread count."""
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


def _openvino_latency(core: Any, ov_model: Any, input_shape: tuple[int, ...], config: dict[str, Any]) -> Callable:
    """Latency path: one compiled model per batch size (compiled on first use, at most
    ``_OPENVINO_MAX_COMPILED`` kept)."""
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

    def latency_forward(x: torch.Tensor) -> torch.Tensor:
        request = request_for(x.shape[0])
        request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy())}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return latency_forward


def _openvino_streams(
    core: Any, ov_model: Any, input_shape: tuple[int, ...], config: dict[str, Any], streams: int,
    latency_forward: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Throughput path for large batches (see ``MICRO_BATCH``): micro-batches on ``streams`` OpenVINO
    streams through an ``AsyncInferQueue``; the remainder (and small batches) take ``latency_forward``."""
    import openvino as ov

    micro = ov_model.clone()
    micro.reshape([MICRO_BATCH, *input_shape[1:]])
    throughput = {**config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
    compiled_micro = core.compile_model(micro, "CPU", throughput)
    out_shape = tuple(compiled_micro.output(0).shape)[1:]
    queue = ov.AsyncInferQueue(compiled_micro, streams)

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < STREAMS_MIN_BATCH:
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

    return forward


def openvino_engine(model: nn.Module, input_shape: tuple[int, ...], threads: int | None) -> tuple[Callable, dict]:
    """OpenVINO's CPU plugin on ``optimize``'s ONNX graph: latency hint, fp32 inference precision (OpenVINO
    would otherwise use bf16 on CPUs with AVX512-BF16/AMX), streams for large batches on ``threads >= 2``."""
    import openvino as ov

    from .onnx_graph import onnx_model

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
    forward = _openvino_latency(core, ov_model, input_shape, config)
    streams = threads if threads and threads > 1 else 0
    info = {"openvino": ov.__version__, "precision": "f32", "hint": "LATENCY"}
    if not streams:
        return forward, info
    return _openvino_streams(core, ov_model, input_shape, config, streams, forward), {**info, "streams": streams}
