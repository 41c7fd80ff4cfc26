"""lightnets.deploy.export (the core above the format modules): sources, images, checks, report, fallback choice,
errors; and `lightnets export` / `predict FILE` through the CLI.  Fast: tiny models, small inputs, ONNX only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from lightnets import cli, deploy
from lightnets.data.transforms import make_preprocessing
from lightnets.deploy.quant_fallback import layer_sensitivity, quantizable_layers, search_float_layers
from lightnets.deploy.runtimes import FORMATS, get_format
from lightnets.deploy.to_device import ExportCheckError, resolve_source
from lightnets.train.checkpoint import save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_deploy import one_thread, trained_like_model  # noqa: E402, F401

SIZE = 32
ARCH = "mobilenet_v2_x0_35" if "mobilenet_v2_x0_35" in lightnets.list_models() else "mobilenet_v2"
CLASSES = ["ant", "bee", "cat", "dog"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 24 small random photos in two sub-folders (any layout is fine for calibration)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(24):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = trained_like_model(ARCH, num_classes=4, seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, arch=ARCH, kwargs={"num_classes": 4}, classes=CLASSES,
                    preprocessing=make_preprocessing("imagenet", SIZE))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as `lightnets train` leaves it (checkpoint, config.json), on scikit-learn's digits."""
    pytest.importorskip("sklearn")
    run = tmp_path_factory.mktemp("run")
    kwargs = {"num_classes": 10, "in_chans": 1, "small_input": True}
    torch.manual_seed(0)
    model = lightnets.create_model(ARCH, **kwargs).eval()
    save_checkpoint(run / "best.pt", model, arch=ARCH, kwargs=kwargs, classes=[str(i) for i in range(10)],
                    preprocessing=make_preprocessing("small", 16, in_chans=1))  # fmt: skip
    (run / "config.json").write_text(json.dumps({"config": {"data": "digits", "val_fraction": 0.1, "seed": 0}}))
    return run


