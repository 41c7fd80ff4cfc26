"""Quantization-aware training (``lightnets train --qat --weights RUN_OR_FILE``): a few epochs of fine-tuning
with int8 fake quantization in the forward pass, so the weights and BatchNorm statistics learn to survive int8.

The library way, the same as the ExecuTorch int8 export: the trained model is captured with ``torch.export``
(dynamic batch dimension, so the last partial batch runs too), ``prepare_qat_pt2e`` with ExecuTorch's
``XNNPACKQuantizer`` (symmetric, per-channel weights, ``is_qat=True``) inserts fake-quantize nodes, and the run's
own loop trains that graph: optimizer, schedule, checkpoints, metrics and resume are unchanged; validation each
epoch scores the fake-quantized graph.  The loss is the run's cross-entropy plus distillation to the frozen fp32
source model (see ``distillation_loss``).

What a QAT run's ``best.pt`` / ``last.pt`` hold: the float weights and BatchNorm statistics of the QAT graph,
under the original model's state_dict keys (``prepare_qat_pt2e`` keeps every parameter's and buffer's FQN; only
``num_batches_tracked`` is dropped, and comes from the source), as an ordinary lightnets checkpoint with
``qat: true``.  ``eval``, ``predict`` and ``lightnets export ... --quantize int8`` use it unchanged.  Be exact
about what that buys: each runtime's int8 export still re-derives its activation and weight scales by its own
calibration (post-training static quantization); the QAT-learned scales are not carried over.  What is carried is
weights and BN statistics that were trained under int8 rounding.  Measured so far only where PTQ already lost
almost nothing (digits, a small Fashion-MNIST run: docs/benchmarks.md), where QAT's int8 was within noise of PTQ's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["QATModel", "check_qat_source", "distillation_loss", "prepare_qat", "weights_file"]


def weights_file(weights: str) -> str:
    """The file ``--weights`` names: a lightnets run directory stands for its best.pt (else last.pt)."""
    if "://" in weights or not Path(weights).is_dir():
        return weights
    from .checkpoint import resolve_checkpoint

    return str(resolve_checkpoint(weights)[0])


def check_qat_source(model: nn.Module, weights: str, classes: list[str]) -> None:
    """Refuse QAT from weights that are not this very model on these classes: were the head replaced (another
    class count) or a layer missing, QAT would fine-tune a random part, which is pointless."""
    from ..models.weights import check_state_dict, read_state_dict
    from .checkpoint import CheckpointError, load_checkpoint

    path = weights_file(weights)
    problems = check_state_dict(model, read_state_dict(path))
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        first = next(iter(bad.items()))
        raise ValueError(f"--qat needs weights of this model with these {len(classes)} classes; {path} does not fit "
                         f"({first[0]}: {', '.join(map(str, first[1][:3]))}): QAT of a replaced head is pointless")  # fmt: skip
    try:
        saved = load_checkpoint(path)["classes"]
    except CheckpointError:
        return  # a plain state_dict: shapes are all it can be checked by
    if list(saved) != list(classes):
        raise ValueError(f"--qat needs weights trained on the data's classes; {path} has {saved[:5]}..., "
                         f"the data has {classes[:5]}...")  # fmt: skip


def prepare_qat(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` (left untouched) captured at ``example``'s shape with a dynamic batch dimension, with int8
    fake quantization inserted by ``prepare_qat_pt2e`` and ExecuTorch's XNNPACK quantizer (per-channel weights)."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    except ImportError as e:
        raise ImportError(f"--qat needs executorch and torchao: pip install 'lightnets[executorch]' ({e})") from None
    source = copy.deepcopy(model).eval()  # export shares tensors with the module it captures
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(source, (example,), dynamic_shapes=({0: batch},), strict=False)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    return prepare_qat_pt2e(program.module(), quantizer)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) at temperature 1.  Why distil: the goal of QAT is an int8 model that agrees with
    the fp32 one; the fp32 logits say so for every class of every image (labels say one bit), which keeps a few
    epochs at a small rate from drifting towards the labels of a small training set and away from the model
    that was already good.  Temperature 1: the logits are the model's own calibrated output, nothing to soften."""
    return F.kl_div(F.log_softmax(student_logits.float(), 1), F.log_softmax(teacher_logits.float(), 1),
                    reduction="batchmean", log_target=True)  # fmt: skip


