"""The deployed forms of real runs (slow): a tiny run trained on the ants/bees photos and one on a Fashion-MNIST
subset, exported to every format this install has (fp32 and int8), compared with the checkpoint in their own
runtimes; bad ExecuTorch files (truncated, another model's metadata) get one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightnets import cli, deploy
from lightnets.deploy.runtimes import get_format, sidecar_path
from lightnets.deploy.to_device import format_names
from lightnets.evaluation.deployed import compare_deployed

pytestmark = pytest.mark.slow


def _available_formats() -> list[str]:
    out = []
    for name in format_names():
        try:
            fmt = get_format(name)
        except (ValueError, ImportError):  # module not in this install, or its runtime package missing
            continue
        try:
            for pkg in fmt.packages:
                __import__(pkg)
        except ImportError:
            continue
        out.append(name)
    return out


FORMATS = _available_formats()


def _train(data: str, out: Path, **kw: object) -> Path:
    from lightnets.train import TrainConfig, train

    cfg = TrainConfig(model="shufflenet_v2_x0_5", data=data, out=str(out), epochs=1, batch_size=16, workers=0,
                      progress=False, device="cpu", **kw)  # fmt: skip
    return Path(train(cfg).run_dir)


@pytest.fixture(scope="module", params=["hymenoptera", "fashion-mnist"])
def run_and_files(request: pytest.FixtureRequest, shared_data: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[Path]]:  # fmt: skip
    if not FORMATS:
        pytest.skip("no on-device format runtime installed (pip install 'lightnets[export]')")
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "hymenoptera":
        data = str(shared_data / "hymenoptera_data")
        run = _train(data, tmp / "run", input_size=32, max_train_samples=64)
    else:
        data = f"fashion-mnist:{shared_data / 'fashion-mnist'}"
        run = _train(data, tmp / "run", max_train_samples=1000)
    files = []
    for fmt in FORMATS:
        for q in (None, "int8") if get_format(fmt).supports_int8 else (None,):  # ncnn: fp32 only
            report = deploy.export(run, fmt, quantize=q, latency_s=0, max_drop=100.0, calib_images=32)
            files.append(Path(report.path))
    return run, data, files


def test_every_format_scores_like_the_checkpoint(run_and_files: tuple[Path, str, list[Path]], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run, data, files = run_and_files
    cmp = compare_deployed(run, data, files, latency_s=0.2, threads=1)
    ref = cmp.forms[0]
    tol = 1e-4 * max(1.0, cmp.logit_scale)
    fp32_bytes = {f.format: f.num_bytes for f in cmp.forms[1:] if f.quantize is None}
    for form in cmp.forms[1:]:
        changed = np.flatnonzero(ref.preds != form.preds)
        assert [f.index for f in cmp.flips[form.name]] == ref.ids[changed].tolist(), form.name
        if form.quantize is None:  # fp32: float noise only
            assert cmp.flips[form.name] == [] and cmp.max_abs_diff[form.name] <= tol, (form.name, cmp.max_abs_diff)
            assert np.array_equal(form.result.confusion, ref.result.confusion)
        else:
            # int8 weights: smaller than the same format's fp32 file.  Not "< half the checkpoint": this model has
            # 0.37M parameters, and OpenVINO's int8 graph alone (text XML with its FakeQuantize nodes) is 0.48 MB
            assert form.num_bytes < 0.6 * fp32_bytes[form.format], (form.name, form.num_bytes, fp32_bytes)
            assert cmp.max_abs_diff[form.name] > 0
        assert form.latency_ms > 0
    out = tmp_path / "cmp"
    argv = ["eval", str(run), data, "--compare", *map(str, files), "--out", str(out), "--latency-time", "0.1"]
    assert cli.main(argv) == 0
    saved = json.loads((out / "compare.json").read_text())
    assert [f["name"] for f in saved["forms"]] == ["checkpoint"] + [p.name for p in files]
    page = (out / "compare.html").read_text()
    assert page.count("<img") >= 1 + len(files) and "src='http" not in page
    capsys.readouterr()


@pytest.mark.skipif("executorch" not in FORMATS, reason="executorch runtime not installed")
def test_bad_pte_files_get_one_line(run_and_files: tuple[Path, str, list[Path]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run, data, files = run_and_files
    pte = next(f for f in files if f.suffix == ".pte")
    trunc = tmp_path / "trunc.pte"
    trunc.write_bytes(pte.read_bytes()[: pte.stat().st_size // 2])
    shutil.copy(sidecar_path(pte), sidecar_path(trunc))
    other = tmp_path / "other.pte"  # this program with the metadata of a model with another class count
    shutil.copy(pte, other)
    meta = json.loads(sidecar_path(pte).read_text())
    meta["classes"] = [*meta["classes"], "extra"]
    sidecar_path(other).write_text(json.dumps(meta))
    bare = tmp_path / "bare.pte"
    shutil.copy(pte, bare)
    for argv, expected in ((["eval", str(trunc), data], "trunc.pte"), (["eval", str(other), data], "different models"),
                           (["eval", str(bare), data], "no metadata file")):  # fmt: skip
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        # ExecuTorch's C++ runtime logs its own line to stderr before lightnets' one (not suppressible from Python)
        ours = [line for line in err if line.startswith("lightnets eval:")]
        assert len(ours) == 1 and ours[0] == err[-1] and expected in ours[0], (argv, err)
