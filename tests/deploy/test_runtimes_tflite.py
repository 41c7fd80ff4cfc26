"""LiteRT (TFLite) format: fp32 parity with eager, int8 through litert-torch's PT2E quantizer with the concat
fix (strict capture: every torch.cat gets one shared scale), float_layers, metadata, the missing-package
error, and the ImageNet ShuffleNetV2 int8 agreement on the ants/bees photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightnets
from helpers.runtime_cases import (
    FAMILY_MODELS,
    METADATA,
    ants_bees,
    assert_missing_package_is_one_line,
    family_model,
    fp32_max_diff,
    int8_agreement,
    request,
    tiny,
)

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
from lightnets.deploy.runtimes import get_format  # noqa: E402
from lightnets.deploy.runtimes import tflite as tflite_module  # noqa: E402

FMT = get_format("tflite")


def test_fp32_parity_and_metadata(tmp_path):
    diff, scale = fp32_max_diff(FMT, tiny(), tmp_path / "m.tflite", 32)
    assert diff <= 1e-5 * max(1.0, scale)
    assert FMT.read_metadata(tmp_path / "m.tflite")["classes"] == METADATA["classes"]


def test_every_concat_is_quantized_with_one_shared_scale():
    """The 71 % bug: without strict capture the quantizer never saw torch.cat (no source_fn_stack)."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    model = lightnets.create_model("shufflenet_v2_x0_5", num_classes=10).eval()
    graph = torch.export.export(model, (torch.zeros(1, 3, 64, 64),), strict=True).module()
    quantizer = tflite_module._quantizer(())
    quantizer.annotate(quantizer.transform_for_annotation(graph))
    cats = [n for n in graph.graph.nodes if n.target == torch.ops.aten.cat.default]
    assert len(cats) == 16
    for cat in cats:
        note = cat.meta["quantization_annotation"]
        assert isinstance(note.output_qspec, SharedQuantizationSpec)
        assert all(isinstance(s, SharedQuantizationSpec) for s in list(note.input_qspec_map.values())[1:])


def test_int8_file_is_int8_and_close(tmp_path):
    model = tiny()
    path = FMT.export(request(model, tmp_path / "q.tflite", 32, quantize="int8", calib_n=16))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()
    got = FMT.load(path, 1)(x.numpy())
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()  # int8 noise, not a broken graph
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(path)).get_input_details()[0]["dtype"] == np.int8


def test_float_layers_stay_float(tmp_path):
    model = tiny()
    plain = FMT.export(request(model, tmp_path / "q.tflite", 32, quantize="int8"))
    kept = FMT.export(request(model, tmp_path / "f.tflite", 32, quantize="int8", float_layers=("fc",)))
    from ai_edge_litert.interpreter import Interpreter

    def fc_weight_dtypes(path):
        details = Interpreter(model_path=str(path)).get_tensor_details()
        return {d["dtype"] for d in details if tuple(d["shape"]) == (5, 8)}  # fc.weight: (classes, features)

    assert np.int8 in fc_weight_dtypes(plain)
    assert fc_weight_dtypes(kept) == {np.float32}


def test_missing_package_is_one_line(monkeypatch, tmp_path):
    assert_missing_package_is_one_line(monkeypatch, FMT, "litert_torch", "tflite", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fp32_parity_per_family(name, tmp_path):
    diff, scale = fp32_max_diff(FMT, family_model(name, 96), tmp_path / "m.tflite", 96)
    assert diff <= 1e-4 * max(1.0, scale)


@pytest.mark.slow
def test_shufflenet_v2_imagenet_int8_agreement(shared_data, tmp_path):
    """Measured 95.4 % (32 calibration photos) against 70 % before the concat fix; the issue's goal is 98 %,
    not reached by plain PTQ here (see the report): this guards the fix, with a margin for calibration noise."""
    model, calib, val = ants_bees(shared_data)
    assert int8_agreement(FMT, model, calib, val, tmp_path / "q.tflite") >= 0.93