class QATModel(nn.Module):
    """The fake-quantized graph of a model, plus its frozen fp32 source as the teacher.

    ``state_dict()`` is the float model's, under the original keys (what checkpoints save, so ``best.pt`` loads
    into ``create_model`` strictly); ``graph_state_dict()`` is the whole graph's, observers and fake-quantize
    scales included (what resuming restores); ``load_state_dict`` takes either."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.graph = prepare_qat(model, example)
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self._float_template = {k: v.detach().clone() for k, v in model.state_dict().items()}
        graph_keys = set(self.graph.state_dict())
        self._carried = [k for k in self._float_template if k in graph_keys]
        lost = [k for k in self._float_template if k not in graph_keys and not k.endswith("num_batches_tracked")]
        if lost:  # the FQNs are what maps the QAT weights back; without them nothing can be saved correctly
            raise RuntimeError(f"prepare_qat_pt2e renamed {len(lost)} tensors of the model (e.g. {lost[0]})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)

    def train(self, mode: bool = True) -> QATModel:
        """An exported graph has no train/eval flags of its own: torchao switches its BatchNorm and dropout ops."""
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.training = mode
        self.teacher.eval()
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        graph = self.graph.state_dict()
        return {k: (graph[k] if k in graph else v) for k, v in self._float_template.items()}

    def graph_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.graph.state_dict().items()}

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        """A float state_dict (original keys: the QAT graph's weights and BN statistics are set, its observers
        start again) or a whole graph state from ``graph_state_dict``."""
        if set(state) == set(self._float_template):
            return self.graph.load_state_dict({k: state[k] for k in self._carried}, strict=False)
        return self.graph.load_state_dict(state, strict=strict)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Any:  # the teacher's are frozen and not the model's
        return self.graph.named_parameters(*args, **kwargs)


def wrap_for_qat(model: nn.Module, cfg: Any, classes: list[str], size: tuple[int, int], in_chans: int,
                 device: torch.device, distributed: bool) -> QATModel:  # fmt: skip
    """The run's model (already on ``device``, holding ``cfg.weights``) as a QATModel traced at the training
    batch shape.  Refuses weights that do not fit the data and DistributedDataParallel (not supported here)."""
    if distributed:
        raise ValueError("--qat trains on one process; run it without torchrun")
    check_qat_source(model, cfg.weights, classes)
    example = torch.zeros(cfg.batch_size, in_chans, *size, device=device)
    return QATModel(model, example).to(device)


def distill_step(model: QATModel) -> Any:
    """The extra loss of one training step: distillation of ``model``'s logits to its fp32 teacher's."""

    def extra_loss(images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, model.teacher_logits(images))

    return extra_loss


def checkpoint_in_chans(weights: str) -> int | None:
    """The input channels a lightnets checkpoint (file or run directory) was trained with; None otherwise."""
    if "://" in weights:
        return None
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        return int(load_checkpoint(weights)["kwargs"].get("in_chans", 3))
    except (CheckpointError, OSError):
        return None


def norms_in_eval(model: QATModel) -> None:
    """After ``model.train()``: the graph's BatchNorm ops use and keep their running statistics (the source's),
    while dropout and fake quantization stay in training mode (``--bn-eval``, on by default with ``--weights``)."""
    # torchao 0.18 has no public call for "BatchNorm in eval, the rest in train" on an exported graph;
    # move_exported_model_to_train/eval switch both together, so the private helper they use is called directly
    from torchao.quantization.pt2e.export_utils import _replace_batchnorm

    _replace_batchnorm(model.graph, train_to_eval=True)
