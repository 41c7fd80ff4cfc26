"""The deploy stage: a model's inference form (``inference_form``: ``optimize``) and the engines that run it
(``engines``: ``make_runner``, ``ENGINES``; the ONNX-graph ones in ``onnx_engines``), the one-call export to an
on-device file checked in its own runtime (``to_device``: ``export``), the on-device formats (``runtimes``),
ONNX export (``onnx_export``, graph in ``onnx_graph``) and safetensors (``safetensors_export``), int8 fallback
(``quant_fallback``) and the benchmark (``bench``; ``timing``, ``bench_rows``, ``bench_plot``).
``from lightnets import deploy`` gives the engine layer and ``deploy.export``."""

from .engines import (
    CHANNELS_LAST_DEFAULT,
    ENGINES,
    MICRO_BATCH,
    STREAMS_MIN_BATCH,
    EngineUnavailableError,
    Runner,
    available_engines,
    fold_batchnorm,
    load_runner,
    make_runner,
    optimize,
    remove_dropout,
    torch_threads,
)

# the one-call export (format module, checks in its runtime, int8 with fallback, report)
from .to_device import export

__all__ = [
    "CHANNELS_LAST_DEFAULT",
    "ENGINES",
    "EngineUnavailableError",
    "MICRO_BATCH",
    "Runner",
    "STREAMS_MIN_BATCH",
    "available_engines",
    "export",
    "fold_batchnorm",
    "load_runner",
    "make_runner",
    "optimize",
    "remove_dropout",
    "torch_threads",
]
