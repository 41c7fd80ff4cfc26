"""What a lab run returns: one result per configuration, per experiment and for the whole run, each
serialisable with ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...deploy.bench import Timing
from .agreement import Agreement
from .tables import PAPER


@dataclass(frozen=True)
class ConfigResult:
    """One configuration measured.  ``macs`` / ``memory_access_cost`` / ``params`` are for the whole 10-block
    network and one image (batch 1); speeds are medians; ratios are relative to the experiment's first config."""

    label: str
    description: str
    params: int
    macs: int
    memory_access_cost: int
    timing: Timing
    batches_per_s: float
    images_per_s: float
    paper_speed: float
    measured_ratio: float
    paper_ratio: float


@dataclass(frozen=True)
class ExperimentResult:
    key: str
    guideline: str
    paper_table: str
    setting: str
    platform: str
    paper_unit: str
    device: str
    batch_size: int
    input_size: int
    threads: int
    num_blocks: int
    configs: list[ConfigResult]
    agreement: Agreement

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"]["verdict"] = self.agreement.verdict
        d["agreement"]["sentence"] = self.agreement.sentence()
        return d


@dataclass(frozen=True)
class LabResult:
    environment: dict[str, Any]
    quick: bool
    experiments: list[ExperimentResult]
    plots: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": PAPER,
            "environment": self.environment,
            "quick": self.quick,
            "experiments": [e.to_dict() for e in self.experiments],
            "plots": dict(self.plots),
        }
