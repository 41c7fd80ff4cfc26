"""lightnets: lightweight image-classification CNNs exact to their papers, with cost analysis, training
and export."""

from .registry import create_model, get_card, list_families, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "get_card",
    "list_families",
    "list_models",
    "model_info",
    "register_model",
    "__version__",
    "compare_deployed",
    "evaluate_deployed",
]


def __getattr__(name: str):  # lazy: the deployed-model evaluation imports onnx / runtimes only when used
    if name in ("evaluate_deployed", "compare_deployed"):
        from .evaluation import deployed as eval_deployed

        return getattr(eval_deployed, name)
    raise AttributeError(f"module 'lightnets' has no attribute {name!r}")
