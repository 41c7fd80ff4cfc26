"""Plots, annotated images and a self-contained HTML report of a training run.

Everything here writes files; the numbers come from ``lightnets.evaluation.metrics``.  matplotlib is imported inside the
plotting functions (it is an optional ``train`` dependency and slow to import), and only through its Agg
canvas, so no global pyplot state or interactive backend is touched.

``report.html`` is a single file: images are inlined as base64 ``data:`` URIs and the CSS is inline, so it can
be mailed or archived without its run directory.  Every user-provided string (class names, captions, model
card values, file paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.wordnet import readable_result
from ..util.atomic import atomic_write, display_name, write_json
from .metrics import EvalResult, confusion_matrix_csv, most_confused, per_class_csv

PathOrFile = str | os.PathLike | BinaryIO


# ------------------------------------------------------------------------------------------------ plots
def _new_figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: PathOrFile) -> Path | None:
    # No "Software" metadata: keeps the PNG (and the report) free of the matplotlib URL and version.
    # Class names in scripts the default font lacks (e.g. CJK) draw as boxes; their warnings are dropped.
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        fig.savefig(buf, format="png", metadata={"Software": None})
    if isinstance(path, str | os.PathLike):
        return atomic_write(path, buf.getbuffer(), what="plot")
    path.write(buf.getvalue())
    return None


def _finite(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
    )


def _plain_text(s: str) -> str:
    """Text for matplotlib without mathtext interpretation of ``$``."""
    return s.replace("$", r"\$")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        x = row.get("epoch", i + 1)
        y = row.get(key)
        if _finite(x) and _finite(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in history:
        for k in row:
            seen.setdefault(str(k), None)
    return list(seen)


def _curve_groups(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Panels to draw: loss keys, accuracy keys, learning-rate keys (only those with data)."""
    keys = [k for k in _keys(history) if k != "epoch" and _series(history, k)[0]]
    train_first = {"train": 0, "val": 1, "test": 2}

    def order(k: str) -> tuple[int, str]:
        return train_first.get(k.split("_")[0], 3), k

    loss = sorted((k for k in keys if k.endswith("loss")), key=order)
    acc = sorted((k for k in keys if "acc" in k or "top1" in k or "top5" in k), key=order)
    lr = [k for k in keys if k == "lr" or k.startswith("lr_")]
    groups = [("loss", loss), ("accuracy", acc), ("learning rate", lr)]
    return [(title, ks) for title, ks in groups if ks]


def plot_curves(history: Sequence[Mapping[str, Any]], path: PathOrFile) -> Path | None:
    """PNG of the training curves: one panel each for losses, accuracies and the learning rate.

    Rows are dicts such as ``{"epoch", "train_loss", "train_acc", "val_loss", "val_top1", "lr"}``; missing
    keys, None and non-finite values are skipped, and a row without ``epoch`` counts as epoch ``position + 1``.
    Keys ending in ``loss`` go to the loss panel; keys containing ``acc``, ``top1`` or ``top5`` to the accuracy
    panel, drawn in percent (values are read as fractions unless one exceeds 1, then as percentages).
    Returns the written path (None when ``path`` is a file object).
    """
    groups = _curve_groups(history)
    fig = _new_figure(4.3 * max(1, len(groups)), 3.4, dpi=110)
    if not groups:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", fontsize=12, color="0.4")
        ax.set_axis_off()
        return _save_png(fig, path)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, groups, strict=True):
        scale = 1.0
        if title == "accuracy":
            values = [y for k in keys for y in _series(history, k)[1]]
            scale = 100.0 if max(values) <= 1.0 else 1.0
        for k in keys:
            xs, ys = _series(history, k)
            marker = "o" if len(xs) <= 30 else None
            ax.plot(
                xs,
                [y * scale for y in ys],
                marker=marker,
                markersize=3.5,
                linewidth=1.6,
                label=_plain_text(k),
            )
        if title == "loss":
            # a huge first validation loss (the digits demo starts near 380) flattens every later epoch to a
            # line at 0 on a linear axis; a log axis keeps all of them readable
            ax.set_yscale(_loss_scale([y for k in keys for y in _series(history, k)[1]]))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel({"accuracy": "accuracy (%)"}.get(title, title))
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save_png(fig, path)


