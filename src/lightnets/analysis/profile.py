"""Complexity analysis: parameters, MACs / FLOPs, activation memory and memory access cost.

The quantities are named so that they cannot be confused:

``macs``
    Multiply-accumulates of convolutions and matrix products, what the MobileNet papers call "MAdds" and
    the ShuffleNet papers call "FLOPs".  Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``
    (which reports 2 FLOPs per multiply-accumulate for these ops and does not count bias additions,
    normalisation, activations, pooling or other elementwise work, exactly as the papers do).
``flops``
    ``2 * macs`` (a multiply and an add), FlopCounterMode's own unit.  Never the papers' "FLOPs".
``memory_access_cost``
    ShuffleNetV2's "MAC" (Ma et al. 2018, arXiv:1807.11164, Section 2), counted here because no PyTorch tool
    counts it.  Per operation: the elements it reads plus the elements it writes.  Reads are every tensor
    argument, so a convolution or linear layer reads its input, its weight and its bias; a batch norm reads
    its input and its four per-channel vectors; elementwise ops, pooling, ``cat`` and the copy inside a
    channel shuffle read their inputs.  Writes are the tensors it returns (an in-place op such as
    ``relu_`` reads and rewrites its argument).  View ops (``view``, ``transpose``, ``chunk``/``split``,
    ``flatten`` of a contiguous tensor) move no data and cost nothing.  The model total is the plain sum
    over operations: it assumes no fusion and no cache reuse, every op fetching its operands from memory and
    storing its result, which is the model of Section 2 (and why guideline G4 calls elementwise ops costly).
    For a 1x1 convolution this gives the paper's ``h*w*(c1 + c2) + c1*c2/g`` (see ``pointwise_mac``).
``activation_elements``
    The elements of every tensor an operation newly creates (the outputs of all non-view, non-in-place ops;
    the input image is not included), summed.  This is the memory a runtime needs if it never reuses a
    buffer, and roughly what training keeps for the backward pass.  Also counted here.
``peak_activation_elements``
    (totals only) the largest total size of activation tensors alive at the same time when every tensor is
    freed right after its last use, the input image included, parameters and buffers excluded: an estimate
    of an inference runtime's working memory, not a measurement of PyTorch's allocator.

Byte counts are ``elements * dtype.itemsize`` for the ``dtype`` passed to ``profile`` (every tensor assumed
stored in that type); the forward pass itself runs in the model's own dtype and on its own device, since
every count here depends only on shapes.  Tables print kB = 1000 bytes.

This module assembles the per-layer ``profile``; the parts live beside it: ``counting`` (whole-model params and
MACs), ``formulas`` (the papers' formulas), ``memory_access`` (the op-by-op recorder) and ``results`` (the
printable result types).  Their public names are importable from here and from ``lightnets.analysis``.
"""

from __future__ import annotations

import torch
from torch import nn

from .counting import _in_chans, _input_hw, _model_device_dtype, count_macs, count_params
from .formulas import conv_macs, conv_params, mac_lower_bound, pointwise_mac, pointwise_memory_access_cost
from .memory_access import Trace, trace_forward
from .results import _ROW_SUM_FIELDS, DEFINITIONS, LayerRow, OpRecord, Profile, Totals

# The names that lived here before the split stay importable from here (``_in_chans`` is used by the CLI).
__all__ = [
    "DEFINITIONS",
    "LayerRow",
    "OpRecord",
    "Profile",
    "Totals",
    "_in_chans",
    "conv_macs",
    "conv_params",
    "count_macs",
    "count_params",
    "mac_lower_bound",
    "pointwise_mac",
    "pointwise_memory_access_cost",
    "profile",
]


def _profile_input(
    model: nn.Module,
    input_size: int | tuple[int, int],
    batch_size: int,
    dtype: torch.dtype,
    in_chans: int | None,
) -> torch.Tensor:
    """The all-zero input ``profile`` runs on, after checking every argument (ValueError naming the bad one)."""
    h, w = _input_hw(input_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")
    channels = in_chans or _in_chans(model)
    device, run_dtype = _model_device_dtype(model)
    if device.type == "meta":  # tensor lifetimes are told apart by their storage addresses
        raise ValueError(
            "profile runs a real forward pass; move the model off the meta device (count_macs works there)"
        )
    return torch.zeros(batch_size, channels, h, w, device=device, dtype=run_dtype)


def _layer_rows(trace: Trace, bytes_per_element: int) -> list[LayerRow]:
    """A row per module that ran ops of its own or owns parameters (a shared parameter counts once, at its
    first owner), in execution order; modules that never ran but own parameters go last."""
    rows = []
    seen_params: set[int] = set()
    for module, acc in trace.layers.items():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen_params]
        seen_params.update(id(p) for p in own)
        params = sum(p.numel() for p in own)
        if not (acc.ran_ops or params):
            continue
        rows.append(
            LayerRow(
                name=acc.name,
                type=acc.type,
                is_leaf=acc.is_leaf,
                calls=acc.calls,
                output_shape=acc.output_shape,
                params=params,
                macs=acc.macs,
                flops=2 * acc.macs,
                activation_elements=acc.activation_elements,
                activation_bytes=acc.activation_elements * bytes_per_element,
                memory_access_cost=acc.memory_access_cost,
                memory_access_cost_bytes=acc.memory_access_cost * bytes_per_element,
            )
        )
    first_op: dict[str, int] = {}
    for i, op in enumerate(trace.ops):
        first_op.setdefault(op.module, i)
    rows.sort(key=lambda r: first_op.get(r.name, len(trace.ops)))
    return rows


@torch.no_grad()
def profile(
    model: nn.Module,
    input_size: int | tuple[int, int] = 224,
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
    in_chans: int | None = None,
) -> Profile:
    """Profile one forward pass (eval mode, no grad) on a ``batch_size x in_chans x H x W`` input.

    Returns a row per module that does work (see ``LayerRow``) and the totals; the totals' ``macs`` equal
    ``batch_size * count_macs(model, input_size)`` and their ``params`` equal ``count_params(model)``.
    ``dtype`` sets the element size of the byte counts (see the module docstring).
    """
    x = _profile_input(model, input_size, batch_size, dtype, in_chans)
    trace = trace_forward(model, x)
    bpe = dtype.itemsize
    rows = _layer_rows(trace, bpe)
    peak = trace.peak_activation_elements
    sums = {f: sum(getattr(r, f) for r in rows) for f in _ROW_SUM_FIELDS}
    totals = Totals(**sums, peak_activation_elements=peak, peak_activation_bytes=peak * bpe)
    return Profile(
        model=type(model).__name__,
        input_shape=tuple(x.shape),
        dtype=str(dtype).removeprefix("torch."),
        bytes_per_element=bpe,
        rows=rows,
        totals=totals,
        ops=trace.ops,
    )
