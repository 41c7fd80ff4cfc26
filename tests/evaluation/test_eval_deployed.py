"""lightnets eval FILE / eval RUN --compare FILE...: the deployed model judged in its own runtime.

Fast: a tiny checkpoint with varied predictions, a small folder of random photos, ONNX fp32 and int8.  The real
runs (ants/bees, Fashion-MNIST, every available format) are in test_eval_deployed_real.py (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from lightnets import cli, deploy
from lightnets.data.transforms import make_preprocessing
from lightnets.evaluation.deployed import checkpoint_form, compare_deployed, evaluate_deployed
from lightnets.evaluation.deployed_report import comparison_html
from lightnets.train.checkpoint import save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_deploy import one_thread, trained_like_model  # noqa: E402, F401

SIZE = 32
ARCH = "mobilenet_v2_x0_35"
CLASSES = ["ants", "bees", "wasps"]


def _folder(root: Path, classes: list[str], per_class: int, seed: int) -> Path:
    """Noisy photos whose colour leans to one channel per class (so a head fitted on them tells them apart)."""
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(110, 60, (40, 36, 3))
            img[..., k % 3] += 40
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def _fit_head(model: torch.nn.Module, data: Path, prep: dict) -> torch.nn.Module:
    """Set the classifier to nearest-centroid weights on the photos' features: a model with varied predictions,
    some right and some wrong, without training."""
    from lightnets.data import ImageFolder
    from lightnets.data.transforms import eval_transform

    ds = ImageFolder(data, eval_transform(prep))
    head = model.get_classifier()
    feats: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].detach()))
    with torch.no_grad():
        model(torch.stack([ds[i][0] for i in range(len(ds))]))
    handle.remove()
    x, y = feats[0], torch.tensor(ds.targets)
    centroids = torch.stack([x[y == k].mean(0) for k in range(len(ds.classes))]) - x.mean(0)
    with torch.no_grad():
        head.weight.copy_(4 * centroids / centroids.norm(dim=1, keepdim=True) / x.std(0).norm().clamp_min(1e-6) * 10)
        head.bias.zero_()
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint, its fp32 and int8 ONNX files, and a labelled folder of 30 photos."""
    root = tmp_path_factory.mktemp("evaldep")
    data = _folder(root / "data", CLASSES, 10, seed=0)
    prep = make_preprocessing("imagenet", SIZE)
    model = _fit_head(trained_like_model(ARCH, num_classes=3, seed=3), data, prep)
    ckpt = save_checkpoint(root / "run" / "best.pt", model, arch=ARCH, kwargs={"num_classes": 3}, classes=CLASSES,
                           preprocessing=prep)  # fmt: skip
    files = {"data": data, "ckpt": ckpt}
    files["fp32"] = Path(deploy.export(ckpt, "onnx", calib=data, output=root / "m.onnx", latency_s=0).path)
    files["int8"] = Path(deploy.export(ckpt, "onnx", quantize="int8", calib=data, output=root / "m.int8.onnx",
                                       latency_s=0, max_drop=100.0).path)  # fmt: skip
    return files


def test_fp32_file_scores_as_the_checkpoint(setup: dict[str, Path]) -> None:
    ref = checkpoint_form(setup["ckpt"], str(setup["data"]))
    got = evaluate_deployed(setup["fp32"], str(setup["data"]))
    assert got.format == "onnx" and got.quantize is None and got.result.num_samples == 30
    assert got.result.class_names == CLASSES and got.split == ref.split == "all"
    assert np.array_equal(got.result.confusion, ref.result.confusion)
    assert got.result.top1 == ref.result.top1 and len(set(got.preds.tolist())) > 1  # not a constant model
    assert [m.path for m in got.result.worst] == [m.path for m in ref.result.worst]
    assert got.num_bytes == setup["fp32"].stat().st_size
    assert lightnets.evaluate_deployed is evaluate_deployed and lightnets.compare_deployed is compare_deployed


def test_compare_lists_flips_and_logit_differences(setup: dict[str, Path]) -> None:
    cmp = compare_deployed(setup["ckpt"], str(setup["data"]), [setup["fp32"], setup["int8"]], latency_s=0.05,
                           threads=1)  # fmt: skip
    ref, fp32, int8 = cmp.forms
    assert [f.format for f in cmp.forms] == ["pytorch", "onnx", "onnx"] and int8.quantize == "int8"
    assert cmp.flips["m.onnx"] == [] and cmp.max_abs_diff["m.onnx"] <= 1e-4 * max(1.0, cmp.logit_scale)
    np.testing.assert_allclose(fp32.logits, ref.logits, atol=1e-4 * max(1.0, cmp.logit_scale))
    changed = np.flatnonzero(ref.preds != int8.preds)  # same loader order for every form
    flips = cmp.flips["m.int8.onnx"]
    assert [f.index for f in flips] == ref.ids[changed].tolist()
    for f, i in zip(flips, changed, strict=True):
        assert (f.checkpoint_pred, f.deployed_pred) == (ref.preds[i], int8.preds[i])
        assert f.checkpoint_conf == pytest.approx(ref.confidence[i]) and Path(f.path).parent.name == CLASSES[f.true]
    assert cmp.agreement("m.int8.onnx") == pytest.approx(1 - len(changed) / 30)
    assert 1 <= len(flips) < 30  # seeded: int8 changes a prediction here (1 of 30 when written)
    assert cmp.max_abs_diff["m.int8.onnx"] > cmp.max_abs_diff["m.onnx"]
    assert all(f.latency_ms > 0 and f.num_bytes > 0 for f in cmp.forms)
    assert int8.num_bytes < fp32.num_bytes
    d = json.loads(json.dumps(cmp.to_dict()))
    assert len(d["flips"]["m.int8.onnx"]) == len(flips) and d["forms"][0]["name"] == "checkpoint"