def _loss_scale(values: Sequence[float], max_ratio: float = 30.0) -> str:
    """"log" when the positive losses span more than ``max_ratio`` (so a linear axis would hide the later
    epochs), else "linear"."""
    if not values or min(values) <= 0:
        return "linear"
    return "log" if max(values) / min(values) > max_ratio else "linear"


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: PathOrFile,
    normalize: bool = True,
    title: str | None = None,
) -> Path | None:
    """PNG of a confusion matrix (rows = true class, columns = predicted) with class names on both axes.

    ``normalize=True`` divides each row by its count (the diagonal is then per-class recall; empty rows stay
    0).  The figure grows with the class count and the label font follows the cell size, so 2-100 classes
    stay readable; the numbers are written into the cells up to 20 classes, and beyond 100 classes only every
    n-th tick is labelled.  Long names are shortened with an ellipsis.  Returns the written path (None for a
    file object).
    """
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
        data = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    else:
        data = cm.astype(np.float64)

    side = float(np.clip(2.8 + 0.16 * n, 5.0, 18.0))
    cell_pt = (side - 1.3) / max(n, 1) * 72  # approximate cell size in points (axes ~ side - 1.3 in)
    label_size = float(np.clip(cell_pt * 0.7, 4.0, 10.0))
    fig = _new_figure(side + 1.0, side, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    vmax = 1.0 if normalize else max(float(data.max()), 1.0)
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(
        im, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class" if normalize else "count"
    )

    step = max(1, math.ceil(n / 100))
    ticks = np.arange(0, n, step)
    labels = [_plain_text(_short(str(class_names[i]))) for i in ticks]
    ax.set_xticks(
        ticks, labels, fontsize=label_size, rotation=90 if n > 6 else 30, ha="center" if n > 6 else "right"
    )
    ax.set_yticks(ticks, labels, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        _plain_text(title) if title else "confusion matrix" + (" (row-normalized)" if normalize else "")
    )

    if n <= 20:
        text_size = float(np.clip(cell_pt * 0.33, 5.0, 12.0))
        for i in range(n):
            for j in range(n):
                v = data[i, j]
                text = f"{v:.2f}" if normalize else f"{int(cm[i, j])}"
                if normalize and v == 0:
                    text = "0"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=text_size,
                    color="white" if v > 0.55 * vmax else "black",
                )
    return _save_png(fig, path)