def test_registered_name_with_weights_loads_them(tmp_path: Path) -> None:
    torch.manual_seed(5)
    state = lightnets.create_model(ARCH).state_dict()
    torch.save(state, tmp_path / "w.pth")
    src = resolve_source(ARCH, tmp_path / "w.pth", input_size=SIZE)
    assert all(torch.equal(v, state[k]) for k, v in src.model.state_dict().items())
    assert src.input_shape == (1, 3, SIZE, SIZE) and src.run_dir is None
    prep = src.metadata["preprocessing"]
    assert prep["input_size"] == [SIZE, SIZE] and prep["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert len(src.metadata["classes"]) == 1000
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resolve_source(ARCH, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="unknown model"):
        resolve_source("mobilenet_v9")


def test_checkpoint_and_run_sources(checkpoint: Path, digits_run: Path) -> None:
    src = resolve_source(checkpoint)
    assert src.metadata["classes"] == CLASSES and src.run_dir is None  # no config.json beside it
    with pytest.raises(ValueError, match="--weights goes with a registered"):
        resolve_source(checkpoint, weights="w.pth")
    run = resolve_source(digits_run)
    assert run.run_dir == digits_run and run.input_shape == (1, 1, 16, 16)


def test_fp32_export_metadata_report_and_predict(checkpoint: Path, images: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "m.onnx"
    report = deploy.export(checkpoint, "onnx", calib=images, output=out, latency_s=0.05, calib_images=8)
    assert report.path == str(out) and out.is_file() and report.num_bytes == out.stat().st_size
    assert report.num_check_images == 16 and report.max_abs_diff <= report.parity_atol <= 1e-3
    assert report.latency_ms > 0 and report.quantize is None and report.agreement is None
    saved = json.loads((tmp_path / "m.onnx.report.json").read_text())
    assert saved["max_abs_diff"] == report.max_abs_diff and saved["metadata"]["classes"] == CLASSES
    meta = get_format("onnx").read_metadata(out)  # the file describes itself: classes and preprocessing
    assert meta["classes"] == CLASSES and meta["preprocessing"]["input_size"] == [SIZE, SIZE]
    assert meta["preprocessing"]["mode"] == "RGB" and meta["preprocessing"]["value_scale"] == 255.0
    assert meta["input_shape"] == [1, 3, SIZE, SIZE] and meta["format"] == "onnx"
    runs = {}
    for source in (str(checkpoint), str(out)):  # the checkpoint in PyTorch, the file in onnxruntime
        assert cli.main(["predict", source, str(images / "c0"), "--format", "json", "--topk", "2"]) == 0
        runs[source] = json.loads(capsys.readouterr().out)["predictions"]
    for a, b in zip(runs[str(checkpoint)], runs[str(out)], strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-4


def test_int8_from_a_run_measures_accuracy_on_its_split(digits_run: Path, tmp_path: Path) -> None:
    report = deploy.export(digits_run, "onnx", quantize="int8", output=tmp_path / "d.onnx", latency_s=0,
                           max_drop=100.0)  # fmt: skip
    acc = report.accuracy
    assert acc is not None and 170 <= acc["images"] <= 190 and "val" in acc["split"]  # 10 % of 1797 digits
    assert acc["drop_points"] == pytest.approx(acc["fp32"] - acc["exported"])
    assert 0 <= report.agreement <= 1 and report.within_budget and report.fallback[0]["float_layers"] == 0
    assert get_format("onnx").read_metadata(tmp_path / "d.onnx")["quantize"] == "int8"


def test_cli_export_int8_prints_the_report(checkpoint: Path, images: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "q.onnx"
    code = cli.main(["export", str(checkpoint), "--quantize", "int8", "--calib", str(images), "-o", str(out),
                     "--max-drop", "100", "--latency-time", "0"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "int8 top-1 agreement with fp32" in text and "layers kept in float: none" in text
    assert out.is_file() and (tmp_path / "q.onnx.report.json").is_file()


def test_clear_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with pytest.raises(ValueError, match="unknown format 'coreml'"):
        get_format("coreml")
    with pytest.raises(ValueError, match="int8 needs calibration images"):
        deploy.export(checkpoint, "onnx", quantize="int8", output=tmp_path / "x.onnx")
    assert cli.main(["export", str(checkpoint), "--quantize", "int8", "--calib", str(tmp_path / "missing"),
                     "-o", str(tmp_path / "x.onnx")]) == 2  # fmt: skip
    assert "calibration data not found" in capsys.readouterr().err and "missing" not in str(list(tmp_path.iterdir()))
    # a format whose runtime package is missing: one line naming the extra
    import importlib

    real = importlib.import_module
    monkeypatch.delitem(FORMATS, "executorch", raising=False)

    def no_executorch(name: str, *a: object) -> object:
        if name == "lightnets.deploy.runtimes.executorch":
            raise ModuleNotFoundError("No module named 'executorch'", name="executorch")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", no_executorch)
    assert cli.main(["export", str(checkpoint), "--format", "executorch", "-o", str(tmp_path / "m.pte")]) == 2
    err = capsys.readouterr().err
    assert "'executorch'" in err and "lightnets[executorch]" in err and len(err.strip().splitlines()) == 1


def test_parity_failure_removes_the_file(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lightnets.deploy.to_device.PARITY_ATOL", 0.0)  # no file can pass a zero bound...
    monkeypatch.setattr("lightnets.deploy.to_device.measure", lambda *a: {"max_abs_diff": 1e-6, "logit_scale": 1.0,
                                                                        "agreement": 1.0, "drop_points": 0.0})  # fmt: skip
    with pytest.raises(ExportCheckError, match="was removed"):
        deploy.export(checkpoint, "onnx", output=tmp_path / "bad.onnx", latency_s=0)
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "bad.onnx.json").exists()


def test_fallback_search_keeps_the_fewest_layers_that_reach_the_budget() -> None:
    ranked = [f"l{i}" for i in range(20)]
    culprits = {"l0": 3.0, "l1": 2.0, "l2": 0.5, "l3": 0.4}  # points each layer costs when quantized
    calls: list[tuple[str, ...]] = []

    def measure(float_layers: tuple[str, ...]) -> float:
        calls.append(float_layers)
        return sum(v for k, v in culprits.items() if k not in float_layers)

    found = search_float_layers(ranked, measure, budget=1.0, first_drop=measure(()))
    assert found.within_budget and found.float_layers == ("l0", "l1") and found.drop == pytest.approx(0.9)
    assert [s["float_layers"] for s in found.steps] == [0, 1, 2]
    missed = search_float_layers(ranked, lambda layers: 5.0 - 0.1 * len(layers), budget=0.0, max_steps=4)
    assert not missed.within_budget and len(missed.float_layers) == 4 and len(missed.steps) == 4


def test_layer_sensitivity_ranks_a_layer_with_an_outlier_weight_first() -> None:
    model = trained_like_model(ARCH, num_classes=4)
    folded = deploy.optimize(model, channels_last=False)
    layers = quantizable_layers(folded)
    victim = layers[len(layers) // 2]
    with torch.no_grad():  # one huge weight: int8 per-channel steps become coarse for the rest of the channel
        w = dict(folded.named_modules())[victim].weight
        w.view(w.shape[0], -1)[:, 0] = w.abs().max() * 300
    ranking = layer_sensitivity(folded, torch.randn(8, 3, SIZE, SIZE))
    assert set(ranking) == set(layers) and next(iter(ranking)) == victim
    assert all(v >= 0 for v in ranking.values())


def test_bench_rows_for_the_int8_engine(capsys: pytest.CaptureFixture[str]) -> None:
    from lightnets.deploy.bench import benchmark

    assert "onnxruntime-int8" in deploy.available_engines() and "executorch-int8" in deploy.ENGINES
    rows = benchmark([ARCH], input_sizes=[SIZE], engines=["onnxruntime", "onnxruntime-int8"], warmup=1,
                     min_time_s=0.0, repeats=2, rounds=1)  # fmt: skip
    assert [r.engine for r in rows] == ["onnxruntime", "onnxruntime-int8"]
    assert all(r.latency_ms > 0 and r.repeats == 2 and r.input_h == SIZE for r in rows)
    runner = deploy.make_runner(lightnets.create_model(ARCH), "onnxruntime-int8", input_shape=(1, 3, SIZE, SIZE))
    assert runner.info["calibration"] == "random (latency only)" and runner(torch.randn(3, 3, SIZE, SIZE)).shape == (3, 1000)
    with pytest.raises(ValueError, match="for timing only"):
        deploy.load_runner("unused.pt", "onnxruntime-int8")


@pytest.mark.slow
def test_bench_and_predict_engine_executorch(checkpoint: Path, images: Path) -> None:
    pytest.importorskip("executorch")
    from lightnets.deploy.bench import benchmark

    rows = benchmark([ARCH], input_sizes=[SIZE], engines=["executorch", "executorch-int8"], warmup=1,
                     min_time_s=0.0, repeats=2, rounds=1)  # fmt: skip
    assert [r.engine for r in rows] == ["executorch", "executorch-int8"] and all(r.latency_ms > 0 for r in rows)
    runner, model, _ = deploy.load_runner(checkpoint, "executorch")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (runner(x) - model(x)).abs().max() <= 1e-4


@pytest.mark.slow
def test_executorch_int8_export_and_predict_file(checkpoint: Path, images: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    pytest.importorskip("executorch")
    out = tmp_path / "m.int8.pte"
    report = deploy.export(checkpoint, "executorch", quantize="int8", calib=images, output=out, latency_s=0.05,
                           calib_images=8, max_drop=100.0)  # fmt: skip
    assert report.format_info["delegated_subgraphs"] == 1 and report.latency_ms > 0 and 0 <= report.agreement <= 1
    assert json.loads((tmp_path / "m.int8.pte.json").read_text())["preprocessing"]["input_size"] == [SIZE, SIZE]
    assert cli.main(["predict", str(out), str(images / "c1"), "--format", "json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) == 12 and all(p["top"][0]["class"] in CLASSES for p in predictions)


def test_a_file_counts_only_its_own_formats_companions(tmp_path: Path) -> None:
    """model.int8.pte beside OpenVINO's model.int8.xml + model.int8.bin: the .bin is OpenVINO's, not the .pte's."""
    from lightnets.deploy.to_device import files_of

    sizes = {"model.int8.pte": 10, "model.int8.xml": 20, "model.int8.bin": 300, "model.ncnn.param": 4,
             "model.ncnn.bin": 5000, "model.int8.onnx": 7}  # fmt: skip
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"x" * n)
        (tmp_path / f"{name}.json").write_text("{}")
    assert files_of(tmp_path / "model.int8.pte") == ([tmp_path / "model.int8.pte", tmp_path / "model.int8.pte.json"], 10)
    assert files_of(tmp_path / "model.int8.onnx")[1] == 7
    assert files_of(tmp_path / "model.int8.xml")[1] == 320
    assert files_of(tmp_path / "model.ncnn.param")[1] == 5004
