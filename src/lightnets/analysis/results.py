"""The printable result types of ``profile``: one record per ATen op, one row per module, the totals, and the
``Profile`` that renders them as a table, CSV or JSON.  Every number is computed elsewhere (``profile``,
``memory_access``); these types only hold and format it."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: What each field of a profile row means; written into ``Profile.to_dict()`` so that files explain themselves.
DEFINITIONS: dict[str, str] = {
    "params": "parameter elements owned by the module",
    "macs": "multiply-accumulates of convolutions and matrix products (papers' MAdds), by FlopCounterMode",
    "flops": "2 x macs",
    "activation_elements": "elements of tensors newly created by the module's ops (no views, no in-place)",
    "memory_access_cost": "ShuffleNetV2's MAC: elements read (inputs, weights) + written (outputs), per op, summed",
    "peak_activation_elements": "largest total of activation tensors alive at once, each freed after last use",
    "*_bytes": "the element count times the itemsize of the profiled dtype",
}


@dataclass(frozen=True)
class OpRecord:
    """One ATen operation of the forward pass.  ``module`` is the innermost module that ran it."""

    module: str
    op: str
    output_shape: tuple[int, ...] | None
    macs: int
    memory_access_cost: int
    activation_elements: int


@dataclass(frozen=True)
class LayerRow:
    """The cost of one module's own operations (for a leaf module: all of its work).

    A container module gets a row only for ops its own ``forward`` runs outside its children (a residual add,
    a ``cat``, a functional channel shuffle); ``is_leaf`` tells the two apart.  ``output_shape`` is the module's
    output (of its last call); ``calls`` is how often it ran.
    """

    name: str
    type: str
    is_leaf: bool
    calls: int
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    flops: int
    activation_elements: int
    activation_bytes: int
    memory_access_cost: int
    memory_access_cost_bytes: int


@dataclass(frozen=True)
class Totals:
    """Whole-model numbers.  Every field but the peak is the sum of the rows' fields."""

    params: int
    macs: int
    flops: int
    activation_elements: int
    activation_bytes: int
    peak_activation_elements: int
    peak_activation_bytes: int
    memory_access_cost: int
    memory_access_cost_bytes: int


_ROW_SUM_FIELDS = (
    "params",
    "macs",
    "flops",
    "activation_elements",
    "activation_bytes",
    "memory_access_cost",
    "memory_access_cost_bytes",
)

# (header with its unit, row field, scale, format) for Profile.to_table
_TABLE_COLUMNS = (
    ("Params (K)", "params", 1e3, ".2f"),
    ("MACs (M)", "macs", 1e6, ".3f"),
    ("FLOPs (M, 2xMACs)", "flops", 1e6, ".3f"),
    ("Activations (K elem)", "activation_elements", 1e3, ".1f"),
    ("Activations (kB)", "activation_bytes", 1e3, ".1f"),
    ("Mem. access (K elem)", "memory_access_cost", 1e3, ".1f"),
    ("Mem. access (kB)", "memory_access_cost_bytes", 1e3, ".1f"),
)


def _shape_str(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape is not None else ""


@dataclass(frozen=True)
class Profile:
    """Per-layer and total cost of one forward pass; see the module docstring for every definition."""

    model: str
    input_shape: tuple[int, int, int, int]
    dtype: str
    bytes_per_element: int
    rows: list[LayerRow]
    totals: Totals
    ops: list[OpRecord] = field(default_factory=list, repr=False)

    def row(self, name: str) -> LayerRow:
        """The row of module ``name`` (its name in ``model.named_modules()``; the root is ``"(root)"``)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows][:10]}...")

    def to_dict(self, per_layer: bool = True, include_ops: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "bytes_per_element": self.bytes_per_element,
            "definitions": dict(DEFINITIONS),
            "totals": asdict(self.totals),
        }
        if per_layer:
            d["rows"] = [asdict(r) for r in self.rows]
        if include_ops:
            d["ops"] = [asdict(o) for o in self.ops]
        return d

    def to_json(self, per_layer: bool = True, include_ops: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(per_layer=per_layer, include_ops=include_ops), indent=indent)

    def to_csv(self, per_layer: bool = True) -> str:
        """Raw counts (elements, bytes; no scaling), one line per row, then a line named ``total``."""
        names = [f.name for f in fields(LayerRow)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        if per_layer:
            for r in self.rows:
                values = asdict(r)
                values["output_shape"] = _shape_str(r.output_shape)
                writer.writerow([values[n] for n in names])
        total = {n: "" for n in names} | {"name": "total", "type": self.model}
        total |= {n: getattr(self.totals, n) for n in _ROW_SUM_FIELDS}
        writer.writerow([total[n] for n in names])
        return buf.getvalue()

    def to_table(self, per_layer: bool = True) -> str:
        """A text table; every numeric header names its unit (K = 1e3, M = 1e6, kB = 1000 bytes)."""
        header = ["Layer", "Type", "Output shape", *(c[0] for c in _TABLE_COLUMNS)]

        def line(name: str, type_: str, shape: str, obj: Any) -> list[str]:
            return [
                name,
                type_,
                shape,
                *(format(getattr(obj, f) / s, fmt) for _, f, s, fmt in _TABLE_COLUMNS),
            ]

        body = []
        if per_layer:
            for r in self.rows:
                name = r.name if r.is_leaf else f"{r.name} (own ops)"
                body.append(line(name, r.type, _shape_str(r.output_shape), r))
        body.append(line("total", self.model, "", self.totals))
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def fmt_row(row: list[str]) -> str:
            cells = [c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(row)]
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt_row(header))
        lines = [fmt_row(header), rule, *(fmt_row(r) for r in body[:-1])]
        if per_layer:
            lines.append(rule)
        lines.append(fmt_row(body[-1]))
        t = self.totals
        lines.append(
            f"input {_shape_str(self.input_shape)}, {self.dtype} ({self.bytes_per_element} bytes/element); "
            f"peak live activations {t.peak_activation_elements / 1e3:.1f} K elem = "
            f"{t.peak_activation_bytes / 1e3:.1f} kB; mem. access = ShuffleNetV2's MAC (elements read + written)"
        )
        return "\n".join(lines)
