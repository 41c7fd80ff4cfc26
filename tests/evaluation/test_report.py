"""Plots are valid PNGs of sensible size, annotation adds a readable banner, and report.html is a single
self-contained file with escaped names, the final numbers and images that decode."""

from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("matplotlib")

from lightnets.evaluation.metrics import (  # noqa: E402
    EvalResult,
    evaluate_logits,
    parse_confusion_matrix_csv,
    parse_per_class_csv,
)
from lightnets.evaluation.report import (  # noqa: E402
    annotate_image,
    plot_confusion_matrix,
    plot_curves,
    save_eval_artifacts,
    write_report,
)

HISTORY = [
    {
        "epoch": e,
        "train_loss": 2.0 / e,
        "train_acc": 0.1 * e,
        "val_loss": 2.2 / e,
        "val_top1": 0.09 * e,
        "lr": 0.1 / e,
    }
    for e in range(1, 6)
]


def _open_png(path_or_bytes) -> Image.Image:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    img = Image.open(src)
    assert img.format == "PNG"
    img.load()
    return img


def test_plot_curves_png(tmp_path):
    out = plot_curves(HISTORY, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    img = _open_png(out)
    assert 800 <= img.width <= 2500 and 250 <= img.height <= 800  # three panels side by side
    assert len(np.unique(np.asarray(img.convert("L")))) > 10  # not a blank canvas


def test_plot_curves_tolerates_missing_and_bad_values(tmp_path):
    ragged = [
        {"train_loss": 1.0},  # no epoch: counts as epoch 1
        {"epoch": 2, "train_loss": None, "val_top1": 55.0},  # percentages are accepted too
        {"epoch": 3, "train_loss": float("nan"), "val_loss": 0.5, "note": "text is ignored"},
        {},
    ]
    assert _open_png(plot_curves(ragged, tmp_path / "ragged.png")).width > 300
    only_loss = _open_png(plot_curves([{"epoch": 1, "train_loss": 1.0}], tmp_path / "one.png"))
    assert only_loss.width < 800  # one panel only
    buf = io.BytesIO()
    assert plot_curves([], buf) is None  # a file object works too; empty history gives a placeholder
    assert _open_png(buf.getvalue()).width > 100


@pytest.mark.parametrize("n", [2, 12, 100])
def test_plot_confusion_matrix_png(tmp_path, n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 5, (n, n)) + np.diag(rng.integers(10, 30, n))
    cm[0] = 0  # an empty row must not divide by zero
    names = [f"class {i} <&> $x$" for i in range(n)]  # "$" must not switch on mathtext
    names[-1] = "猫 " + "a very long class name " * 3
    img = _open_png(plot_confusion_matrix(cm, names, tmp_path / f"cm{n}.png"))
    assert 400 <= img.width <= 2200 and 400 <= img.height <= 2200
    if n == 100:
        assert img.width >= 1500  # grows with the class count so 100 labels stay readable
    if n == 2:
        _open_png(plot_confusion_matrix(cm, names, tmp_path / "counts.png", normalize=False))
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(cm, names[:-1], tmp_path / "bad.png")


@pytest.mark.parametrize(("size", "mode"), [((640, 480), "RGB"), ((28, 28), "L"), ((100, 60), "RGBA")])
def test_annotate_image(size, mode):
    original = Image.new(mode, size, 128 if mode == "L" else (90, 140, 60, 255)[: len(mode)])
    before = original.tobytes()
    out = annotate_image(original, "predicted: golden retriever (93.2%)")
    assert original.tobytes() == before  # the input is not modified
    assert out.mode == "RGB" and out.width >= size[0] and out.height > out.width * size[1] / size[0]
    if size[0] < 224:
        assert out.width >= 224  # tiny images are enlarged for a readable label
    banner_h = out.height - round(out.width * size[1] / size[0])
    banner = np.asarray(out.crop((0, 0, out.width, banner_h)).convert("L"))
    assert banner.min() < 50 and banner.max() > 200  # dark banner with light text on it
    assert 0.005 < (banner > 200).mean() < 0.5


def test_annotate_image_wraps_long_text():
    one = annotate_image(Image.new("RGB", (300, 200)), "short")
    long = annotate_image(Image.new("RGB", (300, 200)), "a very long label " * 6 + "\nsecond paragraph")
    assert long.height > one.height and long.width == one.width


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    names = ["<script>alert(1)</script>", "dog & cat", "café", "plain", 'quote"d', "x", "y"]
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 7, (120,), generator=g)
    logits = torch.randn(120, 7, generator=g)
    logits[torch.arange(120), targets] += 2.0
    paths = []
    for i in range(120):  # images on disk for the automatic thumbnails
        p = run_dir / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        if i % 5:  # every fifth file is missing and must be skipped
            Image.new("RGB", (40, 30), (i, 2 * i % 255, 90)).save(p)
        paths.append(str(p))
    result = evaluate_logits(logits, targets, names, paths=paths, worst_n=8)
    card = {
        "name": "mobilenet_v2 <tiny>",
        "params": 3_504_872,
        "macs": 300_774_272,
        "input_size": 224,
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color": "RGB"},
    }
    out = write_report(
        run_dir, model_card=card, history=HISTORY, eval_result=result, thumbnails=None, title="Run <1> & co"
    )
    return out, result


