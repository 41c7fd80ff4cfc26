"""The "executorch" format module: .pte programs lowered to XNNPACK, fp32 parity and PT2E int8 in ExecuTorch's
own runtime, one model per family on real photos; ShuffleNetV2's channel split delegated (one subgraph)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lightnets
from lightnets.deploy import optimize
from lightnets.deploy.quant_fallback import quantizable_layers

pytest.importorskip("executorch")

from test_deploy import FAMILIES, one_thread, smallest_model_name, trained_like_model  # noqa: E402, F401

from helpers.runtime_checks import agreement, export_and_run, photos, relative_error  # noqa: E402


@pytest.mark.slow  # ~15-30 s per family (torch.export, lowering, PT2E calibration)
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_parity_and_int8(family: str, shared_data: Path, tmp_path: Path) -> None:
    model = trained_like_model(smallest_model_name(family), num_classes=10)
    calib, check = photos(shared_data)
    got, ref, path = export_and_run("executorch", model, tmp_path / "m.pte", None, check)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    meta = json.loads(Path(str(path) + ".json").read_text())
    if family == "shufflenet_v1":  # its padded average pools stay outside XNNPACK (see the module docstring)
        assert set(meta["undelegated_ops"]) - {"aten.avg_pool2d.out"} <= {o for o in meta["undelegated_ops"]
                                                                           if "alloc" in o}, meta  # fmt: skip
    else:
        assert meta["delegated_subgraphs"] == 1 and meta["classes"] == ["a"], meta  # the whole net in XNNPACK
    got8, _, path8 = export_and_run("executorch", model, tmp_path / "q.pte", calib, check, "int8")
    assert relative_error(got8, ref) <= 0.7, relative_error(got8, ref)  # see test_runtimes_onnx: random weights
    assert path8.stat().st_size < 0.8 * path.stat().st_size  # tiny models: scales and int32 biases weigh a lot


def test_channel_split_as_slices_is_the_same_function() -> None:
    from lightnets.deploy.runtimes.executorch import slice_channel_split

    model = trained_like_model("shufflenet_v2_x0_5", num_classes=10)
    sliced = optimize(model, channels_last=False)
    assert slice_channel_split(sliced) == 13  # stride-1 units of ShuffleNetV2 (3 + 7 + 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(sliced(x), optimize(model, channels_last=False)(x))


@pytest.mark.slow
def test_float_layers_stay_float(shared_data: Path, tmp_path: Path) -> None:
    model = trained_like_model(smallest_model_name("mobilenet_v2"), num_classes=10)
    layers = quantizable_layers(optimize(model, channels_last=False))
    calib, check = photos(shared_data)
    all8, ref, _ = export_and_run("executorch", model, tmp_path / "a.pte", calib, check, "int8")
    most, _, _ = export_and_run("executorch", model, tmp_path / "b.pte", calib, check, "int8", tuple(layers[:-2]))
    assert relative_error(most, ref) < relative_error(all8, ref) / 2  # only two layers left in int8


@pytest.mark.slow  # 224 px ImageNet model
def test_imagenet_shufflenet_int8_keeps_top1(shared_data: Path, tmp_path: Path) -> None:
    weights = shared_data / "weights" / "shufflenet_v2_x1_0_from_onnx_int8.pth"
    model = lightnets.create_model("shufflenet_v2_x1_0", weights=str(weights)).eval()
    calib, check = photos(shared_data, 224, calib=32)
    got8, ref, path = export_and_run("executorch", model, tmp_path / "q.pte", calib, check, "int8")
    assert agreement(got8, ref) >= 0.9
    assert path.stat().st_size <= 0.30 * 4 * sum(p.numel() for p in model.parameters())  # the size goal
    assert json.loads(Path(str(path) + ".json").read_text())["delegated_subgraphs"] == 1
