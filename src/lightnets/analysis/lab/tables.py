"""The paper's side of the guideline lab: Tables 1-4 of ShuffleNetV2 Section 2 (the x1 columns) as typed rows,
and the constants every experiment shares (10 blocks, a 56 x 56 input, the two hardware settings)."""

from __future__ import annotations

import enum
from typing import NamedTuple

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
