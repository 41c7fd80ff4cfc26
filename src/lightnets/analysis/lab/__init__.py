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

The package: ``tables`` (the paper's Tables 1-4), ``blocks`` (the networks), ``experiments`` (G1-G4 as data),
``runner`` (build, profile, time), ``agreement`` (ordering against the paper), ``results`` and ``report``
(tables and plots).  Every name is importable from ``lightnets.analysis.lab``.
"""

from .agreement import Agreement, compare_orderings, median_noise
from .blocks import (
    Bottleneck,
    ParallelFragments,
    PointwisePair,
    SeriesFragments,
    equal_flops_width,
    group_divisible_width,
    stack,
)
from .experiments import Experiment, GuidelineConfig, experiment
from .report import format_experiment, format_lab, plot_experiment
from .results import ConfigResult, ExperimentResult, LabResult
from .runner import QUICK, run_experiment, run_guidelines
from .tables import (
    EXPERIMENTS,
    G1_TABLE,
    G2_TABLE,
    G3_CHANNELS,
    G3_TABLE,
    G4_CHANNELS,
    G4_EXPANSION,
    G4_TABLE,
    INPUT_SIZE,
    NUM_BLOCKS,
    PAPER,
    PLATFORMS,
    SETTINGS,
    Arrangement,
    BottleneckRow,
    FragmentRow,
    GroupRow,
    RatioRow,
)

__all__ = [
    "EXPERIMENTS",
    "G1_TABLE",
    "G2_TABLE",
    "G3_CHANNELS",
    "G3_TABLE",
    "G4_CHANNELS",
    "G4_EXPANSION",
    "G4_TABLE",
    "INPUT_SIZE",
    "NUM_BLOCKS",
    "PAPER",
    "PLATFORMS",
    "QUICK",
    "SETTINGS",
    "Agreement",
    "Arrangement",
    "Bottleneck",
    "BottleneckRow",
    "ConfigResult",
    "Experiment",
    "ExperimentResult",
    "FragmentRow",
    "GroupRow",
    "GuidelineConfig",
    "LabResult",
    "ParallelFragments",
    "PointwisePair",
    "RatioRow",
    "SeriesFragments",
    "compare_orderings",
    "equal_flops_width",
    "experiment",
    "format_experiment",
    "format_lab",
    "group_divisible_width",
    "median_noise",
    "plot_experiment",
    "run_experiment",
    "run_guidelines",
    "stack",
]
