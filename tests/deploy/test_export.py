"""lightnets.deploy.onnx_export and `lightnets export` / `predict --engine`: ONNX that passes the checker and matches eager in
onnxruntime at several batch sizes, safetensors that round-trip, metadata that travels with the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lightnets import cli
from lightnets.data.transforms import make_preprocessing
from lightnets.deploy import onnx_export as export
from lightnets.train.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_deploy import FAMILIES, SIZE, one_thread, smallest_model_name, trained_like_model  # noqa: E402, F401

# Standard ONNX operators these models may use; anything else (ATen fallbacks, custom domains) is a failure.
STANDARD_OPS = {
    "Conv", "Relu", "Clip", "HardSwish", "HardSigmoid", "Mul", "Add", "Concat", "Reshape", "Transpose", "Slice",
    "Split", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Gemm", "MatMul",
}  # fmt: skip
SHUFFLE_OPS = {"Reshape", "Transpose"}


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_is_checked_and_matches_eager(family: str, tmp_path: Path) -> None:
    model = trained_like_model(smallest_model_name(family))
    path = tmp_path / f"{family}.onnx"
    report = export.export_onnx(model, path, input_shape=(1, 3, SIZE, SIZE))
    assert path.exists() and report.num_bytes == path.stat().st_size and report.opset == export.DEFAULT_OPSET
    assert report.checked_batch_sizes == (1, 3) and report.max_abs_diff <= 1e-4 and report.logit_scale > 0.1
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert "BatchNormalization" not in ops and "Dropout" not in ops  # folded / dropped
    if family.startswith("shufflenet"):
        assert SHUFFLE_OPS <= ops  # channel shuffle as Reshape -> Transpose -> Reshape
        assert not ops & {"Shape", "Gather"}  # shape arithmetic folded away
    if family == "mobilenet_v3":
        assert {"HardSwish", "HardSigmoid"} <= ops  # exported as the ONNX ops, not decomposed
    # dynamic batch: exported at batch 1, run at batch 4 straight from the file
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(_run(path, x) - ref).max() <= 1e-4


def test_export_refuses_bad_opset_and_a_graph_that_mixes_the_batch(tmp_path: Path) -> None:
    model = trained_like_model(smallest_model_name("mobilenet_v2"))
    with pytest.raises(ValueError, match="opset 13"):
        export.export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 3, SIZE, SIZE), opset=13)

    class MixesBatch(nn.Module):  # output (1, batch * 3): no symbolic batch axis can describe it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)).reshape(1, -1)

    with pytest.raises(export.ExportError):
        export.export_onnx(MixesBatch(), tmp_path / "bad.onnx", input_shape=(1, 3, 8, 8))
    assert not (tmp_path / "bad.onnx").exists()  # nothing half-checked is left behind


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = trained_like_model("shufflenet_v2_x0_5")
    prep = make_preprocessing("imagenet", SIZE)
    path = tmp_path / "w.safetensors"
    report = export.export_safetensors(model, path, arch="shufflenet_v2_x0_5", kwargs={"num_classes": 10},
                                       classes=[f"c{i}" for i in range(10)], preprocessing=prep)  # fmt: skip
    assert report.format == "safetensors" and path.exists()
    loaded, meta = export.load_safetensors(path)
    assert (
        meta["arch"] == "shufflenet_v2_x0_5" and meta["classes"][3] == "c3" and meta["preprocessing"] == prep
    )
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(export.ExportError, match="no lightnets metadata"):
        export.load_safetensors(plain)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = trained_like_model("mobilenet_v3_small", num_classes=4, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, arch="mobilenet_v3_small", kwargs={"num_classes": 4},
                    classes=["ant", "bee", "cat", "dog"], preprocessing=make_preprocessing("imagenet", SIZE))  # fmt: skip
    return path


def test_cli_export_registry_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v3.onnx"
    assert cli.main(["export", "mobilenet_v3_small", "--input-size", "48", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [1, 3, 48, 48] and report["max_abs_diff"] <= 1e-4
    assert export.read_metadata(out)["arch"] == "mobilenet_v3_small"
    assert cli.main(["export", "mobilenet_v9", "-o", str(out)]) == 2  # unknown name: one-line error
    assert "unknown model" in capsys.readouterr().err


def test_cli_export_checkpoint_carries_classes_and_preprocessing(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(checkpoint.parent), "--output", str(out)]) == 0  # a run directory
    assert "max abs diff" in capsys.readouterr().out
    meta = export.read_metadata(out)
    assert meta["classes"] == ["ant", "bee", "cat", "dog"] and meta["input_shape"] == [1, 3, SIZE, SIZE]
    assert meta["preprocessing"]["input_size"] == [SIZE, SIZE]
    assert json.loads(Path(str(out) + ".json").read_text())["classes"][0] == "ant"

    weights = tmp_path / "model.safetensors"
    assert cli.main(["export", str(checkpoint), "--format", "safetensors", "-o", str(weights)]) == 0
    model, meta = export.load_safetensors(weights)
    assert meta["classes"][-1] == "dog" and model.get_classifier().out_features == 4


def test_predict_with_onnxruntime_engine_gives_the_eager_classes(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)).save(images / f"{i}.png")
    results = {}
    for engine in ("eager", "onnxruntime"):
        assert cli.main(["predict", str(checkpoint), str(images), "--format", "json", "--topk", "2",
                         "--engine", engine]) == 0  # fmt: skip
        results[engine] = json.loads(capsys.readouterr().out)["predictions"]
    assert len(results["eager"]) == 5
    for eager, fast in zip(results["eager"], results["onnxruntime"], strict=True):
        assert [t["class"] for t in eager["top"]] == [t["class"] for t in fast["top"]]
        assert abs(eager["top"][0]["prob"] - fast["top"][0]["prob"]) < 1e-4


@pytest.mark.slow  # the torch.export-based exporter takes ~10 s per model here
def test_dynamo_exporter_also_passes_the_checks(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    model = trained_like_model(smallest_model_name("shufflenet_v2"))
    report = export.export_onnx(model, tmp_path / "d.onnx", input_shape=(1, 3, SIZE, SIZE), exporter="dynamo")
    assert (
        report.exporter == "dynamo" and report.max_abs_diff <= 1e-4 and report.checked_batch_sizes == (1, 3)
    )
    assert set(report.op_counts) <= STANDARD_OPS
