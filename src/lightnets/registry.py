"""One registry for every model variant, each with a model card that carries the paper's numbers.

A family module registers its builders with ``register_model``; ``create_model`` builds one by name,
``list_models`` filters names with a glob, ``model_info`` returns the card.  The cards' reference numbers
(``PaperRef``) are what the tests and ``lightnets models`` compare measured parameters and MACs against.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class PaperRef:
    """A published reference number for one model at one input resolution.

    ``macs`` and ``params`` are plain counts (569e6, not 569).  ``macs_rtol`` / ``params_rtol`` are the relative
    tolerances the tests hold the implementation to; ``params_round`` accepts a match at the paper's printed
    rounding instead (e.g. 0.1e6 for "4.2M").  ``exact_params`` is an exact count (torchvision's model cards).
    """

    source: str
    input_size: int = 224
    macs: float | None = None
    params: float | None = None
    top1: float | None = None
    macs_rtol: float = 0.02
    macs_round: float | None = None
    params_rtol: float = 0.05
    params_round: float | None = None
    exact_params: int | None = None
    note: str = ""  # why a published number is not held to (shown by `lightnets models --format json`)


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    input_size: int = 224
    refs: tuple[PaperRef, ...] = ()
    torchvision_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("builder")
        d["refs"] = [asdict(r) for r in self.refs]
        return d


_REGISTRY: dict[str, ModelCard] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    input_size: int = 224,
    refs: tuple[PaperRef, ...] | list[PaperRef] = (),
    torchvision_name: str | None = None,
) -> ModelCard:
    """Register ``builder(**kwargs)`` under ``name``.  Names are unique."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    card = ModelCard(
        name=name,
        family=family,
        builder=builder,
        kwargs=dict(kwargs or {}),
        description=description,
        input_size=input_size,
        refs=tuple(refs),
        torchvision_name=torchvision_name,
    )
    _REGISTRY[name] = card
    return card


def _ensure_loaded() -> None:
    # Importing the families registers them; done lazily so registry.py has no import cycle.
    from . import models  # noqa: F401


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a glob ``pattern`` (and ``family`` if given), sorted."""
    _ensure_loaded()
    return sorted(
        n for n, c in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (family is None or c.family == family)
    )


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted({c.family for c in _REGISTRY.values()})


def get_card(name: str) -> ModelCard:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name}*")[:8]
        hint = f"; did you mean one of {close}?" if close else "; see `lightnets models` or list_models()"
        raise ValueError(f"unknown model {name!r}{hint}") from None


def model_info(name: str) -> dict[str, Any]:
    """The model card of ``name`` as a plain dict (family, default kwargs, input size, paper references)."""
    return get_card(name).as_dict()


def create_model(
    name: str,
    weights: str | None = None,
    *,
    weights_sha256: str | None = None,
    allow_unverified: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.  ``kwargs`` override the card's defaults (num_classes, width_mult, ...).

    ``weights`` is a path or URL of a state_dict in the model's own layout (torchvision's layout for the
    models torchvision has).  Loading is strict about every key and shape, except that a classifier with a
    different class count is replaced (with a warning) when ``num_classes`` differs.  Files are read without
    executing code; URLs need a sha256 (``weights_sha256`` or torch.hub's hash-in-filename) unless
    ``allow_unverified=True``.
    """
    card = get_card(name)
    merged = {**card.kwargs, **kwargs}
    try:
        model = card.builder(**merged)
    except TypeError as e:  # unknown keyword: say which model and which keywords it takes
        raise ValueError(f"bad arguments for model {name!r}: {e}") from None
    if weights is not None:
        from .models.weights import load_pretrained

        load_pretrained(model, weights, sha256=weights_sha256, allow_unverified=allow_unverified)
    return model
