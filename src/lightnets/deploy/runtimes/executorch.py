"""The "executorch" format: PyTorch's on-device runtime (Android, iOS, embedded) with the XNNPACK backend.

Export: ``torch.export`` at batch 1 -> (int8: PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer``,
weights int8 symmetric per output channel, activations int8 per tensor, observers calibrated on the request's
real images, layers in ``ExportRequest.float_layers`` left unquantized by the quantizer's node filter, and
the concat's scale carried through the channel shuffle and split: ``SHARE_MOVEMENT_SCALES``)
-> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> a ``.pte`` program.  A ``.pte`` has no
place for free-form metadata, so the lightnets metadata is a sidecar ``<file>.pte.json``; it also records how
much of the graph XNNPACK took (``delegated_subgraphs``, ``undelegated_ops``).

ShuffleNetV2's channel split is ``x.chunk(2, dim=1)``, which exports as ``split_with_sizes`` -- an operator the
XNNPACK partitioner does not take, so every stride-1 unit broke the graph: 14 delegated subgraphs with the
split run by ExecuTorch's portable kernels between them.  At export time (on the copy, never the trained
model) each stride-1 unit's forward is replaced by the same split written as two slices, ``x[:, :c]`` and
``x[:, c:]`` -- the same values, bit for bit -- which XNNPACK delegates (static slice): the whole network
becomes one delegated subgraph.

Not delegated, still: ShuffleNetV1's stride-2 shortcut, ``AvgPool2d(3, 2, padding=1)``, averages over its
zero padding, which XNNPACK's average pooling refuses; those three pools run in portable kernels (4 delegated
subgraphs).  An explicit ``ZeroPad2d`` + unpadded pool (the same arithmetic) is partitioned, but XNNPACK 1.5's
compiler then failed to build the program (``XNNCompiler::compileModel failed: 0x1``), so it is not done.

Runtime: ExecuTorch's Python runtime (``executorch.runtime``).  Its XNNPACK thread pool is process-wide and
starts with one thread per core the runtime detects, so ``load(path, threads)`` sets it explicitly.  The
program is exported at batch 1 (the on-device case); a larger batch runs image by image.
"""

from __future__ import annotations

import copy
import types
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import ExportRequest, Format, atomic_write, read_sidecar, register_format, write_sidecar
from ._common import logits_layer, share_scales_through_movement, with_act_observer

__all__ = ["count_delegates", "export", "load", "read_metadata", "slice_channel_split"]

#: int8 settings, chosen with ``benchmarks/int8_agreement.py --select`` (ImageNet ShuffleNetV2 1.0x, 64
#: calibration train photos, agreement with fp32 on the 180 other train photos; one photo = 0.56 points).
#: The activation observer: "histogram" (the XNNPACK quantizer's own default, a range chosen on a histogram
#: to minimise the quantization error) or "minmax" (the observed range): 95.6 % against 96.1 % without the
#: scale sharing below, a one-photo difference; the tflite format, measured with the sharing, had histogram
#: clearly ahead (logit error 0.114 against 0.158), so the quantizer's default is kept.
ACT_OBSERVER = "histogram"
#: the logits layer (a Linear) quantized dynamically -- int8 weights, its input quantized per call, float
#: logits out (XNNPACK's qd8-f32-qc8w fully-connected) -- instead of statically with an int8 output.
#: Measured: 94.4 % against 95.6 % (without the sharing), so off.
DYNAMIC_LOGITS = False
#: data-movement ops take their input's scale (see ``share_scales_through_movement``): XNNPACK's quantizer
#: leaves the shuffle's ``contiguous`` and everything after it unannotated, so each split was requantized.
#: Measured: 95.6 % -> 97.8 % (mean relative logit error 0.114), the same file size and one XNNPACK subgraph;
#: batch-1 latency (2 threads, one process) 1.82 -> 1.57 ms.  On the 153 val photos, measured only after the
#: choice: 94.8 % -> 95.4 %.
SHARE_MOVEMENT_SCALES = True


