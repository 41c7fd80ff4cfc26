"""The lab's output: an experiment as a text or markdown table with its agreement sentence, the whole run's
text, and one PNG per experiment."""

from __future__ import annotations

import os
from pathlib import Path

from ...util.figures import new_figure, save_png
from .results import ExperimentResult, LabResult
from .tables import PAPER


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