# ---------------------------------------------------------------------------------------- annotation
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 (or without FreeType): fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:  # a word wider than the banner
                cut = len(line) - 1
                while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def annotate_image(image: Image.Image, text: str, min_width: int = 224) -> Image.Image:
    """An RGB copy of ``image`` with ``text`` on a dark banner added above it (the picture is not covered).

    Images narrower than ``min_width`` are first enlarged by an integer factor (nearest neighbour), so a
    28-pixel digit still gets a readable label.  Long text wraps; newlines start new lines.  Uses Pillow's
    default font, scaled with the width.
    """
    img = image.convert("RGB") if image.mode != "RGB" else image.copy()
    if img.width < min_width:
        factor = math.ceil(min_width / max(img.width, 1))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    size = int(np.clip(img.width // 18, 12, 40))
    font = _font(size)
    pad = max(4, size // 3)
    measure = ImageDraw.Draw(img)
    lines = _wrap(measure, text, font, img.width - 2 * pad)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, size // 4)
    line_h = ascent + descent + max(2, size // 6)
    banner_h = len(lines) * line_h + 2 * pad - max(2, size // 6)
    out = Image.new("RGB", (img.width, img.height + banner_h), (24, 26, 33))
    out.paste(img, (0, banner_h))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=(255, 255, 255), font=font)
    return out


# ------------------------------------------------------------------------------------------ the report
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


def write_report(
    run_dir: str | os.PathLike,
    *,
    model_card: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    eval_result: EvalResult,
    thumbnails: Sequence[tuple[Image.Image | str | os.PathLike, str]] | None = None,
    title: str = "lightnets training report",
) -> Path:
    """Write ``run_dir/report.html`` (and the two plots it shows, ``curves.png`` and ``confusion_matrix.png``).

    Sections: summary metrics, model card (name, params, MACs, input size, preprocessing and any other keys),
    training curves, confusion matrix with the most frequent confusions, the per-class precision / recall / F1
    table, and the worst misclassified samples.  ``thumbnails`` are ``(image or file path, caption)`` pairs;
    when None they are read from the paths recorded in ``eval_result.worst`` (missing files are skipped).
    Returns the path of the report.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = list(history)
    result = readable_result(eval_result)  # ImageNet wnid folders: "tench (n01440764)"

    curves_png = run_dir / "curves.png"
    plot_curves(history, curves_png)
    cm_png = run_dir / "confusion_matrix.png"
    plot_confusion_matrix(result.confusion, result.class_names, cm_png, normalize=True)

    if thumbnails is None:
        thumbnails = [
            (m.path, f"{m.describe(result.class_names)}, loss {m.loss:.3g}")
            for m in result.worst
            if m.path is not None
        ]
    figures = []
    for src, caption in thumbnails:
        img = _load_image(src)
        if img is not None:
            figures.append(
                f"<figure><img src='{_thumbnail_uri(img)}' alt=''><figcaption>{_esc(caption)}</figcaption></figure>"
            )

    def png(path: Path, alt: str) -> str:
        return f"<img class=plot src='{_data_uri(path.read_bytes(), 'image/png')}' alt='{_esc(alt)}'>"

    name = model_card.get("name", model_card.get("arch", ""))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = " &middot; ".join(s for s in (_esc(name) if name else "", _esc(stamp)) if s)
    history_html = (
        png(curves_png, "training curves")
        + f"<details><summary>history table ({len(history)} rows)</summary><div class=scroll>{_history_table(history)}</div></details>"
        if history
        else "<p class=muted>no training history</p>"
    )
    worst_html = "<p class=muted>no misclassified samples</p>"
    if result.worst:
        gallery = f"<div class=gallery>{''.join(figures)}</div>" if figures else ""
        worst_html = (
            f"{gallery}<details{'' if figures else ' open'}><summary>table of the {len(result.worst)} "
            f"highest-loss errors</summary>{_worst_table(result)}</details>"
        )
    elif figures:
        worst_html = f"<div class=gallery>{''.join(figures)}</div>"

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1><p>{subtitle}</p></header>
<main>
<section id="summary"><h2>Final metrics</h2><div class=tiles>{_tiles(result, history)}</div></section>
<section id="model"><h2>Model</h2>{_model_card_html(model_card)}</section>
<section id="curves"><h2>Training curves</h2>{history_html}</section>
<section id="confusion"><h2>Confusion matrix</h2>
<p class=muted>Rows are true classes, columns predicted classes; each row is divided by its sample count.</p>
{png(cm_png, "confusion matrix")}{_confused_table(result)}</section>
<section id="per-class"><h2>Per-class precision, recall and F1</h2><div class=scroll>{_per_class_table(result.per_class)}</div></section>
<section id="worst"><h2>Worst misclassified samples</h2>{worst_html}</section>
</main></body></html>
"""
    return atomic_write(run_dir / "report.html", page, what="report")


def save_eval_artifacts(run_dir: str | os.PathLike, eval_result: EvalResult) -> dict[str, Path]:
    """Write ``eval.json`` (``EvalResult.to_dict``), ``confusion_matrix.csv`` and ``per_class.csv`` into
    ``run_dir``; returns their paths by name."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "eval": run_dir / "eval.json",
        "confusion_matrix": run_dir / "confusion_matrix.csv",
        "per_class": run_dir / "per_class.csv",
    }
    # atomic (a full disk leaves no 0-byte eval.json) and lossless (file names that are not UTF-8 survive)
    write_json(paths["eval"], eval_result.to_dict(), what="evaluation file")
    atomic_write(paths["confusion_matrix"], confusion_matrix_csv(eval_result.confusion, eval_result.class_names),
                 what="evaluation file")  # fmt: skip
    atomic_write(paths["per_class"], per_class_csv(eval_result.per_class), what="evaluation file")
    return paths


# ------------------------------------------------------------------------ building blocks for other pages
# (lightnets.evaluation.deployed_report builds the deployed-forms comparison from these, so both pages look alike)
CSS = _CSS
escape = _esc
data_uri = _data_uri
thumbnail_uri = _thumbnail_uri
per_class_table = _per_class_table
