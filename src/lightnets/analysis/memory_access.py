"""Memory access cost, activation elements and tensor lifetimes of a forward pass, counted op by op.

No PyTorch tool counts ShuffleNetV2's memory access cost (the module docstring of ``lightnets.analysis.profile``
defines it), so a ``TorchDispatchMode`` sees every ATen op, entered inside ``FlopCounterMode`` so it can also read
each op's MACs, and adds both to the innermost running module's ``_LayerAccumulator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .results import OpRecord


class _LayerAccumulator:
    """Running sums of one module's own ops: ``macs`` (multiply-accumulates), ``memory_access_cost`` (elements
    read + written, ShuffleNetV2's "MAC") and ``activation_elements`` (elements of newly created tensors)."""

    __slots__ = (
        "name",
        "type",
        "is_leaf",
        "calls",
        "output_shape",
        "macs",
        "memory_access_cost",
        "activation_elements",
        "ran_ops",
    )

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.type = type(module).__name__
        self.is_leaf = next(module.children(), None) is None
        self.calls = 0
        self.output_shape: tuple[int, ...] | None = None
        self.macs = self.memory_access_cost = self.activation_elements = 0
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
            memory_access = created = 0
        else:
            memory_access = sum(t.numel() for t in inputs) + sum(t.numel() for t in outputs)
            created = sum(t.numel() for t in fresh)
            for t in fresh:
                self.track_new(t, index)
        fresh_ids = {id(t) for t in fresh}
        for t in outputs:
            if id(t) not in fresh_ids:  # a view or an in-place result extends its storage's life
                self.track_use(t, index)

        layer = self.stack[-1]
        layer.macs += macs
        layer.memory_access_cost += memory_access
        layer.activation_elements += created
        layer.ran_ops |= not is_view
        shape = tuple(outputs[0].shape) if outputs else None
        name = str(func.overloadpacket.__name__)
        self.ops.append(OpRecord(layer.name, name, shape, macs, memory_access, created))
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


@dataclass
class Trace:
    """What one recorded forward pass leaves behind: a ``_LayerAccumulator`` per module (in
    ``model.named_modules()`` order), the op records and the peak of live activation elements."""

    layers: dict[nn.Module, _LayerAccumulator]
    ops: list[OpRecord]
    peak_activation_elements: int


@torch.no_grad()
def trace_forward(model: nn.Module, x: torch.Tensor) -> Trace:
    """Run ``model(x)`` once in eval mode with every module hooked, so each ATen op is charged to the innermost
    module running it; the model's train/eval mode is restored afterwards."""
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
    num_ops = len(recorder.ops)
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor):
            recorder.track_use(t, num_ops)  # the model's outputs are live to the end
    return Trace(layers, recorder.ops, _peak_live(recorder.lifetimes, num_ops))
