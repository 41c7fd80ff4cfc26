"""The guideline lab: Section 2 of ShuffleNetV2 (Ma et al. 2018, arXiv:1807.11164) measured on your hardware.

The paper derives four design guidelines from micro-benchmarks, each a network of 10 stacked blocks on a
56 x 56 input whose FLOPs are held (nearly) fixed while one property varies:

G1 (Table 1)  equal channel widths minimise memory access cost: blocks of two 1x1 convs c1 -> c2 -> c1, at
              c1:c2 = 1:1, 1:2, 1:6, 1:12.
G2 (Table 2)  excessive group convolution increases memory access cost: 10 stacked 1x1 group convs c -> c with
              g = 1, 2, 4, 8 groups (c grows with g to keep FLOPs).
G3 (Table 3)  network fragmentation reduces parallelism: blocks of 1, 2 or 4 1x1 convs, in series or in
              parallel (Appendix Fig. 1).
G4 (Table 4)  element-wise operations are not negligible: the ResNet bottleneck with and without its ReLUs and
              its shortcut.

Block definitions (read from the paper; where it is silent, the choice is stated):

* Convolutions have no bias and no normalisation (an inference runtime folds batch norm into the weights), so
  a 1x1 conv's MACs and memory access cost are exactly the paper's ``B = h*w*c1*c2/g`` and
  ``h*w*(c1 + c2) + c1*c2/g`` (``analysis.pointwise_mac``); G1-G3 have no activations.
* G3: the paper fixes the 1-fragment width ``c`` and says only that the other blocks' widths are "adjusted" to
  equal FLOPs.  A series block of ``n`` convs uses width ``c / sqrt(n)`` (rounded to the integer whose FLOPs are
  closest: 91 and 64 for c = 128).  Appendix Fig. 1 draws the parallel branches side by side on one input,
  joined by concatenation; each branch maps ``c -> c/n``, so the concatenation restores ``c`` (the blocks stack)
  and FLOPs equal the 1-fragment block's with no rounding.
* G2, ARM column: Table 2 lists c = 180 for g = 8, which 8 does not divide; 176 is used (FLOPs -4%).
* G4: ``c`` is the unit's input/output width and the bottleneck is ``c/4`` (ResNet's expansion of 4):
  1x1 c -> c/4, ReLU, 3x3 c/4 -> c/4, ReLU, 1x1 c/4 -> c, + shortcut, ReLU.  (Reading ``c`` as the bottleneck
  width instead would make the paper's ARM numbers imply ~30 GMAC/s on one Snapdragon 810 core, about six
  times what the same core shows in Tables 1-3.)  "No ReLU" removes all three ReLUs; "no shortcut" the add.

Reference numbers: the paper's ``x1`` columns.  ``setting="gpu"`` builds the GPU column's widths (GTX 1080Ti,
batches/s; the widths of PAPERS.md), ``setting="arm"`` the ARM column's (Snapdragon 810, one thread, images/s),
which are narrower for G1-G3.  The paper does not state the batch size of these tables; it must be 1: G1's
``x4`` GPU column (16.4 GMACs per image at 232 batches/s) would need 61 TFLOP/s at batch 8, over five times the
1080Ti's peak.  So the default batch size is 1 and batches/s = images/s.

What is measured: the median latency of a forward pass (eval mode, inference mode, random weights) over
interleaved timed calls (``bench.time_interleaved``), reported as batches/s and images/s, and each
configuration's speed relative to the experiment's first, beside the paper's ratio.  Agreement with the paper
is computed pair by pair: a pair of configurations agrees when the faster one in the paper is faster here too,
is a tie when the speeds differ by less than the measurement noise, and is reversed otherwise.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..deploy.bench import (
    TimedCall,
    Timing,
    environment,
    new_figure,
    resolve_device,
    save_png,
    time_interleaved,
)

PAPER = "Ma et al. 2018, ShuffleNet V2, arXiv:1807.11164"
NUM_BLOCKS = 10  # "stacking 10 building blocks" (Section 2, every experiment)
INPUT_SIZE = 56  # "Input image size is 56 x 56" (Tables 1-3)
SETTINGS = ("gpu", "arm")
EXPERIMENTS = ("G1", "G2", "G3", "G4")

#: How the paper measured each column (Section 2, "Our study is performed on two widely adopted hardwares").
PLATFORMS = {
    "gpu": "GTX 1080Ti, cuDNN 7.0 (paper's unit: batches/s)",
    "arm": "Snapdragon 810, one thread (paper's unit: images/s)",
}


# ------------------------------------------------------------------------------------------------ paper tables
class RatioRow(NamedTuple):
    """Table 1 (G1): a c1:c2 ratio, its widths in the GPU and ARM x1 columns and the published speeds."""

    label: str
    c1: int
    c2: int
    arm_c1: int
    arm_c2: int
    gpu_batches_per_s: float
    arm_images_per_s: float


# Ma et al. 2018, Table 1, x1 columns
G1_TABLE = (
    RatioRow("1:1", c1=128, c2=128, arm_c1=32, arm_c2=32, gpu_batches_per_s=1480, arm_images_per_s=76.2),
    RatioRow("1:2", c1=90, c2=180, arm_c1=22, arm_c2=44, gpu_batches_per_s=1296, arm_images_per_s=72.9),
    RatioRow("1:6", c1=52, c2=312, arm_c1=13, arm_c2=78, gpu_batches_per_s=876, arm_images_per_s=69.1),
    RatioRow("1:12", c1=36, c2=432, arm_c1=9, arm_c2=108, gpu_batches_per_s=748, arm_images_per_s=57.6),
)


class GroupRow(NamedTuple):
    """Table 2 (G2): a group count, the channels c in the GPU and ARM x1 columns and the published speeds."""

    label: str
    groups: int
    channels: int
    arm_channels: int
    gpu_batches_per_s: float
    arm_images_per_s: float


# Ma et al. 2018, Table 2, x1 columns
G2_TABLE = (
    GroupRow("g=1", groups=1, channels=128, arm_channels=64, gpu_batches_per_s=2451, arm_images_per_s=40.0),
    GroupRow("g=2", groups=2, channels=180, arm_channels=90, gpu_batches_per_s=1725, arm_images_per_s=35.0),
    GroupRow("g=4", groups=4, channels=256, arm_channels=128, gpu_batches_per_s=1026, arm_images_per_s=32.9),
    GroupRow("g=8", groups=8, channels=360, arm_channels=180, gpu_batches_per_s=634, arm_images_per_s=27.8),
)


class Arrangement(enum.Enum):
    SERIES = "series"
    PARALLEL = "parallel"


class FragmentRow(NamedTuple):
    """Table 3 (G3): a block of ``fragments`` 1x1 convs arranged in series or in parallel."""

    label: str
    fragments: int
    arrangement: Arrangement
    gpu_batches_per_s: float
    arm_images_per_s: float


# Ma et al. 2018, Table 3, first column of each platform (GPU c = 128, ARM c = 64)
G3_CHANNELS = {"gpu": 128, "arm": 64}
G3_TABLE = (
    FragmentRow("1-fragment", 1, Arrangement.SERIES, gpu_batches_per_s=2446, arm_images_per_s=40.2),
    FragmentRow("2-fragment-series", 2, Arrangement.SERIES, gpu_batches_per_s=1790, arm_images_per_s=38.6),
    FragmentRow("4-fragment-series", 4, Arrangement.SERIES, gpu_batches_per_s=752, arm_images_per_s=38.4),
    FragmentRow(
        "2-fragment-parallel", 2, Arrangement.PARALLEL, gpu_batches_per_s=1537, arm_images_per_s=33.4
    ),
    FragmentRow("4-fragment-parallel", 4, Arrangement.PARALLEL, gpu_batches_per_s=691, arm_images_per_s=35.0),
)


class BottleneckRow(NamedTuple):
    """Table 4 (G4): the ResNet bottleneck with or without its ReLUs and its shortcut."""

    label: str
    relu: bool
    shortcut: bool
    gpu_batches_per_s: float
    arm_images_per_s: float


# Ma et al. 2018, Table 4, c = 32 (both platforms)
G4_CHANNELS = {"gpu": 32, "arm": 32}
G4_EXPANSION = 4  # ResNet bottleneck: width c / 4 inside a unit of c channels
G4_TABLE = (
    BottleneckRow("ReLU + shortcut", relu=True, shortcut=True, gpu_batches_per_s=2427, arm_images_per_s=56.7),
    BottleneckRow("no shortcut", relu=True, shortcut=False, gpu_batches_per_s=2647, arm_images_per_s=61.9),
    BottleneckRow("no ReLU", relu=False, shortcut=True, gpu_batches_per_s=2672, arm_images_per_s=57.3),
    BottleneckRow("neither", relu=False, shortcut=False, gpu_batches_per_s=2842, arm_images_per_s=66.3),
)


# ------------------------------------------------------------------------------------------------ blocks
def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    if c_in % groups or c_out % groups:
        raise ValueError(f"channels must be divisible by groups: {c_in} -> {c_out}, groups={groups}")
    return nn.Conv2d(c_in, c_out, 1, bias=False, groups=groups)


class PointwisePair(nn.Sequential):
    """G1 block: a 1x1 conv c1 -> c2, then a 1x1 conv c2 -> c1 ("the first contains c1 input channels and c2
    output channels, and the second otherwise")."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__(_conv1x1(c1, c2), _conv1x1(c2, c1))


class SeriesFragments(nn.Sequential):
    """G3 block: ``fragments`` 1x1 convs c -> c one after another (1-fragment is a single conv)."""

    def __init__(self, channels: int, fragments: int) -> None:
        super().__init__(*(_conv1x1(channels, channels) for _ in range(fragments)))


class ParallelFragments(nn.Module):
    """G3 block: ``fragments`` 1x1 convs c -> c/fragments on the same input, concatenated back to c channels."""

    def __init__(self, channels: int, fragments: int) -> None:
        super().__init__()
        if channels % fragments:
            raise ValueError(f"channels ({channels}) must be divisible by fragments ({fragments})")
        self.branches = nn.ModuleList(_conv1x1(channels, channels // fragments) for _ in range(fragments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Bottleneck(nn.Module):
    """G4 unit: ResNet's bottleneck (1x1 c -> c/4, 3x3 c/4 -> c/4, 1x1 c/4 -> c), with ReLU after the first two
    convs and after the shortcut add when ``relu``, and the identity shortcut when ``shortcut``."""

    def __init__(
        self, channels: int, relu: bool = True, shortcut: bool = True, expansion: int = G4_EXPANSION
    ) -> None:
        super().__init__()
        if channels % expansion:
            raise ValueError(f"channels ({channels}) must be divisible by the expansion ({expansion})")
        width = channels // expansion
        self.conv1 = _conv1x1(channels, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.conv3 = _conv1x1(width, channels)
        self.relu = relu
        self.shortcut = shortcut
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out)
        if self.shortcut:
            out = out + x
        return self.act(out)


def stack(make_block: Callable[[], nn.Module], num_blocks: int = NUM_BLOCKS) -> nn.Sequential:
    """``num_blocks`` freshly built blocks in sequence (the paper stacks each block 10 times)."""
    return nn.Sequential(*(make_block() for _ in range(num_blocks)))


def equal_flops_width(channels: int, convs: int) -> int:
    """The width w whose ``convs`` 1x1 convs w -> w have FLOPs closest to one c -> c conv (ties: narrower)."""
    exact = channels / math.sqrt(convs)
    candidates = sorted({max(1, math.floor(exact)), math.ceil(exact)})
    return min(candidates, key=lambda w: (abs(convs * w * w - channels * channels), w))


def group_divisible_width(channels: int, groups: int) -> int:
    """``channels`` if ``groups`` divides it, else the multiple of ``groups`` whose group-conv FLOPs
    (``c^2 / g``) are closest (ties: narrower).  Needed once: Table 2's ARM column lists c = 180 for g = 8."""
    if channels % groups == 0:
        return channels
    lower = channels // groups * groups
    return min(
        (w for w in (lower, lower + groups) if w > 0), key=lambda w: (abs(w * w - channels * channels), w)
    )


# ------------------------------------------------------------------------------------------------ configurations
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


# ------------------------------------------------------------------------------------------------ results
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
class Agreement:
    """How this hardware's ordering of the configurations compares with the paper's, pair by pair."""

    measured_order: list[str]  # fastest first
    paper_order: list[str]
    concordant: int  # pairs ordered as in the paper
    tied: int  # pairs whose measured speeds differ by less than the noise
    reversed: list[tuple[str, str]]  # (paper's faster, paper's slower) pairs measured the other way round
    paper_fastest_is_fastest: bool
    tie_tolerance: float  # relative speed difference below which a pair counts as tied

    @property
    def verdict(self) -> str:
        if not self.reversed:
            return "agrees" if self.concordant else "inconclusive (all pairs within noise)"
        return "disagrees" if len(self.reversed) > self.concordant else "partly agrees"

    def sentence(self) -> str:
        pairs = self.concordant + self.tied + len(self.reversed)
        text = (
            f"{self.verdict} with the paper's ordering: {self.concordant} of {pairs} pairs ordered as in the paper, "
            f"{self.tied} within noise (< {self.tie_tolerance:.0%} apart), {len(self.reversed)} reversed"
        )
        if self.reversed:
            text += " (" + "; ".join(f"{a} slower than {b}" for a, b in self.reversed) + ")"
        fastest = self.paper_order[0]
        text += f"; the paper's fastest ({fastest}) is " + (
            "also the fastest here"
            if self.paper_fastest_is_fastest
            else f"not; fastest here: {self.measured_order[0]}"
        )
        return text


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


def median_noise(t: Timing) -> float:
    """Half-width of the ~95% interval of a median relative to it, ``1.57 * IQR / sqrt(n) / median`` (the notch
    of a notched box plot, McGill, Tukey and Larsen 1978)."""
    return 1.57 * t.iqr_ms / math.sqrt(t.repeats) / t.median_ms


def compare_orderings(
    labels: Sequence[str],
    measured: Sequence[float],
    paper: Sequence[float],
    relative_noise: Sequence[float] | None = None,
    min_tolerance: float = 0.02,
) -> Agreement:
    """Pairwise comparison of measured speeds with the paper's (higher = faster).

    A pair is tied when its measured speeds differ by less than ``max(min_tolerance, noise_i + noise_j)``, where
    ``relative_noise`` is each config's uncertainty of the median relative to it (``median_noise``): the
    "notches" of McGill, Tukey and Larsen (1978), whose non-overlap marks two medians as different.
    """
    n = len(labels)
    if not (len(measured) == len(paper) == n) or n < 2:
        raise ValueError("need at least two configurations with one measured and one paper speed each")
    noise = list(relative_noise) if relative_noise is not None else [0.0] * n
    concordant = tied = 0
    reversed_pairs: list[tuple[str, str]] = []
    tolerances = []
    for i in range(n):
        for j in range(i + 1, n):
            if paper[i] == paper[j]:
                continue
            fast, slow = (i, j) if paper[i] > paper[j] else (j, i)
            tol = max(min_tolerance, noise[i] + noise[j])
            tolerances.append(tol)
            gap = measured[fast] / measured[slow] - 1.0
            if abs(gap) < tol:
                tied += 1
            elif gap > 0:
                concordant += 1
            else:
                reversed_pairs.append((labels[fast], labels[slow]))
    order = lambda speeds: [labels[k] for k in sorted(range(n), key=lambda k: -speeds[k])]  # noqa: E731
    measured_order, paper_order = order(measured), order(paper)
    return Agreement(
        measured_order=measured_order, paper_order=paper_order, concordant=concordant, tied=tied,
        reversed=reversed_pairs, paper_fastest_is_fastest=measured_order[0] == paper_order[0],
        tie_tolerance=max(tolerances) if tolerances else min_tolerance,
    )  # fmt: skip


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


#: Timing and size used by ``quick=True`` (for tests and smoke runs; numbers then mean little).
QUICK = {"input_size": 8, "warmup": 1, "min_time_s": 0.0, "repeats": 3, "rounds": 1}


def run_experiment(
    key: str,
    *,
    setting: str = "gpu",
    device: str | torch.device = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    input_size: int = INPUT_SIZE,
    warmup: int = 5,
    min_time_s: float = 2.0,
    repeats: int = 20,
    rounds: int = 5,
    seed: int = 0,
) -> ExperimentResult:
    """Build, profile and time every configuration of one experiment (configurations interleaved)."""
    exp = experiment(key, setting)
    dev = resolve_device(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    from .profile import count_params, profile

    torch.manual_seed(seed)
    nets, calls, costs = [], [], []
    for cfg in exp.configs:
        net = cfg.build().eval()
        totals = profile(net, input_size=input_size, batch_size=1).totals
        costs.append((count_params(net), totals.macs, totals.memory_access_cost))
        net = net.to(dev)
        x = torch.randn(batch_size, cfg.in_channels, input_size, input_size, device=dev)

        def forward(net: nn.Module = net, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)

        nets.append(net)
        calls.append(TimedCall(forward, threads=threads, cuda=dev.type == "cuda"))
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # the paper "activates the benchmarking function of CUDNN"
    try:
        timings = time_interleaved(
            calls, warmup=warmup, min_time_s=min_time_s, repeats=repeats, rounds=rounds
        )
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    effective_threads = threads if threads is not None else torch.get_num_threads()
    speeds = [1e3 / t.median_ms for t in timings]
    results = [
        ConfigResult(
            label=cfg.label,
            description=cfg.description,
            params=params,
            macs=macs,
            memory_access_cost=mac,
            timing=t,
            batches_per_s=s,
            images_per_s=s * batch_size,
            paper_speed=cfg.paper_speed,
            measured_ratio=s / speeds[0],
            paper_ratio=cfg.paper_speed / exp.configs[0].paper_speed,
        )  # fmt: skip
        for cfg, t, s, (params, macs, mac) in zip(exp.configs, timings, speeds, costs, strict=True)
    ]
    agreement = compare_orderings(
        [c.label for c in exp.configs],
        speeds,
        [c.paper_speed for c in exp.configs],
        relative_noise=[median_noise(t) for t in timings],
    )
    return ExperimentResult(
        key=exp.key, guideline=exp.guideline, paper_table=exp.paper_table, setting=setting,
        platform=PLATFORMS[setting], paper_unit=exp.paper_unit, device=str(dev), batch_size=batch_size,
        input_size=input_size, threads=effective_threads if dev.type == "cpu" else 0, num_blocks=NUM_BLOCKS,
        configs=results, agreement=agreement,
    )  # fmt: skip


def run_guidelines(
    experiments: Sequence[str] = EXPERIMENTS,
    *,
    setting: str = "gpu",
    device: str | torch.device = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    quick: bool = False,
    out: str | os.PathLike | None = None,
    **timing: Any,
) -> LabResult:
    """Run the chosen experiments; with ``out``, save one PNG per experiment (and nothing else) there.

    Defaults are the paper's settings (56 x 56 input, 10 blocks, batch 1; see the module docstring).
    ``quick=True`` uses ``QUICK`` (an 8 x 8 input and three timed calls) so that tests run in a second;
    ``timing`` overrides ``warmup`` / ``min_time_s`` / ``repeats`` / ``rounds`` / ``input_size``.
    """
    keys = [k.upper() for k in experiments]
    for k in keys:
        if k not in _DEFINITIONS:
            raise ValueError(f"unknown experiment {k!r}; choose from {list(EXPERIMENTS)}")
    settings = {**(QUICK if quick else {}), **timing}
    results = [
        run_experiment(k, setting=setting, device=device, threads=threads, batch_size=batch_size, **settings)
        for k in keys
    ]
    plots = {}
    if out is not None:
        for r in results:
            plots[r.key] = str(plot_experiment(r, Path(out) / f"guideline_{r.key}_{r.setting}.png"))
    return LabResult(environment(device), quick, results, plots)


# ------------------------------------------------------------------------------------------------ output
def format_experiment(r: ExperimentResult, fmt: str = "table") -> str:
    """One experiment as a text or GitHub-markdown table (units in the headers) and its agreement sentence."""
    if fmt not in ("table", "markdown"):
        raise ValueError(f"unknown format {fmt!r}; choose table or markdown")
    headers = [
        "config", "widths", "MACs (M)", "mem. access (M elem)", "latency (ms)", "latency IQR (ms)",
        "measured (batches/s)", "measured (img/s)", f"paper {r.setting.upper()} ({r.paper_unit})",
        "measured ratio", "paper ratio",
    ]  # fmt: skip
    body = [
        [
            c.label,
            c.description,
            f"{c.macs / 1e6:.1f}",
            f"{c.memory_access_cost / 1e6:.3f}",
            f"{c.timing.median_ms:.3f}",
            f"{c.timing.q1_ms:.3f}-{c.timing.q3_ms:.3f}",
            f"{c.batches_per_s:.1f}",
            f"{c.images_per_s:.1f}",
            f"{c.paper_speed:g}",
            f"{c.measured_ratio:.2f}",
            f"{c.paper_ratio:.2f}",
        ]
        for c in r.configs
    ]
    setup = (
        f"{r.num_blocks} blocks, {r.input_size}x{r.input_size} input, batch {r.batch_size}, {r.device}"
        + (f", threads={r.threads}" if r.device == "cpu" else "")
        + f"; MACs and memory access cost per image; paper: {r.paper_table}, {r.platform}"
    )
    verdict = f"{r.key} on this hardware: {r.agreement.sentence()}."
    if fmt == "markdown":
        lines = [f"**{r.key}**: {r.guideline}. {setup}.", ""]
        lines += ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join([*lines, "", verdict])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    title = f"{r.key}: {r.guideline}\n  {setup}"
    return "\n".join(
        [title, line(headers), line(["-" * w for w in widths]), *map(line, body), "  " + verdict]
    )


def format_lab(lab: LabResult, fmt: str = "table") -> str:
    env = lab.environment
    head = (
        f"ShuffleNetV2 guideline lab ({PAPER}, Section 2) on {env.get('device')} ({env.get('cpu')}, "
        f"torch {env.get('torch')}, load average {env.get('loadavg_1m')})"
        + (
            "\nQUICK MODE: tiny input and few calls; speeds and verdicts are not meaningful"
            if lab.quick
            else ""
        )
    )
    parts = [head, *(format_experiment(e, fmt) for e in lab.experiments)]
    if lab.plots:
        parts.append("plots: " + ", ".join(lab.plots.values()))
    return "\n\n".join(parts)


def plot_experiment(r: ExperimentResult, path: str | os.PathLike) -> Path:
    """Grouped bars: measured speed relative to the first configuration beside the paper's; a second panel
    shows relative speed against memory access cost."""
    import numpy as np

    fig = new_figure(11, 4.5)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    labels = [c.label for c in r.configs]
    xs = np.arange(len(labels))
    measured = [c.measured_ratio for c in r.configs]
    lo = [c.measured_ratio - (1e3 / c.timing.q3_ms) / r.configs[0].batches_per_s for c in r.configs]
    hi = [(1e3 / c.timing.q1_ms) / r.configs[0].batches_per_s - c.measured_ratio for c in r.configs]
    ax.bar(xs - 0.2, measured, 0.4, yerr=[lo, hi], capsize=3, label=f"measured ({r.device})")
    ax.bar(xs + 0.2, [c.paper_ratio for c in r.configs], 0.4, label=f"paper ({r.platform.split(',')[0]})")
    ax.set_xticks(xs, labels, rotation=15, fontsize=8)
    ax.set_ylabel(f"speed relative to {labels[0]} (bars: IQR)")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_title(f"{r.key}: {r.agreement.verdict} with the paper", fontsize=10)
    ax.legend(fontsize=8)
    ax2.scatter([c.memory_access_cost / 1e6 for c in r.configs], measured, label="measured")
    ax2.scatter([c.memory_access_cost / 1e6 for c in r.configs], [c.paper_ratio for c in r.configs], marker="x",
                label="paper")  # fmt: skip
    for c in r.configs:
        ax2.annotate(c.label, (c.memory_access_cost / 1e6, c.measured_ratio), fontsize=7, xytext=(3, 3),
                     textcoords="offset points")  # fmt: skip
    ax2.set_xlabel("memory access cost per image (million elements)")
    ax2.set_ylabel("relative speed")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    fig.suptitle(
        f"{r.num_blocks} blocks, {r.input_size}x{r.input_size}, batch {r.batch_size}, {r.device}"
        + (f", threads={r.threads}" if r.device == "cpu" else ""),
        fontsize=9,
    )
    return save_png(fig, path)
