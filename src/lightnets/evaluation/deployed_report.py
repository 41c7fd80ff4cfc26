"""Files of a deployed-model evaluation: the evaluation directory of one form, and the comparison page.

``write_eval_dir`` writes what ``lightnets eval --out`` writes for a checkpoint or an exported file: eval.json,
confusion_matrix.csv / .png, per_class.csv and report.html (``lightnets.evaluation.report``).  ``write_comparison``
writes ``compare.json`` and ``compare.html``: one plain HTML file, CSS inline and every image (confusion
matrices, thumbnails of the flipped images) a ``data:`` URI, so it can be mailed or archived on its own.
The page uses the building blocks of ``lightnets.evaluation.report`` so both pages look alike.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from ..deploy.runtimes import atomic_write
from .deployed import Comparison, FormEval
from .html_parts import CSS, data_uri, escape, per_class_table, thumbnail_uri
from .plots import plot_confusion_matrix

__all__ = ["comparison_html", "sample_image", "write_comparison", "write_eval_dir"]

GALLERY_LIMIT = 48  # flipped images shown as thumbnails per form (the table lists them all up to TABLE_LIMIT)
TABLE_LIMIT = 2000


def sample_image(ds: Any, index: int, path: str | None = None) -> Image.Image | None:
    """The image of sample ``index``: read from its file, or from the in-memory dataset's uint8 tensor."""
    if path:
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
        except (OSError, ValueError):
            return None
    images = getattr(ds, "images", None)
    if images is None:
        return None
    arr = images[index].permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def write_eval_dir(out: str | os.PathLike, form: FormEval, title: str | None = None) -> dict[str, Path]:
    """eval.json, confusion_matrix.csv / .png, per_class.csv and report.html of one evaluated form in ``out``."""
    from .report import save_eval_artifacts, write_report

    out = Path(out)
    files = save_eval_artifacts(out, form.result)
    thumbs = []
    for m in form.result.worst[:12]:
        img = sample_image(form.dataset, m.index, m.path)
        if img is not None:
            thumbs.append((img, m.describe(form.result.class_names)))
    card = {"name": form.name, "format": form.format, "quantize": form.quantize or "fp32",
            "file_bytes": form.num_bytes, "data": f"{form.data} ({form.split})",
            **{k: form.metadata[k] for k in ("arch", "kwargs", "preprocessing") if k in form.metadata}}  # fmt: skip
    files["report"] = write_report(out, model_card=card, history=[], eval_result=form.result, thumbnails=thumbs,
                                   title=title or f"lightnets evaluation of {form.name}")  # fmt: skip
    files["confusion_matrix_png"] = out / "confusion_matrix.png"
    return files


# ------------------------------------------------------------------------------------------------ the page
def _png_uri(form: FormEval) -> str:
    buf = io.BytesIO()
    plot_confusion_matrix(form.result.confusion, form.result.class_names, buf, normalize=True,
                          title=f"{form.name} ({form.format}{', ' + form.quantize if form.quantize else ''})")  # fmt: skip
    return data_uri(buf.getvalue(), "image/png")


def _fmt(x: float | None, spec: str, none: str = "&ndash;") -> str:
    return none if x is None else f"{x:{spec}}"


