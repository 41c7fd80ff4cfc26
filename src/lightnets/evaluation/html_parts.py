"""Building blocks of the HTML pages: escaping, inlined images, number formats, the model card, the metric
tiles, the tables (history, per-class, most confused, worst errors) and the shared CSS.  The training report
(``report``) and the deployed-forms comparison (``deployed_report``) are both made of these, so they look alike.

Every user-provided string (class names, captions, model card values, file paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..util.atomic import display_name
from .metrics import EvalResult, most_confused
from .plots import _finite, _keys


def _esc(x: Any) -> str:
    return html.escape(display_name(str(x)), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail_uri(image: Image.Image, max_side: int = 176, min_side: int = 112) -> str:
    """A data URI of a thumbnail: tiny inputs (MNIST, CIFAR) are enlarged with crisp pixels and stored as PNG,
    large photos are shrunk and stored as JPEG."""
    img = image.copy()
    tiny = max(img.size) < min_side
    if tiny:
        factor = math.ceil(min_side / max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    elif max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if not tiny and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=88)
        return _data_uri(buf.getvalue(), "image/jpeg")
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA")
    img.save(buf, format="PNG")
    return _data_uri(buf.getvalue(), "image/png")


def _load_image(src: Image.Image | str | os.PathLike) -> Image.Image | None:
    if isinstance(src, Image.Image):
        return src
    try:
        with Image.open(src) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError):
        return None


def _fmt_count(v: Any) -> str:
    """``3,504,872 (3.50 M)`` for large integers."""
    if not _finite(v):
        return _esc(v)
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= div:
            return f"{v:,.0f} ({v / div:.2f} {unit})"
    return f"{v:,.0f}"


def _fmt_value(v: Any) -> str:
    """HTML for one model-card value: nested dicts as key/value lines, lists joined."""
    if isinstance(v, Mapping):
        return (
            "<br>".join(f"<span class=k>{_esc(k)}</span> {_fmt_value(x)}" for k, x in v.items()) or "&ndash;"
        )
    if isinstance(v, list | tuple):
        if v and all(isinstance(x, Mapping) for x in v):
            return "<hr>".join(_fmt_value(x) for x in v)
        return _esc(", ".join(str(x) for x in v))
    if isinstance(v, float):
        return _esc(f"{v:.6g}")
    return _esc(v)


_CARD_FIRST = ("name", "arch", "family", "params", "macs", "input_size", "preprocessing")


def _model_card_html(card: Mapping[str, Any]) -> str:
    keys = [k for k in _CARD_FIRST if k in card] + [k for k in card if k not in _CARD_FIRST]
    rows = []
    for k in keys:
        v = card[k]
        value = (
            _fmt_count(v)
            if (k in ("params", "macs", "flops") or k.endswith(("_params", "_macs")))
            else _fmt_value(v)
        )
        rows.append(f"<tr><th>{_esc(str(k).replace('_', ' '))}</th><td>{value}</td></tr>")
    return f"<table class=kv>{''.join(rows)}</table>" if rows else "<p class=muted>no model card</p>"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if _finite(x) else "&ndash;"


def _num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or not _finite(x):
        return _esc("" if x is None else x)
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    return f"{float(x):.{digits}g}"


def _tiles(result: EvalResult, history: Sequence[Mapping[str, Any]]) -> str:
    macro, weighted = result.average("macro"), result.average("weighted")
    tiles = [("top-1 accuracy", _pct(result.top1))]
    if result.num_classes > 5:
        tiles.append(("top-5 accuracy", _pct(result.top5)))
    tiles += [
        ("loss", _num(result.loss)),
        ("macro F1", _num(macro["f1"], 3)),
        ("weighted F1", _num(weighted["f1"], 3)),
        ("samples", _num(result.num_samples)),
        ("classes", _num(result.num_classes)),
    ]
    epochs = [row["epoch"] for row in history if _finite(row.get("epoch"))]
    if epochs:
        tiles.append(("epochs", _num(int(max(epochs)))))
    return "".join(
        f"<div class=tile><div class=v>{v}</div><div class=l>{_esc(label)}</div></div>" for label, v in tiles
    )


def _history_table(history: Sequence[Mapping[str, Any]]) -> str:
    keys = _keys(history)
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_num(row.get(k))}</td>" for k in keys) + "</tr>" for row in history
    )
    return f"<table class=grid><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _per_class_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def row_html(r: Mapping[str, Any], cls: str = "") -> str:
        f1 = float(r["f1"])
        bar = f"<div class=bar><span style='width:{100 * min(max(f1, 0.0), 1.0):.1f}%'></span></div>"
        return (
            f"<tr{cls}><td class=name>{_esc(r['class'])}</td><td>{_num(r['precision'], 3)}</td>"
            f"<td>{_num(r['recall'], 3)}</td><td>{_num(f1, 3)}{bar}</td><td>{_num(int(r['support']))}</td></tr>"
        )

    body = "".join(row_html(r) for r in rows if r["kind"] == "class")
    foot = "".join(row_html(r, " class=avg") for r in rows if r["kind"] != "class")
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    return f"<table class=grid><thead>{head}</thead><tbody>{body}</tbody><tfoot>{foot}</tfoot></table>"


def _confused_table(result: EvalResult) -> str:
    pairs = most_confused(result.confusion, result.class_names, n=10)
    if not pairs:
        return ""
    body = "".join(
        f"<tr><td class=name>{_esc(p['true_name'])}</td><td class=name>{_esc(p['pred_name'])}</td>"
        f"<td>{_num(p['count'])}</td><td>{_pct(p['fraction'])}</td></tr>"
        for p in pairs
    )
    head = "<tr><th>true class</th><th>predicted as</th><th>count</th><th>share of true class</th></tr>"
    return f"<h3>Most frequent confusions</h3><table class=grid><thead>{head}</thead><tbody>{body}</tbody></table>"


def _worst_table(result: EvalResult) -> str:
    names = result.class_names
    body = "".join(
        f"<tr><td>{m.index}</td><td class=name>{_esc(names[m.true])}</td><td class=name>{_esc(names[m.pred])}</td>"
        f"<td>{_pct(m.confidence)}</td><td>{_pct(m.true_prob)}</td><td>{_num(m.loss)}</td>"
        f"<td class=path>{_esc(m.path or '')}</td></tr>"
        for m in result.worst
    )
    head = (
        "<tr><th>sample</th><th>true</th><th>predicted</th><th>confidence</th><th>p(true)</th>"
        "<th>loss</th><th>path</th></tr>"
    )
    return f"<table class=grid><thead>{head}</thead><tbody>{body}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f8;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px}
header{background:#1d2330;color:#fff;padding:20px 24px}
header h1{margin:0;font-size:22px;max-width:1180px;margin:0 auto}
header p{margin:4px auto 0;color:#aab2c5;max-width:1180px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:18px 0}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:15px;margin:18px 0 8px}
.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{background:#eef2fb;border-radius:6px;padding:10px 16px;min-width:110px}
.tile .v{font-size:21px;font-weight:600}
.tile .l{color:#5b6477;font-size:12px}
table{border-collapse:collapse}
table.kv th{text-align:left;color:#5b6477;font-weight:500;padding:4px 16px 4px 0;vertical-align:top}
table.kv td{padding:4px 0}
table.kv hr{border:0;border-top:1px solid #e3e6ee;margin:4px 0}
.k{color:#5b6477}
table.grid{width:100%;font-size:13px}
table.grid th{background:#f0f2f7;text-align:right;padding:5px 8px;position:sticky;top:0}
table.grid td{text-align:right;padding:4px 8px;border-top:1px solid #eceef3;font-variant-numeric:tabular-nums}
table.grid th:first-child,table.grid td.name,table.grid td.path{text-align:left}
td.path{color:#5b6477;word-break:break-all}
tr.avg td{font-weight:600;background:#f7f8fb}
.bar{height:4px;background:#e3e6ee;border-radius:2px;margin-top:2px}
.bar span{display:block;height:4px;background:#3b6fd8;border-radius:2px}
img.plot{max-width:100%;height:auto;display:block;margin:0 auto}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
figure{margin:0;background:#f7f8fb;border-radius:6px;padding:8px;text-align:center}
figure img{max-width:100%;height:auto;image-rendering:auto}
figcaption{font-size:12px;color:#333;margin-top:6px;word-break:break-word}
details summary{cursor:pointer;color:#3b6fd8;margin:8px 0}
.scroll{max-height:520px;overflow:auto}
.muted{color:#7a8296}
"""


# (lightnets.evaluation.deployed_report builds the deployed-forms comparison from these, so both pages look alike)
CSS = _CSS
escape = _esc
data_uri = _data_uri
thumbnail_uri = _thumbnail_uri
per_class_table = _per_class_table
