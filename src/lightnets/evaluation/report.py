"""A self-contained HTML report of a training run, and the evaluation files saved beside it.

The numbers come from ``lightnets.evaluation.metrics``; the plots from ``plots``, the page's pieces from
``html_parts``.  ``report.html`` is a single file: images are inlined as base64 ``data:`` URIs and the CSS is
inline, so it can be mailed or archived without its run directory.  Every user-provided string (class names,
captions, model card values, file paths) is HTML-escaped.

The plotting functions, ``annotate_image`` and the page building blocks (``CSS``, ``escape``, ``data_uri``,
``thumbnail_uri``, ``per_class_table``) stay importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.wordnet import readable_result
from ..util.atomic import atomic_write, write_json
from .annotate import annotate_image
from .html_parts import (
    CSS,
    _confused_table,
    _data_uri,
    _esc,
    _history_table,
    _load_image,
    _model_card_html,
    _per_class_table,
    _thumbnail_uri,
    _tiles,
    _worst_table,
    data_uri,
    escape,
    per_class_table,
    thumbnail_uri,
)
from .metrics import EvalResult, confusion_matrix_csv, per_class_csv
from .plots import PathOrFile, plot_confusion_matrix, plot_curves

__all__ = [
    "CSS",
    "PathOrFile",
    "annotate_image",
    "data_uri",
    "escape",
    "per_class_table",
    "plot_confusion_matrix",
    "plot_curves",
    "save_eval_artifacts",
    "thumbnail_uri",
    "write_report",
]

Thumbnails = Sequence[tuple[Image.Image | str | os.PathLike, str]]


def _png_img(path: Path, alt: str) -> str:
    return f"<img class=plot src='{_data_uri(path.read_bytes(), 'image/png')}' alt='{_esc(alt)}'>"


def _figures(thumbnails: Thumbnails | None, result: EvalResult) -> list[str]:
    """``<figure>`` tags of the thumbnails; by default the worst errors' own files (missing ones skipped)."""
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
    return figures


def _history_html(history: Sequence[Mapping[str, Any]], curves_png: Path) -> str:
    if not history:
        return "<p class=muted>no training history</p>"
    return (
        _png_img(curves_png, "training curves")
        + f"<details><summary>history table ({len(history)} rows)</summary><div class=scroll>{_history_table(history)}</div></details>"
    )


def _worst_html(result: EvalResult, figures: Sequence[str]) -> str:
    if result.worst:
        gallery = f"<div class=gallery>{''.join(figures)}</div>" if figures else ""
        return (
            f"{gallery}<details{'' if figures else ' open'}><summary>table of the {len(result.worst)} "
            f"highest-loss errors</summary>{_worst_table(result)}</details>"
        )
    if figures:
        return f"<div class=gallery>{''.join(figures)}</div>"
    return "<p class=muted>no misclassified samples</p>"


def _subtitle(model_card: Mapping[str, Any]) -> str:
    name = model_card.get("name", model_card.get("arch", ""))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return " &middot; ".join(s for s in (_esc(name) if name else "", _esc(stamp)) if s)


def write_report(
    run_dir: str | os.PathLike,
    *,
    model_card: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    eval_result: EvalResult,
    thumbnails: Thumbnails | None = None,
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

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1><p>{_subtitle(model_card)}</p></header>
<main>
<section id="summary"><h2>Final metrics</h2><div class=tiles>{_tiles(result, history)}</div></section>
<section id="model"><h2>Model</h2>{_model_card_html(model_card)}</section>
<section id="curves"><h2>Training curves</h2>{_history_html(history, curves_png)}</section>
<section id="confusion"><h2>Confusion matrix</h2>
<p class=muted>Rows are true classes, columns predicted classes; each row is divided by its sample count.</p>
{_png_img(cm_png, "confusion matrix")}{_confused_table(result)}</section>
<section id="per-class"><h2>Per-class precision, recall and F1</h2><div class=scroll>{_per_class_table(result.per_class)}</div></section>
<section id="worst"><h2>Worst misclassified samples</h2>{_worst_html(result, _figures(thumbnails, result))}</section>
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