def _sliced_unit_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ShuffleV2Unit.forward (stride 1) with the channel split as two slices instead of ``chunk``."""
    from ...models.layers import channel_shuffle

    half = x.shape[1] // 2
    out = torch.cat((x[:, :half], self.branch2(x[:, half:])), dim=1)
    return channel_shuffle(out, 2)


def slice_channel_split(model: nn.Module) -> int:
    """In place: give every stride-1 ShuffleNetV2 unit the slicing forward (see the module docstring).
    Returns how many units were changed."""
    from ...models.shufflenet_v2 import ShuffleV2Unit

    changed = 0
    for module in model.modules():
        if isinstance(module, ShuffleV2Unit) and module.branch1 is None:
            module.forward = types.MethodType(_sliced_unit_forward, module)
            changed += 1
    return changed


def _quantizer_class() -> type:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class _Quantizer(XNNPACKQuantizer):
        """XNNPACK's quantizer, then (``SHARE_MOVEMENT_SCALES``) the scales shared through data movement."""

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            if SHARE_MOVEMENT_SCALES:
                share_scales_through_movement(model)
            return model

    return _Quantizer


def _quantized_module(program: Any, request: ExportRequest, logits: str | None = None) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    if request.calib is None or len(request.calib) == 0:
        raise ValueError("int8 export needs calibration images (ExportRequest.calib)")
    _Quantizer = _quantizer_class()
    config = with_act_observer(get_symmetric_quantization_config(is_per_channel=True), ACT_OBSERVER)
    quantizer = _Quantizer().set_global(config)
    if DYNAMIC_LOGITS and logits is not None and logits not in request.float_layers:
        quantizer.set_module_name(logits, get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    if request.float_layers:  # set_module_name(name, None) is not supported: filter those nodes out instead
        in_float = [get_module_name_filter(name) for name in request.float_layers]
        quantizer.set_filter_function(lambda node: not any(f(node) for f in in_float))
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for image in request.calib:  # the program is traced at batch 1
            prepared(image[None])
    return convert_pt2e(prepared)


def count_delegates(program: Any) -> tuple[int, dict[str, int]]:
    """(XNNPACK subgraphs, operators left to ExecuTorch's portable kernels) of a lowered program."""
    graph = program.exported_program().graph_module.graph
    calls = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    delegates = sum("executorch_call_delegate" in c for c in calls)
    others = Counter(c for c in calls if "executorch_call_delegate" not in c and "getitem" not in c)
    return delegates, dict(others)


def export(request: ExportRequest) -> Path:
    """Write the fp32 or int8 ``.pte`` program and its sidecar metadata."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if request.quantize not in (None, "int8"):
        raise ValueError(f"executorch: quantize must be None or 'int8', got {request.quantize!r}")
    model = copy.deepcopy(request.model).eval()
    slice_channel_split(model)
    example = (request.example[:1].contiguous(),)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices of torch.export / torchao internals
        program = torch.export.export(model, example)
        if request.quantize == "int8":
            program = torch.export.export(_quantized_module(program, request, logits_layer(model)), example)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    delegates, others = count_delegates(lowered)
    path = atomic_write(Path(request.out_path), bytes(lowered.buffer))
    write_sidecar(path, {**request.metadata, "delegated_subgraphs": delegates, "undelegated_ops": others})
    return path


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK's workers); None leaves it as it is."""
    if threads:
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )

        if _threadpool_get_thread_count() != threads:
            _unsafe_reset_threadpool(int(threads))


def load(path: Path, threads: int | None = None) -> Any:
    """A runner on ExecuTorch's Python runtime: (N, C, H, W) float32 -> (N, classes), one image per call."""
    from executorch.runtime import Runtime

    set_threads(threads)
    method = Runtime.get().load_program(Path(path)).load_method("forward")
    if method is None:  # pragma: no cover - every lightnets program has forward
        raise ValueError(f"{path} has no forward method")

    def run(x: np.ndarray) -> np.ndarray:
        set_threads(threads)  # another runner in this process may have resized the shared pool
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return np.concatenate([method.execute([image[None]])[0].numpy() for image in x])

    return run


def read_metadata(path: Path) -> dict[str, Any]:
    return read_sidecar(Path(path))


FORMAT = register_format(
    Format(name="executorch", suffix=".pte", extra="executorch", export=export, load=load,
           read_metadata=read_metadata, packages=("executorch", "torchao"))  # fmt: skip
)