def _summary_table(cmp: Comparison) -> str:
    head = ("<tr><th>form</th><th>format</th><th>weights</th><th>size (MB)</th><th>latency, batch 1 (ms)</th>"
            "<th>top-1</th><th>top-5</th><th>macro F1</th><th>agreement with checkpoint</th><th>flips</th>"
            "<th>max |&Delta; logit|</th></tr>")  # fmt: skip
    rows = []
    for f in cmp.forms:
        lat = _fmt(f.latency_ms, ".2f") + (f" <span class=muted>({f.latency_iqr_ms[0]:.2f}&ndash;"
                                            f"{f.latency_iqr_ms[1]:.2f})</span>" if f.latency_iqr_ms else "")  # fmt: skip
        is_ref = f.name not in cmp.flips
        agree = "reference" if is_ref else f"{100 * cmp.agreement(f.name):.2f}%"
        flips = "" if is_ref else str(len(cmp.flips[f.name]))
        diff = "" if is_ref else f"{cmp.max_abs_diff[f.name]:.3g}"
        rows.append(f"<tr><td class=name>{escape(f.name)}</td><td>{escape(f.format)}</td>"
                    f"<td>{escape(f.quantize or 'fp32')}</td><td>{f.num_bytes / 1e6:.3f}</td><td>{lat}</td>"
                    f"<td>{100 * f.result.top1:.2f}%</td><td>{100 * f.result.top5:.2f}%</td>"
                    f"<td>{f.result.average('macro')['f1']:.4f}</td><td>{agree}</td><td>{flips}</td>"
                    f"<td>{diff}</td></tr>")  # fmt: skip
    return f"<table class=grid><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _f1_table(cmp: Comparison) -> str:
    head = "<tr><th>class</th>" + "".join(f"<th>{escape(f.name)}</th>" for f in cmp.forms) + "<th>support</th></tr>"
    per_form = [{r["class"]: r for r in f.result.per_class if r["kind"] == "class"} for f in cmp.forms]
    rows = []
    for name in cmp.classes:
        ref = per_form[0][name]["f1"]
        cells = "".join(f"<td{' class=changed' if abs(p[name]['f1'] - ref) > 1e-12 else ''}>{p[name]['f1']:.4f}</td>"
                        for p in per_form)  # fmt: skip
        rows.append(f"<tr><td class=name>{escape(name)}</td>{cells}<td>{per_form[0][name]['support']}</td></tr>")
    return f"<table class=grid><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _flip_section(cmp: Comparison, form: FormEval) -> str:
    flips, names = cmp.flips[form.name], cmp.classes
    if not flips:
        return f"<h3>{escape(form.name)}</h3><p class=muted>no prediction differs from the checkpoint's</p>"
    figures = []
    for fl in flips[:GALLERY_LIMIT]:
        img = sample_image(cmp.forms[0].dataset, fl.index, fl.path)
        if img is None:
            continue
        caption = (f"true: {escape(names[fl.true])} &middot; checkpoint: {escape(names[fl.checkpoint_pred])} "
                   f"({100 * fl.checkpoint_conf:.1f}%) &rarr; {escape(names[fl.deployed_pred])} "
                   f"({100 * fl.deployed_conf:.1f}%) &middot; {fl.effect}")  # fmt: skip
        figures.append(f"<figure><img src='{thumbnail_uri(img)}' alt='sample {fl.index}'>"
                       f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    body = "".join(
        f"<tr><td>{fl.index}</td><td class=name>{escape(names[fl.true])}</td>"
        f"<td class=name>{escape(names[fl.checkpoint_pred])}</td><td>{100 * fl.checkpoint_conf:.1f}%</td>"
        f"<td class=name>{escape(names[fl.deployed_pred])}</td><td>{100 * fl.deployed_conf:.1f}%</td>"
        f"<td class=name>{fl.effect}</td><td class=path>{escape(fl.path or '')}</td></tr>"
        for fl in flips[:TABLE_LIMIT]
    )
    head = ("<tr><th>sample</th><th>true</th><th>checkpoint</th><th>confidence</th><th>this file</th>"
            "<th>confidence</th><th>effect</th><th>path</th></tr>")  # fmt: skip
    broke = sum(f.effect == "broke" for f in flips)
    fixed = sum(f.effect == "fixed" for f in flips)
    return (f"<h3>{escape(form.name)}: {len(flips)} changed ({broke} now wrong, {fixed} now right)</h3>"
            f"<div class=gallery>{''.join(figures)}</div><details><summary>table of the {min(len(flips), TABLE_LIMIT)} "
            f"changed predictions</summary><div class=scroll><table class=grid><thead>{head}</thead>"
            f"<tbody>{body}</tbody></table></div></details>")  # fmt: skip


def comparison_html(cmp: Comparison, title: str = "lightnets: the checkpoint and its deployed forms") -> str:
    """The comparison page (see the module docstring) as one HTML string."""
    ref = cmp.forms[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = ref.metadata
    subtitle = (f"{escape(meta.get('arch', ''))} &middot; {escape(ref.data)} ({escape(ref.split)}, "
                f"{ref.result.num_samples} images) &middot; {escape(stamp)}")  # fmt: skip
    matrices = "".join(f"<figure><img class=plot src='{_png_uri(f)}' alt='confusion matrix of {escape(f.name)}'>"
                       f"<figcaption>{escape(f.name)}</figcaption></figure>" for f in cmp.forms)  # fmt: skip
    flips = "".join(_flip_section(cmp, f) for f in cmp.forms[1:])
    threads = "as the runtimes choose" if cmp.threads is None else str(cmp.threads)
    per_class = "".join(f"<details><summary>precision / recall / F1 of {escape(f.name)}</summary>"
                        f"{per_class_table(f.result.per_class)}</details>" for f in cmp.forms)  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}
.matrices{{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}}
td.changed{{background:#fff3d6}}</style></head>
<body>
<header><h1>{escape(title)}</h1><p>{subtitle}</p></header>
<main>
<section id="summary"><h2>Forms</h2>{_summary_table(cmp)}
<p class=muted>Latency: median of batch-1 calls with random input, the forms timed in turns in the same process
(threads: {escape(threads)}); the range is the interquartile range. Size: the model files (checkpoint: the
.pt file). Max |&Delta; logit| is against the checkpoint's logits (largest checkpoint logit: {cmp.logit_scale:.3g}).</p>
</section>
<section id="f1"><h2>Per-class F1</h2><p class=muted>Cells that differ from the checkpoint are marked.</p>
<div class=scroll>{_f1_table(cmp)}</div>{per_class}</section>
<section id="confusion"><h2>Confusion matrices</h2><p class=muted>Rows are true classes, columns predicted
classes; each row is divided by its sample count.</p><div class=matrices>{matrices}</div></section>
<section id="flips"><h2>Predictions that changed</h2>{flips or "<p class=muted>no deployed form</p>"}</section>
</main></body></html>
"""


def write_comparison(out: str | os.PathLike, cmp: Comparison, title: str | None = None) -> dict[str, Path]:
    """``compare.json`` (``Comparison.to_dict``) and ``compare.html`` in ``out``, each written atomically."""
    out = Path(out)
    page = comparison_html(cmp) if title is None else comparison_html(cmp, title)
    return {"json": atomic_write(out / "compare.json", json.dumps(cmp.to_dict(), indent=2, ensure_ascii=False) + "\n"),
            "html": atomic_write(out / "compare.html", page)}  # fmt: skip


def summary_lines(cmp: Comparison) -> Sequence[str]:
    """The comparison as printed lines (the CLI's table)."""
    lines = [f"{'form':<32} {'format':<11} {'weights':<7} {'MB':>8} {'ms (b=1)':>9} {'top-1':>7} {'macro F1':>8} "
             f"{'agree':>7} {'flips':>6} {'max|dlogit|':>11}"]  # fmt: skip
    for f in cmp.forms:
        ref = f.name not in cmp.flips
        lines.append(f"{f.name[:32]:<32} {f.format:<11} {f.quantize or 'fp32':<7} {f.num_bytes / 1e6:>8.3f} "
                     f"{_fmt(f.latency_ms, '.2f', '-'):>9} {100 * f.result.top1:>6.2f}% "
                     f"{f.result.average('macro')['f1']:>8.4f} "
                     f"{'ref' if ref else f'{100 * cmp.agreement(f.name):.2f}%':>7} "
                     f"{'' if ref else len(cmp.flips[f.name]):>6} "
                     f"{'' if ref else f'{cmp.max_abs_diff[f.name]:.3g}':>11}")  # fmt: skip
    for name, flips in cmp.flips.items():
        for fl in flips[:10]:
            n = cmp.classes
            lines.append(f"  {name}: {fl.path or '#' + str(fl.index)}: true {n[fl.true]}, checkpoint "
                         f"{n[fl.checkpoint_pred]} ({100 * fl.checkpoint_conf:.1f}%) -> {n[fl.deployed_pred]} "
                         f"({100 * fl.deployed_conf:.1f}%)")  # fmt: skip
        if len(flips) > 10:
            lines.append(f"  {name}: ... {len(flips) - 10} more changed predictions (compare.json)")
    return lines
