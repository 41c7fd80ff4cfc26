"""The text form of a ``DeployReport`` (``lightnets export`` prints it; the JSON beside the file has it all)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_report"]


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def format_report(report: Any) -> str:
    """A few lines: what was written, how it was checked, accuracy, float layers, latency."""
    r = report
    kind = "int8" if r.quantize else "fp32"
    lines = [f"wrote {r.path} ({r.format} {kind}, {_mb(r.num_bytes)}, {r.num_bytes / r.fp32_param_bytes:.0%} of "
             f"the fp32 weights' {_mb(r.fp32_param_bytes)}; {r.seconds:.1f} s)"]  # fmt: skip
    where = f"{r.format}'s own runtime on {r.num_check_images} check images ({r.checked_on})"
    if r.quantize is None:
        lines.append(f"parity: max abs diff vs eager fp32 {r.max_abs_diff:.2e} (<= {r.parity_atol:.1e}; max |logit| "
                     f"{r.logit_scale:.2f}) in {where}")  # fmt: skip
    else:
        lines.append(f"int8 top-1 agreement with fp32: {r.agreement:.2%} in {where}")
    if r.accuracy:
        a = r.accuracy
        lines.append(f"accuracy on {a['images']} labelled images: fp32 {a['fp32']:.2f} %, exported {a['exported']:.2f} % "
                     f"(drop {a['drop_points']:+.2f} points)")  # fmt: skip
    if r.quantize:
        budget = "within" if r.within_budget else "MISSES"
        tried = ", ".join(f"{s['float_layers']} float: {s['drop_points']:.2f}" for s in r.fallback)
        lines.append(f"int8 budget {r.max_drop:g} points: {budget} (attempts, drop in points: {tried})")
        lines.append("layers kept in float: " + (", ".join(r.float_layers) if r.float_layers else "none"))
        if not r.within_budget:
            lines.append("post-training int8 did not reach the budget: the file holds the best attempt; raise "
                         "--max-drop or give more --calib images (quantization-aware training is not in lightnets yet)")  # fmt: skip
    if r.latency_ms is not None:
        lines.append(f"latency (batch 1, {r.threads or 'default'} threads): median {r.latency_ms:.2f} ms "
                     f"(IQR {r.latency_iqr_ms[0]:.2f}-{r.latency_iqr_ms[1]:.2f})")  # fmt: skip
    if r.format_info:
        lines.append("format: " + ", ".join(f"{k} {v}" for k, v in r.format_info.items()))
    lines.append(f"files: {', '.join(r.files)}; report: {r.path}.report.json")
    return "\n".join(lines)
