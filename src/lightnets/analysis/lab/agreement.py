"""Does this hardware order an experiment's configurations as the paper did?  Pairwise comparison of measured
speeds with the paper's, with ties decided by the measurement noise of each median."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ...deploy.bench import Timing


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
