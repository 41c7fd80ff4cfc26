"""Benchmark rows (``BenchRow``: one measured case, units in the field comments) and how they are written:
an aligned text table with units in the headers, GitHub markdown, CSV or JSON (``format_rows``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ROW_FIELDS", "BenchRow", "format_rows", "rows_to_csv", "rows_to_json"]


@dataclass(frozen=True)
class BenchRow:
    """One measured case.  Latencies in milliseconds per batch; throughput in images per second.

    ``macs`` and ``memory_access_cost`` are per image (batch 1) at this input size (``analysis.profile``
    totals); ``threads`` is PyTorch's intra-op thread count in effect, which is also the count passed to the
    runner when one was asked for (with ``threads=None`` an onnxruntime / OpenVINO runner uses its own default).
    """

    model: str
    engine: str
    device: str
    batch_size: int
    input_h: int
    input_w: int
    threads: int
    params: int
    macs: int
    memory_access_cost: int
    latency_ms: float  # median
    latency_ms_q1: float
    latency_ms_q3: float
    latency_ms_p10: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_max: float
    repeats: int
    images_per_s: float  # batch_size / median latency
    images_per_s_p10: float  # batch_size / 90th percentile latency (slow calls)
    images_per_s_p90: float  # batch_size / 10th percentile latency (fast calls)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow))


def rows_to_csv(rows: Sequence[BenchRow]) -> str:
    """The rows as CSV, one column per ``ROW_FIELDS`` entry."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    for r in rows:
        writer.writerow([getattr(r, f) for f in ROW_FIELDS])
    return buf.getvalue()


def rows_to_json(
    rows: Sequence[BenchRow], env: Mapping[str, Any] | None = None, indent: int | None = 2
) -> str:
    """``{"environment": ..., "units": ..., "rows": [...]}``."""
    units = {
        "latency_ms*": "milliseconds per batch",
        "images_per_s*": "images per second",
        "macs": "multiply-accumulates per image (batch 1)",
        "memory_access_cost": "ShuffleNetV2's MAC: elements read + written per image (batch 1)",
    }
    return json.dumps(
        {"environment": dict(env or {}), "units": units, "rows": [r.as_dict() for r in rows]}, indent=indent
    )


# (header with unit, cell) for the text table
_TABLE: tuple[tuple[str, Callable[[BenchRow], str]], ...] = (
    ("model", lambda r: r.model),
    ("engine", lambda r: r.engine),
    ("batch", lambda r: str(r.batch_size)),
    ("input (px)", lambda r: f"{r.input_h}x{r.input_w}"),
    ("threads", lambda r: str(r.threads)),
    ("MACs (M/img)", lambda r: f"{r.macs / 1e6:.1f}"),
    ("mem. access (M elem/img)", lambda r: f"{r.memory_access_cost / 1e6:.2f}"),
    ("latency median (ms)", lambda r: f"{r.latency_ms:.3f}"),
    ("latency IQR (ms)", lambda r: f"{r.latency_ms_q1:.3f}-{r.latency_ms_q3:.3f}"),
    ("latency p10-p90 (ms)", lambda r: f"{r.latency_ms_p10:.3f}-{r.latency_ms_p90:.3f}"),
    ("throughput (img/s)", lambda r: f"{r.images_per_s:.1f}"),
    ("calls", lambda r: str(r.repeats)),
)


def format_rows(rows: Sequence[BenchRow], fmt: str = "table", env: Mapping[str, Any] | None = None) -> str:
    """Rows as an aligned text table (units in the headers), GitHub markdown, CSV or JSON."""
    if fmt == "csv":
        return rows_to_csv(rows)
    if fmt == "json":
        return rows_to_json(rows, env)
    headers = [h for h, _ in _TABLE]
    body = [[cell(r) for _, cell in _TABLE] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose table, markdown, csv or json")
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(headers), line(["-" * w for w in widths]), *map(line, body)]
    if env:
        out.append(
            f"torch {env.get('torch')}, {env.get('cpu')}, {env.get('device')}; "
            f"load average (1 min) {env.get('loadavg_1m')}; latency = median over the timed calls"
        )
    return "\n".join(out)
