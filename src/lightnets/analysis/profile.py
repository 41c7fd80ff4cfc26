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
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

#: What each field of a profile row means; written into ``Profile.to_dict()`` so that files explain themselves.
DEFINITIONS: dict[str, str] = {
    "params": "parameter elements owned by the module",
    "macs": "multiply-accumulates of convolutions and matrix products (papers' MAdds), by FlopCounterMode",
    "flops": "2 x macs",
    "activation_elements": "elements of tensors newly created by the module's ops (no views, no in-place)",
    "memory_access_cost": "ShuffleNetV2's MAC: elements read (inputs, weights) + written (outputs), per op, summed",
    "peak_activation_elements": "largest total of activation tensors alive at once, each freed after last use",
    "*_bytes": "the element count times the itemsize of the profiled dtype",
}


# --------------------------------------------------------------------------------------------------------
# Parameters and MACs of a whole model
# --------------------------------------------------------------------------------------------------------


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    try:
        if len(pair) != 2 or any(isinstance(v, bool) for v in pair):
            raise TypeError
        h, w = operator.index(pair[0]), operator.index(pair[1])  # ints (numpy ints too), never floats
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


def _input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    return _pair(input_size, "input_size")


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("model has no Conv2d layer to infer its input channels from; pass in_chans")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a single image (batch 1), in eval mode."""
    h, w = _input_hw(input_size)
    device, dtype = _model_device_dtype(model)
    x = torch.zeros(1, in_chans or _in_chans(model), h, w, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------------------------------------
# The papers' formulas, as pure functions (checked against profiled modules in tests/analysis/test_analysis.py)
# --------------------------------------------------------------------------------------------------------


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if groups <= 0 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"channels must be divisible by groups: in_channels={in_channels}, "
            f"out_channels={out_channels}, groups={groups}"
        )


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    groups: int = 1,
    bias: bool = False,
) -> int:
    """Parameters of a 2-D convolution: ``K^2 * Cin * Cout / g`` (+ ``Cout`` with a bias).

    Depthwise is ``groups = Cin``: ``K^2 * C`` (MobileNetV1, Sec. 3.1).
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    return kh * kw * in_channels // groups * out_channels + (out_channels if bias else 0)


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    output_size: int | tuple[int, int],
    groups: int = 1,
) -> int:
    """Multiply-accumulates of a 2-D convolution for one image: ``K^2 * Cin * Cout * H * W / g``.

    ``output_size`` is the output's ``H x W`` (MobileNetV1 writes ``D_K^2 * M * N * D_F^2``).  A 1x1 convolution
    gives ShuffleNetV2's ``B = h*w*c1*c2 / g``.
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    oh, ow = _pair(output_size, "output_size")
    return kh * kw * in_channels // groups * out_channels * oh * ow


def pointwise_memory_access_cost(h: int, w: int, c1: int, c2: int, groups: int = 1) -> int:
    """Memory access cost (elements) of a 1x1 convolution, ShuffleNetV2 Sec. 2 (G1, G2):
    ``h*w*(c1 + c2) + c1*c2/g``: the input feature map, the output feature map and the weights.

    "MAC" in that paper means memory access cost, not multiply-accumulates.
    """
    _check_groups(c1, c2, groups)
    return h * w * (c1 + c2) + c1 * c2 // groups


#: The paper's name for ``pointwise_memory_access_cost`` (MAC = memory access cost there).
pointwise_mac = pointwise_memory_access_cost


def mac_lower_bound(h: int, w: int, B: float) -> float:  # noqa: N803 - the paper's symbol
    """ShuffleNetV2's bound (Sec. 2, G1): a 1x1 convolution with ``B = h*w*c1*c2`` multiply-accumulates has
    memory access cost ``>= 2*sqrt(h*w*B) + B/(h*w)``, with equality when ``c1 == c2`` (by AM-GM)."""
    hw = h * w
    return 2.0 * math.sqrt(hw * B) + B / hw


# --------------------------------------------------------------------------------------------------------
# Per-layer profile
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpRecord:
    """One ATen operation of the forward pass.  ``module`` is the innermost module that ran it."""

    module: str
    op: str
    output_shape: tuple[int, ...] | None
    macs: int
    memory_access_cost: int
    activation_elements: int


@dataclass(frozen=True)
class LayerRow:
    """The cost of one module's own operations (for a leaf module: all of its work).

    A container module gets a row only for ops its own ``forward`` runs outside its children (a residual add,
    a ``cat``, a functional channel shuffle); ``is_leaf`` tells the two apart.  ``output_shape`` is the module's
    output (of its last call); ``calls`` is how often it ran.
    """

    name: str
    type: str
    is_leaf: bool
    calls: int
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    flops: int
    activation_elements: int
    activation_bytes: int
    memory_access_cost: int
    memory_access_cost_bytes: int


@dataclass(frozen=True)
class Totals:
    """Whole-model numbers.  Every field but the peak is the sum of the rows' fields."""

    params: int
    macs: int
    flops: int
    activation_elements: int
    activation_bytes: int
    peak_activation_elements: int
    peak_activation_bytes: int
    memory_access_cost: int
    memory_access_cost_bytes: int


