"""ncnn format (pnnx conversion): fp32 parity with eager (fp16/bf16 options off, fp32 weights), sidecar
metadata, the clear refusal of int8 (the PyPI packages lack ncnn2table / ncnn2int8) and of a missing package."""

from __future__ import annotations

import pytest

from helpers.runtime_cases import (
    FAMILY_MODELS,
    METADATA,
    assert_missing_package_is_one_line,
    family_model,
    fp32_max_diff,
    request,
    tiny,
)

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")
from lightnets.deploy.runtimes import get_format  # noqa: E402

FMT = get_format("ncnn")


def test_fp32_parity_and_metadata(tmp_path):
    diff, scale = fp32_max_diff(FMT, tiny(), tmp_path / "m.ncnn.param", 32)
    assert diff <= 1e-5 * max(1.0, scale)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ncnn.bin", "m.ncnn.param", "m.ncnn.param.json"]
    assert FMT.read_metadata(tmp_path / "m.ncnn.param")["classes"] == METADATA["classes"]


def test_int8_is_refused_with_the_reason(tmp_path):
    assert FMT.supports_int8 is False
    with pytest.raises(ValueError, match="ncnn2int8"):
        FMT.export(request(tiny(), tmp_path / "q.ncnn.param", 32, quantize="int8"))
    assert not list(tmp_path.iterdir())


def test_bad_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"\.ncnn\.param"):
        FMT.export(request(tiny(), tmp_path / "m.param", 32))
    with pytest.raises(ValueError, match="not found"):
        FMT.load(tmp_path / "absent.ncnn.param", 1)


def test_missing_package_is_one_line(monkeypatch, tmp_path):
    assert_missing_package_is_one_line(monkeypatch, FMT, "pnnx", "ncnn", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fp32_parity_per_family(name, tmp_path):
    diff, scale = fp32_max_diff(FMT, family_model(name, 96), tmp_path / "m.ncnn.param", 96)
    assert diff <= 1e-4 * max(1.0, scale)
