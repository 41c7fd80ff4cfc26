"""int8 top-1 agreement with fp32, per on-device format, with the ImageNet ShuffleNetV2 1.0x weights on the
ants/bees photos (the issue's goal: >= 98 % for every format).

Calibration: the first ``--calib`` train photos (sorted paths, GIF placeholder skipped); measured on every
val photo.  Preprocessing as documented for the weights: RGB, shorter side 256, centre crop 224, ImageNet
mean / std.  Prints one JSON line per format (agreement, fp32 max |diff|, file sizes, seconds).

    python benchmarks/int8_agreement.py --formats tflite openvino --calib 32
"""

from __future__ import annotations

import argparse
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
from lightnets.deploy.runtimes import ExportRequest, get_format

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


def measure(name: str, model: torch.nn.Module, calib: torch.Tensor, val: torch.Tensor, out: Path) -> dict:
    fmt = get_format(name)
    with torch.no_grad():
        ref = model(val).numpy()
    row: dict = {"format": name, "calib": int(calib.shape[0]), "val": int(val.shape[0])}
    for quantize in (None, "int8") if fmt.supports_int8 else (None,):
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
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", nargs="+", default=["tflite", "openvino", "ncnn"])
    ap.add_argument("--calib", type=int, default=32, help="calibration photos from train/")
    args = ap.parse_args()
    model = lightnets.create_model("shufflenet_v2_x1_0", weights=str(WEIGHTS)).eval()
    calib = images(DATA / "hymenoptera_data" / "train", args.calib)
    val = images(DATA / "hymenoptera_data" / "val")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.formats:
            print(json.dumps(measure(name, model, calib, val, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