def test_report_is_self_contained(report):
    path, _ = report
    assert path.name == "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text and "url(" not in text
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text)
    assert refs and all(r.startswith("data:image/") for r in refs)


def test_report_escapes_names_and_shows_numbers(report):
    path, result = report
    text = path.read_text(encoding="utf-8")
    for name in result.class_names:
        assert html.escape(name) in text
    assert "<script>alert(1)</script>" not in text and "Run &lt;1&gt; &amp; co" in text
    assert "mobilenet_v2 &lt;tiny&gt;" in text
    assert f"{100 * result.top1:.2f}%" in text and f"{100 * result.top5:.2f}%" in text
    assert "3,504,872" in text and "300,774,272" in text and "0.485" in text
    assert f"{result.average('macro')['f1']:.3g}" in text
    for section in ("Final metrics", "Model", "Training curves", "Confusion matrix", "Per-class", "Worst"):
        assert section in text


def test_report_images_decode(report):
    path, result = report
    text = path.read_text(encoding="utf-8")
    uris = re.findall(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", text)
    shown = [m for m in result.worst if int(m.index) % 5]
    assert len(uris) == 2 + len(shown)  # curves, confusion matrix, one per existing thumbnail
    for mime, payload in uris:
        img = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        img.load()
        assert img.format == mime.split("/")[1].upper() and min(img.size) >= 64
    assert (path.parent / "curves.png").is_file() and (path.parent / "confusion_matrix.png").is_file()


def test_report_with_explicit_thumbnails_and_no_history(tmp_path):
    result = evaluate_logits(torch.eye(3) * 5, torch.tensor([0, 1, 2]))  # perfect: no errors
    thumbs = [(Image.new("L", (28, 28), 200), "digit <7>")]
    out = write_report(tmp_path, model_card={}, history=[], eval_result=result, thumbnails=thumbs, title="t")
    text = out.read_text(encoding="utf-8")
    assert "digit &lt;7&gt;" in text and "no training history" in text and "100.00%" in text
    assert "top-5" not in text  # meaningless with 3 classes, so not shown


def test_save_eval_artifacts(tmp_path, report):
    _, result = report
    paths = save_eval_artifacts(tmp_path, result)
    back = EvalResult.from_dict(json.loads(paths["eval"].read_text(encoding="utf-8")))
    np.testing.assert_array_equal(back.confusion, result.confusion)
    cm, names = parse_confusion_matrix_csv(paths["confusion_matrix"].read_text(encoding="utf-8"))
    assert names == result.class_names
    np.testing.assert_array_equal(cm, result.confusion)
    assert parse_per_class_csv(paths["per_class"].read_text(encoding="utf-8")) == result.per_class
