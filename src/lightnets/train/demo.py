"""The main job (``lightnets demo``): a real training run on a dataset that ships inside a dependency, with no
download and no manual step.

scikit-learn bundles the UCI handwritten digits (1,797 grayscale 8x8 images, 10 classes).  The demo trains a
small ShuffleNetV2 0.5x on them at 16 px with the small-input stem, evaluates the best checkpoint on the held-out
split, writes a few digits as PNG files and predicts them from the checkpoint alone (as a user would with
``lightnets predict``), and ends with the run's ``report.html``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from ..evaluation.predict import annotate_predictions, predict
from ..util.atomic import save_image
from .run import RunResult, TrainConfig, train

DEMO_MODEL = "shufflenet_v2_x0_5"
DEMO_EPOCHS = 20


def write_sample_images(run: RunResult, out_dir: Path, count: int = 6) -> list[Path]:
    """Save ``count`` held-out digits as PNG files at their native 8x8 resolution (the checkpoint's
    preprocessing resizes them exactly as in training; the annotated copies are enlarged for people)."""
    from ..data import load_digits_dataset, load_split

    data = load_digits_dataset()
    _, val_idx = load_split(run.run_dir / "split.json", num_samples=len(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in list(val_idx)[:count]:
        img = Image.fromarray(data.images[int(i), 0].numpy(), mode="L")
        path = out_dir / f"digit_{int(i):04d}_true_{data.classes[int(data.labels[int(i)])]}.png"
        paths.append(save_image(img, path, what="sample image"))
    return paths


def run_demo(
    out: str | None = None,
    epochs: int | None = None,
    model: str | None = None,
    log_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, evaluate, predict and report; returns a summary dict."""
    cfg = TrainConfig(
        model=model or DEMO_MODEL,
        data="digits",
        out=out or str(Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"),
        epochs=epochs or DEMO_EPOCHS,
        batch_size=32,
        lr=0.05,
        input_size=16,
        small_input=True,
        val_fraction=0.2,
        workers=0,
    )
    log_fn(f"lightnets demo: training {cfg.model} on scikit-learn's digits for {cfg.epochs} epochs -> {cfg.out}")
    run = train(cfg, log_fn=log_fn)
    final = run.final.summary() if run.final else {}
    log_fn(f"best epoch {run.best_epoch}: held-out top-1 {final.get('top1', float('nan')):.4f} "
           f"({final.get('num_samples', 0)} images), macro F1 {final.get('macro_f1', float('nan')):.4f}")  # fmt: skip

    samples = write_sample_images(run, run.run_dir / "samples")
    preds = predict(run.run_dir, samples, topk=3)
    for p in preds.predictions:
        log_fn(f"predict {Path(p.path).name}: " + ", ".join(f"{c} {v:.1%}" for c, v in p.top))
    annotate_predictions(preds, run.run_dir / "samples_annotated")
    log_fn(f"report: {run.report}")
    return {**run.summary(), "predictions": [p.to_dict() for p in preds.predictions]}
