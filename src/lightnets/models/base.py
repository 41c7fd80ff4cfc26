"""The base every lightnets model shares: ``ClassifierModel`` (the fine-tuning interface popularised by timm,
implemented once from a ``HeadLayout``), the final classifier layer, the default initialisation and the
integer guards every family validates its arguments with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ClassifierModel",
    "HeadLayout",
    "check_int",
    "check_num_classes",
    "check_positive_int",
    "init_weights",
    "new_linear",
]


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``, else a ValueError naming ``name`` and the value:
    the one guard every family and the deploy stage use for counts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (channels, groups, threads, batch sizes)."""
    return check_int(name, value, minimum=1)


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` if it is an int >= 0 (0: no classifier, the model returns pooled features)."""
    return check_int("num_classes", num_classes, minimum=0)


@dataclass(frozen=True)
class HeadLayout:
    """Where a family keeps its head, as dotted module paths (``"classifier.1"``: index 1 of the
    ``nn.Sequential`` ``classifier``), so the head methods are written once and torchvision's state_dict keys
    stay as they are.

    ``forward_head`` runs: ``pool`` -> flatten -> each of ``pre_logits`` (what ``pre_logits=True`` returns)
    -> ``dropout`` (if any) -> ``classifier`` (the final layer ``reset_classifier`` replaces).  ``logits``, when
    set, is a container run as one in place of dropout and classifier (MobileNetV1/V2's ``Sequential(Dropout,
    Linear)``), so traced and exported graphs keep its scope in their node names."""

    classifier: str = "fc"
    dropout: str | None = "dropout"
    pre_logits: tuple[str, ...] = ()
    pool: str = "global_pool"
    logits: str | None = None


class ClassifierModel(nn.Module):
    """The interface every lightnets model shares (the fine-tuning interface popularised by timm).

    Subclasses build their layers, set ``num_features`` (channels entering the final classifier layer) and
    ``num_classes``, implement ``forward_features`` (image -> last feature map) and declare ``head_layout``;
    ``forward_head`` (feature map -> logits, ``pre_logits=True`` stops before the final dropout and Linear),
    ``get_classifier`` and ``reset_classifier`` follow from it.
    """

    num_features: int
    num_classes: int
    #: set by each family: where its pooling, dropout and final layer live
    head_layout: HeadLayout = HeadLayout()
    #: set by each family: what ``small_input=True`` changes, for docs and the model card
    small_input_policy: str = ""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        head = self.head_layout
        x = torch.flatten(self.get_submodule(head.pool)(x), 1)
        for name in head.pre_logits:
            x = self.get_submodule(name)(x)
        if pre_logits:
            return x
        if head.logits is not None:
            return self.get_submodule(head.logits)(x)
        if head.dropout is not None:
            x = self.get_submodule(head.dropout)(x)
        return self.get_submodule(head.classifier)(x)

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (an ``nn.Identity`` when ``num_classes == 0``)."""
        return self.get_submodule(self.head_layout.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a new one for ``num_classes`` (0: no classifier, pooled features out)."""
        parent, _, name = self.head_layout.classifier.rpartition(".")
        setattr(self.get_submodule(parent), name, new_linear(self.num_features, num_classes))
        self.num_classes = num_classes

    def classifier_name(self) -> str:
        """Dotted name of the final classifier module (its keys are replaced when class counts differ)."""
        head = self.get_classifier()
        for name, module in self.named_modules():
            if module is head:
                return name
        raise RuntimeError("classifier module not found among named_modules")  # pragma: no cover

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def new_linear(in_features: int, num_classes: int) -> nn.Module:
    """Final classifier layer; ``num_classes=0`` gives an identity (feature extractor)."""
    check_num_classes(num_classes)
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def init_weights(model: nn.Module) -> None:
    """Default initialisation shared by the families (as in torchvision's MobileNets): Kaiming-normal
    fan-out for convs, ones/zeros for norms, N(0, 0.01) for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
