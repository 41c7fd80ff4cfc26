"""The evaluation API the CLI is a shell over, fast: ``predict(..., engine=)`` and ``predict`` of an exported file
give the checkpoint's answers; ``evaluate_source(..., out=)`` evaluates a checkpoint or an exported file and writes
what ``lightnets eval --out`` writes; ``compare_source(..., out=)`` refuses a file first and writes the comparison.

A tiny random model (no training) on a small folder of generated photos; ONNX exported without checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data.transforms import make_preprocessing
from lightnets.evaluation.predict import Evaluation, compare_source, evaluate_source, predict
from lightnets.registry import create_model
from lightnets.train.checkpoint import save_checkpoint

ARCH, SIZE, CLASSES = "shufflenet_v2_x0_5", 32, ["cats", "dogs"]
EVAL_FILES = ("eval.json", "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "report.html")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint of a random 2-class model in a run directory and a labelled folder of 8 photos."""
    root = tmp_path_factory.mktemp("predict_api")
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASSES):
        (root / "data" / c).mkdir(parents=True)
        for i in range(4):
            img = rng.normal(120, 50, (36, 40, 3))
            img[..., k] += 50
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "data" / c / f"{i}.png")
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=2, small_input=True).eval()
    ckpt = save_checkpoint(root / "run" / "best.pt", model, arch=ARCH, kwargs={"num_classes": 2, "small_input": True},
                           classes=CLASSES, preprocessing=make_preprocessing("imagenet", SIZE))  # fmt: skip
    return {"root": root, "data": root / "data", "run": root / "run", "ckpt": ckpt}


@pytest.fixture(scope="module")
def onnx_file(setup: dict[str, Path]) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lightnets.deploy.onnx_export import export

    return Path(export(setup["ckpt"], setup["root"] / "m.onnx", check=False).path)


def _tops(result) -> list[tuple[str, str]]:
    return [(Path(p.path).name, p.top[0][0]) for p in result.predictions]


def _probs(result) -> np.ndarray:
    return np.array([[prob for _, prob in p.top] for p in result.predictions])


def test_predict_engine_runs_the_engines_runner(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine`` loads the checkpoint through ``deploy.load_runner`` and predicts with its runner (here one that
    swaps the two logits, so every top class flips)."""
    import lightnets.deploy

    real = lightnets.deploy.load_runner
    asked: list[tuple[str, str]] = []

    def swapped(source, engine):
        asked.append((str(source), engine))
        runner, model, ckpt = real(source, "eager")
        return (lambda x: runner(x).flip(1)), model, ckpt

    monkeypatch.setattr(lightnets.deploy, "load_runner", swapped)
    eager = predict(setup["ckpt"], [setup["data"]], topk=1)
    got = predict(setup["ckpt"], [setup["data"]], topk=1, engine="some_engine")
    assert asked == [(str(setup["ckpt"]), "some_engine")]
    flipped = {"cats": "dogs", "dogs": "cats"}
    assert _tops(got) == [(name, flipped[top]) for name, top in _tops(eager)]


@pytest.mark.slow  # the optimized engine traces and freezes the model with TorchScript (tens of seconds here)
def test_predict_engine_gives_the_eager_answers(setup: dict[str, Path]) -> None:
    eager = predict(setup["run"], [setup["data"]], topk=2)
    assert len(eager.predictions) == 8 and not eager.errors
    optimized = predict(setup["run"], [setup["data"]], topk=2, engine="optimized")
    assert _tops(optimized) == _tops(eager)
    np.testing.assert_allclose(_probs(optimized), _probs(eager), atol=1e-4)


def test_predict_unknown_engine_is_one_value_error(setup: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no_such_engine"):
        predict(setup["ckpt"], [setup["data"]], engine="no_such_engine")


def test_predict_an_exported_file_in_its_runtime(setup: dict[str, Path], onnx_file: Path) -> None:
    eager = predict(setup["ckpt"], [setup["data"]], topk=2)
    # the file's own runtime and recorded preprocessing, whatever engine is asked for
    for engine in ("eager", "optimized"):
        got = predict(onnx_file, [setup["data"]], topk=2, engine=engine)
        assert _tops(got) == _tops(eager)
        np.testing.assert_allclose(_probs(got), _probs(eager), atol=1e-4)


def test_evaluate_source_checkpoint_writes_the_eval_dir(setup: dict[str, Path], tmp_path: Path) -> None:
    ev = evaluate_source(setup["ckpt"], str(setup["data"]), out=tmp_path / "ev")
    assert isinstance(ev, Evaluation) and ev.form.format == "pytorch"
    assert ev.describe() == f"{ARCH} from {setup['ckpt']}" and ev.form.split == "all"
    assert ev.form.result.num_samples == 8 and ev.form.result.class_names == CLASSES
    for name in EVAL_FILES:
        assert (tmp_path / "ev" / name).is_file(), name
    assert set(map(Path, ev.files.values())) >= {tmp_path / "ev" / n for n in EVAL_FILES}
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["num_samples"] == 8 and saved["top1"] == pytest.approx(ev.form.result.top1)
    assert evaluate_source(setup["ckpt"], str(setup["data"])).files == {}  # nothing written without out


def test_evaluate_source_exported_file_matches_the_checkpoint(setup: dict[str, Path], onnx_file: Path,
                                                              tmp_path: Path) -> None:  # fmt: skip
    ref = evaluate_source(setup["ckpt"], str(setup["data"]))
    ev = evaluate_source(onnx_file, str(setup["data"]), out=tmp_path / "file", threads=1)
    assert ev.form.format == "onnx" and ev.describe() == "m.onnx (onnx, fp32) in its runtime"
    assert ev.form.result.top1 == pytest.approx(ref.form.result.top1)
    assert (ev.form.result.confusion == ref.form.result.confusion).all()
    assert all((tmp_path / "file" / n).is_file() for n in EVAL_FILES)


def test_compare_source_refuses_a_file_first_and_writes_the_comparison(setup: dict[str, Path], onnx_file: Path,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ValueError, match="needs the run directory or checkpoint first"):
        compare_source(onnx_file, str(setup["data"]), [onnx_file])
    done = compare_source(setup["run"], str(setup["data"]), [onnx_file], latency_s=0, out=tmp_path / "cmp")
    assert [f.name for f in done.comparison.forms] == ["checkpoint", "m.onnx"]
    assert (tmp_path / "cmp" / "compare.json").is_file() and (tmp_path / "cmp" / "compare.html").is_file()
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["flips"]["m.onnx"] == []  # fp32 ONNX predicts as the checkpoint does
