"""Measure a model: parameters, MACs / FLOPs and memory access cost (``profile``, built from ``counting``,
``formulas``, ``memory_access`` and ``results``), the guideline lab G1-G4 (the ``lab`` package) and the
model-zoo tables (``zoo``).  The names of ``profile`` are re-exported here, so
``from lightnets.analysis import profile`` gives the function."""

from .profile import (
    DEFINITIONS,
    LayerRow,
    OpRecord,
    Profile,
    Totals,
    conv_macs,
    conv_params,
    count_macs,
    count_params,
    mac_lower_bound,
    pointwise_mac,
    pointwise_memory_access_cost,
    profile,
)

__all__ = [
    "DEFINITIONS",
    "LayerRow",
    "OpRecord",
    "Profile",
    "Totals",
    "conv_macs",
    "conv_params",
    "count_macs",
    "count_params",
    "mac_lower_bound",
    "pointwise_mac",
    "pointwise_memory_access_cost",
    "profile",
]
