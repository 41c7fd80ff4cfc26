"""The four guideline experiments G1-G4 as data: for each hardware setting, the configurations to build (widths
from the paper's tables) and the paper's speed for each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .blocks import (
    Bottleneck,
    ParallelFragments,
    PointwisePair,
    SeriesFragments,
    _conv1x1,
    equal_flops_width,
    group_divisible_width,
    stack,
)
from .tables import (
    EXPERIMENTS,
    G1_TABLE,
    G2_TABLE,
    G3_CHANNELS,
    G3_TABLE,
    G4_CHANNELS,
    G4_EXPANSION,
    G4_TABLE,
    PAPER,
    SETTINGS,
    Arrangement,
)


@dataclass(frozen=True)
class GuidelineConfig:
    """One configuration of an experiment: how to build its 10-block network and the paper's speed for it."""

    label: str
    description: str
    in_channels: int
    build: Callable[[], nn.Module] = field(repr=False)
    paper_speed: float


@dataclass(frozen=True)
class Experiment:
    key: str
    guideline: str
    paper_table: str
    setting: str
    configs: tuple[GuidelineConfig, ...]

    @property
    def paper_unit(self) -> str:
        return "batches/s" if self.setting == "gpu" else "images/s"


def _check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    return setting


def _g1(setting: str) -> tuple[GuidelineConfig, ...]:
    out = []
    for row in G1_TABLE:
        c1, c2 = (row.c1, row.c2) if setting == "gpu" else (row.arm_c1, row.arm_c2)
        speed = row.gpu_batches_per_s if setting == "gpu" else row.arm_images_per_s
        out.append(
            GuidelineConfig(
                row.label,
                f"c1={c1}, c2={c2}",
                c1,
                lambda c1=c1, c2=c2: stack(lambda: PointwisePair(c1, c2)),
                speed,
            )
        )
    return tuple(out)


def _g2(setting: str) -> tuple[GuidelineConfig, ...]:
    out = []
    for row in G2_TABLE:
        paper_c = row.channels if setting == "gpu" else row.arm_channels
        c = group_divisible_width(paper_c, row.groups)
        speed = row.gpu_batches_per_s if setting == "gpu" else row.arm_images_per_s
        desc = f"c={c}, g={row.groups}" + (
            f" (paper: c={paper_c}, not divisible by g)" if c != paper_c else ""
        )
        build = lambda c=c, g=row.groups: stack(lambda: _conv1x1(c, c, groups=g))  # noqa: E731
        out.append(GuidelineConfig(row.label, desc, c, build, speed))
    return tuple(out)


def _g3(setting: str) -> tuple[GuidelineConfig, ...]:
    c = G3_CHANNELS[setting]
    out = []
    for row in G3_TABLE:
        speed = row.gpu_batches_per_s if setting == "gpu" else row.arm_images_per_s
        if row.arrangement is Arrangement.SERIES:
            w = equal_flops_width(c, row.fragments)
            desc = f"{row.fragments} x (1x1 {w}->{w})"
            build = lambda w=w, n=row.fragments: stack(lambda: SeriesFragments(w, n))  # noqa: E731
        else:
            w = c
            desc = f"{row.fragments} x (1x1 {c}->{c // row.fragments}) + concat"
            build = lambda n=row.fragments: stack(lambda: ParallelFragments(c, n))  # noqa: E731
        out.append(GuidelineConfig(row.label, desc, w, build, speed))
    return tuple(out)


def _g4(setting: str) -> tuple[GuidelineConfig, ...]:
    c = G4_CHANNELS[setting]
    out = []
    for row in G4_TABLE:
        speed = row.gpu_batches_per_s if setting == "gpu" else row.arm_images_per_s
        desc = f"c={c} (bottleneck {c // G4_EXPANSION}), ReLU {'yes' if row.relu else 'no'}, shortcut " + (
            "yes" if row.shortcut else "no"
        )
        build = lambda r=row: stack(lambda: Bottleneck(c, relu=r.relu, shortcut=r.shortcut))  # noqa: E731
        out.append(GuidelineConfig(row.label, desc, c, build, speed))
    return tuple(out)


_DEFINITIONS: dict[str, tuple[str, str, Callable[[str], tuple[GuidelineConfig, ...]]]] = {
    "G1": ("equal channel width minimizes memory access cost (c1:c2 at fixed FLOPs)", "Table 1", _g1),
    "G2": (
        "excessive group convolution increases memory access cost (groups at fixed FLOPs)",
        "Table 2",
        _g2,
    ),
    "G3": (
        "network fragmentation reduces the degree of parallelism (fragments at fixed FLOPs)",
        "Table 3",
        _g3,
    ),
    "G4": ("element-wise operations are non-negligible (ResNet bottleneck, c=32)", "Table 4", _g4),
}


def experiment(key: str, setting: str = "gpu") -> Experiment:
    """The configurations of experiment ``key`` ("G1".."G4") at the paper's ``setting`` widths."""
    key = key.upper()
    if key not in _DEFINITIONS:
        raise ValueError(f"unknown experiment {key!r}; choose from {list(EXPERIMENTS)}")
    guideline, table, configs = _DEFINITIONS[key]
    return Experiment(key, guideline, f"{PAPER}, {table}", _check_setting(setting), configs(setting))
