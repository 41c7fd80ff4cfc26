"""Shared cases for the on-device format tests (tflite, openvino, ncnn): small models with non-trivial batch
norm statistics, the ants/bees photos with the ImageNet ShuffleNetV2 weights, and the checks themselves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

import lightnets
from lightnets.data.transforms import eval_transform, make_preprocessing
from lightnets.deploy.runtimes import ExportRequest

WEIGHTS = "weights/shufflenet_v2_x1_0_from_onnx_int8.pth"
#: one registered model of each family, for the slow per-family parity tests
FAMILY_MODELS = ["mobilenet_v1_x0_25", "mobilenet_v2_x0_35", "mobilenet_v3_small", "mobilenet_v3_large",
                 "shufflenet_v1_g3_x0_25", "shufflenet_v2_x0_5"]  # fmt: skip
METADATA = {"arch": "test", "classes": ["a", "b"], "preprocessing": {"mean": [0.5], "std": [0.5]}}


class TinyNet(nn.Module):
    """Conv-BN-ReLU, a ShuffleNetV2-like split / concat, pooling and a Linear: every op kind the formats
    must carry, small enough to convert in seconds."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        keep, x2 = x.chunk(2, dim=1)
        x = torch.cat((keep, self.branch(x2)), dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


def trained_like(model: nn.Module, size: int, seed: int = 0) -> nn.Module:
    """Random weights with non-trivial batch-norm statistics and logits of order 1, in eval mode."""
    torch.manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.momentum = None
            m.reset_running_stats()
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 1 / math.sqrt(m.in_features))
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, size, size) * 1.5 + 0.3)
    return model.eval()


def tiny(size: int = 32) -> nn.Module:
    return trained_like(TinyNet(), size)


def family_model(name: str, size: int) -> nn.Module:
    return trained_like(lightnets.create_model(name, num_classes=10), size)


def request(model: nn.Module, out: Path, size: int, quantize: str | None = None, calib_n: int = 8,
            float_layers: tuple[str, ...] = ()) -> ExportRequest:  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    calib = torch.randn(calib_n, 3, size, size, generator=gen) if quantize else None
    return ExportRequest(model=model, example=torch.zeros(1, 3, size, size), out_path=out, metadata=dict(METADATA),
                         quantize=quantize, calib=calib, float_layers=float_layers)  # fmt: skip


def fp32_max_diff(fmt, model: nn.Module, out: Path, size: int, n: int = 3) -> tuple[float, float]:
    """Export fp32, run ``n`` random images in the format's runtime: (max |diff| to eager, max |logit|)."""
    path = fmt.export(request(model, out, size))
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()
    got = fmt.load(path, 1)(x.numpy())
    assert got.shape == ref.shape and got.dtype == np.float32
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())


def _images(folder: Path, limit: int | None = None) -> torch.Tensor:
    tf = eval_transform(make_preprocessing("imagenet", 224))
    xs = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() == ".gif":  # imageNotFound.gif is a placeholder, not a photo
            continue
        try:
            with Image.open(p) as im:
                xs.append(tf(im))
        except (UnidentifiedImageError, OSError):
            continue
        if limit and len(xs) >= limit:
            break
    return torch.stack(xs)


def ants_bees(shared: Path, calib_n: int = 32) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The ImageNet ShuffleNetV2 1.0x, ``calib_n`` train photos for calibration, all val photos."""
    weights, data = shared / WEIGHTS, shared / "hymenoptera_data"
    if not weights.is_file() or not data.is_dir():
        pytest.skip(f"needs {weights} and {data}")
    model = lightnets.create_model("shufflenet_v2_x1_0", weights=str(weights)).eval()
    return model, _images(data / "train", calib_n), _images(data / "val")


def int8_agreement(fmt, model: nn.Module, calib: torch.Tensor, val: torch.Tensor, out: Path) -> float:
    """Top-1 agreement of the format's int8 file with eager fp32 on ``val``."""
    req = ExportRequest(model=model, example=val[:1], out_path=out, metadata=dict(METADATA), quantize="int8",
                        calib=calib)  # fmt: skip
    got = fmt.load(fmt.export(req), 2)(val.numpy())
    with torch.no_grad():
        ref = model(val).numpy()
    return float((got.argmax(1) == ref.argmax(1)).mean())


def assert_missing_package_is_one_line(monkeypatch, fmt, module: str, extra: str, tmp_path: Path) -> None:
    """With ``module`` unimportable, export fails with one line naming the extra (no traceback)."""
    from lightnets.deploy.onnx_export import MissingPackageError

    monkeypatch.setitem(__import__("sys").modules, module, None)
    with pytest.raises(MissingPackageError) as err:
        fmt.export(request(tiny(), tmp_path / ("m" + fmt.suffix), 32))
    message = str(err.value)
    assert "\n" not in message and f"lightnets[{extra}]" in message