def _check_images(page: str, base: Path) -> int:
    """Every <img> of the page is an embedded data: URI or an existing file; returns how many there are."""
    srcs = re.findall(r"<img\b[^>]*\bsrc=['\"]([^'\"]*)['\"]", page)
    assert len(srcs) == len(re.findall(r"<img\b", page))
    for src in srcs:
        assert src.startswith("data:image/") or (base / src).is_file(), src[:80]
    return len(srcs)


def test_cli_compare_writes_a_self_contained_page(setup: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "cmp"
    argv = ["eval", str(setup["ckpt"]), str(setup["data"]), "--compare", str(setup["fp32"]), str(setup["int8"]),
            "--out", str(out), "--latency-time", "0.05", "--threads", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "m.int8.onnx" in text and "checkpoint" in text and "compare.html" in text
    page = (out / "compare.html").read_text()
    saved = json.loads((out / "compare.json").read_text())
    n_flips = len(saved["flips"]["m.int8.onnx"])
    # 3 confusion matrices + one thumbnail per flip (up to the gallery limit)
    assert _check_images(page, out) == 3 + min(n_flips, 48)
    for section in ("summary", "f1", "confusion", "flips"):
        assert f'<section id="{section}">' in page
    assert page.count("<tr><td class=name>ants</td>") >= 1 and "m.int8.onnx" in page
    assert page.rstrip().endswith("</html>")


def test_cli_eval_file_writes_the_checkpoint_outputs(setup: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for source, out in ((setup["int8"], tmp_path / "file"), (setup["ckpt"], tmp_path / "ckpt")):
        assert cli.main(["eval", str(source), str(setup["data"]), "--out", str(out)]) == 0
        for name in ("eval.json", "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "report.html"):
            assert (out / name).is_file(), (source, name)
        _check_images((out / "report.html").read_text(), out)
    assert "in its runtime" in capsys.readouterr().out
    ev = json.loads((tmp_path / "file" / "eval.json").read_text())
    assert ev["class_names"] == CLASSES and ev["num_samples"] == 30


def test_data_classes_must_be_the_files(setup: dict[str, Path], tmp_path: Path) -> None:
    other = _folder(tmp_path / "other", ["ants", "hornets"], 2, seed=1)
    with pytest.raises(ValueError, match=r"\['hornets'\]"):
        evaluate_deployed(setup["fp32"], str(other))
    subset = _folder(tmp_path / "subset", ["bees", "wasps"], 3, seed=2)  # a subset: labels mapped by name
    got = evaluate_deployed(setup["fp32"], str(subset))
    assert got.result.class_names == CLASSES and got.result.confusion[0].sum() == 0
    assert got.result.confusion[1].sum() == 3 and got.result.confusion[2].sum() == 3
    assert got.dataset.classes == CLASSES and {t for _, t in got.dataset.samples} == {1, 2}


def test_bad_files_get_one_line(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    data = str(setup["data"])
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(setup["fp32"].read_bytes()[:5000])
    bare = tmp_path / "bare.onnx"  # no lightnets metadata
    proto = onnx.load(str(setup["fp32"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    alien = tmp_path / "alien.onnx"  # metadata of a 5-class model on a 3-class graph
    proto = onnx.load(str(setup["fp32"]))
    for p in proto.metadata_props:
        if p.key == "classes":
            p.value = json.dumps(["a", "b", "c", "d", "e"])
    onnx.save(proto, str(alien))
    odd = tmp_path / "model.xyz"
    odd.write_bytes(b"0" * 10)
    cases = [(["eval", str(trunc), data], "trunc.onnx"), (["eval", str(bare), data], "lacks the lightnets metadata"),
             (["eval", str(alien), data], "different models"), (["eval", str(odd), data], "'.xyz'"),
             (["eval", str(tmp_path / "gone.onnx"), data], "not found"),
             (["eval", str(setup["fp32"]), data, "--compare", str(setup["int8"])], "run directory or checkpoint first")]
    for argv, expected in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)


def test_compare_refuses_a_file_of_another_model(setup: dict[str, Path], tmp_path: Path) -> None:
    model = trained_like_model(ARCH, num_classes=2, seed=4)
    ckpt = save_checkpoint(tmp_path / "best.pt", model, arch=ARCH, kwargs={"num_classes": 2}, classes=["ants", "bees"],
                           preprocessing=make_preprocessing("imagenet", SIZE))  # fmt: skip
    with pytest.raises(ValueError, match=r"m.onnx was exported from .* not from the checkpoint"):
        compare_deployed(ckpt, str(setup["data"]), [setup["fp32"]], latency_s=0)


def test_comparison_page_escapes_names(setup: dict[str, Path]) -> None:
    cmp = compare_deployed(setup["ckpt"], str(setup["data"]), [setup["int8"]], latency_s=0)
    cmp.forms[1].name = "<b>x</b>"
    cmp.flips = {"<b>x</b>": cmp.flips["m.int8.onnx"]}
    cmp.max_abs_diff = {"<b>x</b>": 0.0}
    page = comparison_html(cmp)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
