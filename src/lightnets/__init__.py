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
]
