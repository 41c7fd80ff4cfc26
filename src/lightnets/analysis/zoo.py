"""The zoo at a glance: every registered model's measured parameters and MACs beside its paper's numbers.

``lightnets models`` prints this; README.md's model table is generated from it (scripts/update_readme.py).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import torch

from ..registry import PaperRef, get_card, list_models
from .counting import count_macs, count_params


def _primary_ref(refs: tuple[PaperRef, ...], input_size: int) -> PaperRef | None:
    for ref in refs:
        if ref.input_size == input_size:
            return ref
    return refs[0] if refs else None


#: Families whose ImageNet weights keras.applications publishes at the registered widths (MobileNet alpha
#: 0.25-1.0, MobileNetV2 0.35-1.4, MobileNetV3 Large / Small 1.0 and 0.75, minimalistic 1.0); ``lightnets
#: convert`` turns those files into checkpoints (tests/convert/test_convert_keras.py checks the conversion is exact).
KERAS_WEIGHTS_FAMILIES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3")


def pretrained_sources(name: str) -> str:
    """Where loadable pretrained weights for ``name`` come from: torchvision's .pth files (load directly with
    ``create_model(name, weights=...)``), Keras applications files (via ``lightnets convert``), or none."""
    card = get_card(name)
    sources = []
    if card.torchvision_name:
        sources.append("torchvision .pth")
    if card.family in KERAS_WEIGHTS_FAMILIES:
        sources.append("Keras .h5 (convert)")
    return ", ".join(sources) or "none"


def model_row(name: str) -> dict[str, Any]:
    """Measured params and MACs (batch 1, the card's input size) with the paper's reference numbers."""
    card = get_card(name)
    with torch.device("meta"):  # shapes only: no weight initialisation, no real arithmetic
        model = card.builder(**card.kwargs)
    ref = _primary_ref(card.refs, card.input_size)
    return {
        "name": name,
        "family": card.family,
        "input_size": card.input_size,
        "params": count_params(model),
        "macs": count_macs(model, card.input_size),
        "paper_params": ref.params if ref and ref.params else (ref.exact_params if ref else None),
        "paper_macs": ref.macs if ref else None,
        "paper_top1": ref.top1 if ref else None,
        "source": ref.source if ref else "",
        "pretrained": pretrained_sources(name),
    }


def model_table(pattern: str = "*") -> list[dict[str, Any]]:
    return [model_row(n) for n in list_models(pattern)]


def _m(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value / 1e6:.{digits}f}"


COLUMNS = [
    ("name", "model"),
    ("input_size", "input (px)"),
    ("params", "params (M)"),
    ("paper_params", "paper params (M)"),
    ("macs", "MACs (M)"),
    ("paper_macs", "paper MACs (M)"),
    ("paper_top1", "paper top-1 (%)"),
    ("pretrained", "pretrained weights"),
]


def _cells(row: dict[str, Any]) -> list[str]:
    out = []
    for key, _ in COLUMNS:
        v = row[key]
        if key in ("params", "paper_params"):
            out.append(_m(v, 3))
        elif key in ("macs", "paper_macs"):
            out.append(_m(v, 1))
        elif key == "paper_top1":
            out.append("" if v is None else f"{v:.1f}")
        else:
            out.append(str(v))
    return out


def format_table(rows: list[dict[str, Any]], fmt: str = "table") -> str:
    """Render rows as an aligned text table, GitHub markdown, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    headers = [h for _, h in COLUMNS]
    body = [_cells(r) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose table, markdown, csv or json")
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(headers)]

    def fmt_row(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths]), *map(fmt_row, body)])


LATENCY_HEADER = "latency (ms, batch 1, {threads} threads, {engine})"


def readme_table(
    pattern: str = "*",
    *,
    latency: dict[str, str] | None = None,
    threads: int = 2,
    engine: str = "onnxruntime",
) -> str:
    """README.md's model table: ``lightnets models`` columns plus measured latency from ``lightnets bench``.

    ``latency`` maps names to already-formatted values (reuse); ``None`` measures every model now."""
    rows = model_table(pattern)
    if latency is None:
        from ..deploy.bench import latency_column

        measured = latency_column([r["name"] for r in rows], input_size_per_model={r["name"]: r["input_size"] for r in rows},
                                  threads=threads, engine=engine)  # fmt: skip
        latency = {name: f"{ms:.2f}" for name, ms in measured.items()}
    table = format_table(rows, "markdown").splitlines()
    header = LATENCY_HEADER.format(threads=threads, engine=engine)
    out = [table[0][:-1] + f"| {header} |", table[1] + "---|"]
    for row, line in zip(rows, table[2:], strict=True):
        out.append(line[:-1] + f"| {latency.get(row['name'], '')} |")
    return "\n".join(out)