_ROW_SUM_FIELDS = (
    "params",
    "macs",
    "flops",
    "activation_elements",
    "activation_bytes",
    "memory_access_cost",
    "memory_access_cost_bytes",
)

# (header with its unit, row field, scale, format) for Profile.to_table
_TABLE_COLUMNS = (
    ("Params (K)", "params", 1e3, ".2f"),
    ("MACs (M)", "macs", 1e6, ".3f"),
    ("FLOPs (M, 2xMACs)", "flops", 1e6, ".3f"),
    ("Activations (K elem)", "activation_elements", 1e3, ".1f"),
    ("Activations (kB)", "activation_bytes", 1e3, ".1f"),
    ("Mem. access (K elem)", "memory_access_cost", 1e3, ".1f"),
    ("Mem. access (kB)", "memory_access_cost_bytes", 1e3, ".1f"),
)


def _shape_str(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape is not None else ""


@dataclass(frozen=True)
class Profile:
    """Per-layer and total cost of one forward pass; see the module docstring for every definition."""

    model: str
    input_shape: tuple[int, int, int, int]
    dtype: str
    bytes_per_element: int
    rows: list[LayerRow]
    totals: Totals
    ops: list[OpRecord] = field(default_factory=list, repr=False)

    def row(self, name: str) -> LayerRow:
        """The row of module ``name`` (its name in ``model.named_modules()``; the root is ``"(root)"``)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows][:10]}...")

    def to_dict(self, per_layer: bool = True, include_ops: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "bytes_per_element": self.bytes_per_element,
            "definitions": dict(DEFINITIONS),
            "totals": asdict(self.totals),
        }
        if per_layer:
            d["rows"] = [asdict(r) for r in self.rows]
        if include_ops:
            d["ops"] = [asdict(o) for o in self.ops]
        return d

    def to_json(self, per_layer: bool = True, include_ops: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(per_layer=per_layer, include_ops=include_ops), indent=indent)

    def to_csv(self, per_layer: bool = True) -> str:
        """Raw counts (elements, bytes; no scaling), one line per row, then a line named ``total``."""
        names = [f.name for f in fields(LayerRow)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        if per_layer:
            for r in self.rows:
                values = asdict(r)
                values["output_shape"] = _shape_str(r.output_shape)
                writer.writerow([values[n] for n in names])
        total = {n: "" for n in names} | {"name": "total", "type": self.model}
        total |= {n: getattr(self.totals, n) for n in _ROW_SUM_FIELDS}
        writer.writerow([total[n] for n in names])
        return buf.getvalue()

    def to_table(self, per_layer: bool = True) -> str:
        """A text table; every numeric header names its unit (K = 1e3, M = 1e6, kB = 1000 bytes)."""
        header = ["Layer", "Type", "Output shape", *(c[0] for c in _TABLE_COLUMNS)]

        def line(name: str, type_: str, shape: str, obj: Any) -> list[str]:
            return [
                name,
                type_,
                shape,
                *(format(getattr(obj, f) / s, fmt) for _, f, s, fmt in _TABLE_COLUMNS),
            ]

        body = []
        if per_layer:
            for r in self.rows:
                name = r.name if r.is_leaf else f"{r.name} (own ops)"
                body.append(line(name, r.type, _shape_str(r.output_shape), r))
        body.append(line("total", self.model, "", self.totals))
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def fmt_row(row: list[str]) -> str:
            cells = [c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(row)]
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt_row(header))
        lines = [fmt_row(header), rule, *(fmt_row(r) for r in body[:-1])]
        if per_layer:
            lines.append(rule)
        lines.append(fmt_row(body[-1]))
        t = self.totals
        lines.append(
            f"input {_shape_str(self.input_shape)}, {self.dtype} ({self.bytes_per_element} bytes/element); "
            f"peak live activations {t.peak_activation_elements / 1e3:.1f} K elem = "
            f"{t.peak_activation_bytes / 1e3:.1f} kB; mem. access = ShuffleNetV2's MAC (elements read + written)"
        )
        return "\n".join(lines)


class _LayerAccumulator:
    __slots__ = ("name", "type", "is_leaf", "calls", "output_shape", "macs", "mac", "act", "ran_ops")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.type = type(module).__name__
        self.is_leaf = next(module.children(), None) is None
        self.calls = 0
        self.output_shape: tuple[int, ...] | None = None
        self.macs = self.mac = self.act = 0
        self.ran_ops = False


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return str(t.device), t.untyped_storage().data_ptr()


def _counted_outputs(func: Any, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # PyTorch's CPU max-pool kernel also returns the argmax indices; they are an implementation detail, not
    # part of the operation the papers count, so only the pooled values are counted as written.
    if func.__name__.startswith("max_pool") and "with_indices" in func.__name__:
        return outputs[:1]
    return outputs


class _OpRecorder(TorchDispatchMode):
    """Sees every ATen op of the forward pass (entered inside FlopCounterMode, so it sees each op first and
    reads FlopCounterMode's count before and after it) and attributes it to the innermost running module.
    Memory access cost, activation elements and tensor lifetimes are counted here."""

    def __init__(self, counter: FlopCounterMode, stack: list[_LayerAccumulator]) -> None:
        super().__init__()
        self.counter = counter
        self.stack = stack
        self.ops: list[OpRecord] = []
        self.live: dict[tuple[str, int], list[int]] = {}  # storage -> [elements, first op, last op]
        self.lifetimes: list[list[int]] = []

    def track_new(self, t: torch.Tensor, index: int) -> None:
        if t.numel() == 0:
            return
        interval = [t.numel(), index, index]
        self.live[_storage_key(t)] = interval  # a reused address starts a new tensor's life
        self.lifetimes.append(interval)

    def track_use(self, t: torch.Tensor, index: int) -> None:
        interval = self.live.get(_storage_key(t)) if t.numel() else None
        if interval is not None:
            interval[2] = index

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flops_before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        macs = (self.counter.get_total_flops() - flops_before) // 2

        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = _counted_outputs(func, [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        input_keys = {_storage_key(t) for t in inputs if t.numel()}
        fresh = [t for t in outputs if t.numel() and _storage_key(t) not in input_keys]
        is_view = not func._schema.is_mutable and not fresh  # only aliases of its inputs
        index = len(self.ops)
        for t in inputs:
            self.track_use(t, index)
        if is_view:
            mac = act = 0
        else:
            mac = sum(t.numel() for t in inputs) + sum(t.numel() for t in outputs)
            act = sum(t.numel() for t in fresh)
            for t in fresh:
                self.track_new(t, index)
        fresh_ids = {id(t) for t in fresh}
        for t in outputs:
            if id(t) not in fresh_ids:  # a view or an in-place result extends its storage's life
                self.track_use(t, index)

        layer = self.stack[-1]
        layer.macs += macs
        layer.mac += mac
        layer.act += act
        layer.ran_ops |= not is_view
        shape = tuple(outputs[0].shape) if outputs else None
        self.ops.append(OpRecord(layer.name, str(func.overloadpacket.__name__), shape, macs, mac, act))
        return out


def _peak_live(lifetimes: list[list[int]], num_ops: int) -> int:
    """Largest sum of sizes of tensors alive at one op; each ``[elements, first op, last op]`` is alive at
    both ends (an op reads its inputs while it writes its output)."""
    change = [0] * (num_ops + 3)  # index = op + 1, so the input image can start at op -1
    for elements, first, last in lifetimes:
        change[first + 1] += elements
        change[last + 2] -= elements
    peak = live = 0
    for delta in change:
        live += delta
        peak = max(peak, live)
    return peak


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
    x = torch.zeros(batch_size, channels, h, w, device=device, dtype=run_dtype)

    layers = {m: _LayerAccumulator(name or "(root)", m) for name, m in model.named_modules()}
    stack: list[_LayerAccumulator] = []

    def enter(module: nn.Module, args: Any) -> None:
        stack.append(layers[module])

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        layer = stack.pop()
        layer.calls += 1
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        layer.output_shape = tuple(tensors[0].shape) if tensors else None

    handles = []
    for m in layers:
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        recorder = _OpRecorder(counter, stack)
        recorder.track_new(x, -1)  # the input image is live from the start
        with counter, recorder:
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    bpe = dtype.itemsize
    rows = []
    seen_params: set[int] = set()
    for module, acc in layers.items():
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
                activation_elements=acc.act,
                activation_bytes=acc.act * bpe,
                memory_access_cost=acc.mac,
                memory_access_cost_bytes=acc.mac * bpe,
            )
        )
    # rows in execution order (modules that never ran, but own parameters, go last)
    first_op = {}
    for i, op in enumerate(recorder.ops):
        first_op.setdefault(op.module, i)
    rows.sort(key=lambda r: first_op.get(r.name, len(recorder.ops)))

    num_ops = len(recorder.ops)
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor):
            recorder.track_use(t, num_ops)  # the model's outputs are live to the end
    peak = _peak_live(recorder.lifetimes, num_ops)
    sums = {f: sum(getattr(r, f) for r in rows) for f in _ROW_SUM_FIELDS}
    totals = Totals(**sums, peak_activation_elements=peak, peak_activation_bytes=peak * bpe)
    return Profile(
        model=type(model).__name__,
        input_shape=(batch_size, channels, h, w),
        dtype=str(dtype).removeprefix("torch."),
        bytes_per_element=bpe,
        rows=rows,
        totals=totals,
        ops=recorder.ops,
    )
