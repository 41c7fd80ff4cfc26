"""int8 top-1 agreement with fp32, per on-device format, with the ImageNet ShuffleNetV2 1.0x weights on the
ants/bees photos (the issue's goal: >= 98 % for every format).

Calibration: the first ``--calib`` train photos (sorted paths, GIF placeholder skipped); measured on every
val photo.  Preprocessing as documented for the weights: RGB, shorter side 256, centre crop 224, ImageNet
mean / std.  The model is exported in the form ``lightnets export`` gives the formats (``optimize``: batch
norm folded, dropout removed).  Prints one JSON line per format (agreement, fp32 max |diff|, file sizes,
seconds).

    python benchmarks/int8_agreement.py --formats tflite openvino --calib 64

``--select``: choosing quantizer settings without touching the val photos.  Calibrates on the first
``--calib`` train photos and measures agreement on the *remaining* train photos (held out from calibration;
agreement needs no labels); no fp32 file is written.  ``--variant`` (repeatable) sets module constants of the
format modules for one measurement, ``;``-separated ``FORMAT.NAME=JSON`` assignments; each variant runs the
formats it names (the defaults run every ``--formats``):

    python benchmarks/int8_agreement.py --select --formats onnx --variant default \
        --variant 'onnx.CALIBRATION="Entropy"' --variant 'onnx.EXTRA_OPTIONS={"ActivationSymmetric": true}'
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import lightnets
from lightnets.data.transforms import eval_transform, make_preprocessing
from lightnets.deploy.inference_form import optimize
from lightnets.deploy.runtimes import MODULES, ExportRequest, get_format

DATA = Path(os.environ.get("LIGHTNETS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WEIGHTS = DATA / "weights" / "shufflenet_v2_x1_0_from_onnx_int8.pth"


def images(folder: Path, limit: int | None = None) -> torch.Tensor:
    tf = eval_transform(make_preprocessing("imagenet", 224))
    xs = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() == ".gif":
            continue
        try:
            with Image.open(p) as im:
                xs.append(tf(im))
        except (UnidentifiedImageError, OSError):
            continue
        if limit and len(xs) >= limit:
            break
    return torch.stack(xs)


def parse_variant(spec: str) -> dict[tuple[str, str], object]:
    """``'onnx.CALIBRATION="Entropy";openvino.PRESET="mixed"'`` -> {("onnx", "CALIBRATION"): "Entropy", ...};
    "default" -> {} (the modules as they are)."""
    out: dict[tuple[str, str], object] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        if part == "default":
            continue
        target, sep, value = part.partition("=")
        fmt, _, name = target.partition(".")
        if not sep or fmt not in MODULES or not name:
            raise SystemExit(f"bad --variant assignment {part!r}: expected FORMAT.NAME=JSON, FORMAT in {sorted(MODULES)}")
        out[(fmt, name)] = json.loads(value)
    return out


@contextlib.contextmanager
def applied(variant: dict[tuple[str, str], object]):
    """Set the variant's module constants for the duration of the block, then restore them."""
    saved = []
    for (fmt, name), value in variant.items():
        get_format(fmt)
        module = importlib.import_module(f"lightnets.deploy.runtimes.{MODULES[fmt]}")
        if not hasattr(module, name):
            raise SystemExit(f"bad --variant: {module.__name__} has no setting {name}")
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def measure(name: str, model: torch.nn.Module, calib: torch.Tensor, val: torch.Tensor, out: Path,
            fp32: bool = True) -> dict:  # fmt: skip
    fmt = get_format(name)
    with torch.no_grad():
        ref = model(val).numpy()
    row: dict = {"format": name, "calib": int(calib.shape[0]), "measured_on": int(val.shape[0])}
    for quantize in ((None,) if fp32 else ()) + (("int8",) if fmt.supports_int8 else ()):
        start = time.perf_counter()
        req = ExportRequest(model=model, example=val[:1], out_path=out / f"{name}_{quantize}{fmt.suffix}",
                            metadata={"arch": "shufflenet_v2_x1_0"}, quantize=quantize, calib=calib)  # fmt: skip
        path = fmt.export(req)
        got = fmt.load(path, 2)(val.numpy())
        key = quantize or "fp32"
        row[f"{key}_bytes"] = path.stat().st_size + (path.with_suffix(".bin").stat().st_size
                                                      if path.with_suffix(".bin").is_file() else 0)  # fmt: skip
        row[f"{key}_seconds"] = round(time.perf_counter() - start, 1)
        if quantize is None:
            row["fp32_max_abs_diff"] = float(np.abs(got - ref).max())
        else:
            row["int8_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
            # a less noisy companion to agreement: mean over images of |int8 - fp32| / |fp32| (L2 of the logits)
            row["int8_logit_error"] = float((np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)).mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", nargs="+", default=["tflite", "openvino", "ncnn"])
    ap.add_argument("--calib", type=int, default=64, help="calibration photos from train/")
    ap.add_argument("--select", action="store_true", help="measure on the held-out train photos, not on val/")
    ap.add_argument("--variant", action="append", default=None, help="FORMAT.NAME=JSON[;...] or 'default'")
    args = ap.parse_args()
    model = optimize(lightnets.create_model("shufflenet_v2_x1_0", weights=str(WEIGHTS)), channels_last=False)
    if args.select:
        train = images(DATA / "hymenoptera_data" / "train")
        calib, measured, split = train[: args.calib], train[args.calib :], "train-heldout"
    else:
        calib = images(DATA / "hymenoptera_data" / "train", args.calib)
        measured, split = images(DATA / "hymenoptera_data" / "val"), "val"
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.variant or ["default"]:
            variant = parse_variant(spec)
            named = {fmt for fmt, _ in variant}
            with applied(variant):
                for name in [f for f in args.formats if not named or f in named]:
                    row = measure(name, model, calib, measured, Path(tmp), fp32=not args.select)
                    print(json.dumps({"variant": spec, "split": split, **row}), flush=True)


if __name__ == "__main__":
    main()
