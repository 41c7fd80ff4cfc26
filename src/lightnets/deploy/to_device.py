"""``lightnets.deploy.export``: one model to one on-device file, checked by that file's own runtime.

The stages, top to bottom:

1. the source -- a run directory, a checkpoint, or a registered name (random weights, or ``weights=FILE``: a
   state_dict in the model's layout) -- gives the model and what the file must carry: arch, kwargs, class
   names and the eval preprocessing (mean/std, size, resize rule, channel order, input scale);
2. real images, preprocessed exactly as recorded: ``calib`` (a folder of images or a dataset source such as
   ``fashion-mnist:PATH``) is shuffled with a fixed seed and cut into calibration images and *disjoint* check
   images; a run also gives its own validation split (labelled) and, without ``calib``, calibration images
   from its training split;
3. the format module writes the file (``lightnets.deploy.runtimes``), fp32 or int8;
4. the file is loaded in the format's own runtime and run on the check images: fp32 must match the eager
   model within float noise (``PARITY_ATOL``, relative to the largest logit); int8 is measured by top-1
   agreement with fp32 and, when labels exist, by the accuracy drop on the validation split.  When int8
   loses more than ``max_drop`` points, ``lightnets.deploy.quant_fallback`` keeps the most sensitive layers in float
   until it does not;
5. batch-1 latency in that runtime (``lightnets.deploy.bench.time_function``), and the report: returned, and written
   as JSON beside the file (``<file>.report.json``).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .images import DEFAULT_CALIB_IMAGES, SEED, ImageSet, load_images, run_images
from .runtimes import FORMATS, MODULES, ExportRequest, Format, atomic_write, format_for_path, get_format

__all__ = ["DeployReport", "ImageSet", "Source", "PARITY_ATOL", "export", "load_images", "resolve_source"]

#: fp32 parity: max |exported - eager| <= PARITY_ATOL * max(1, max |logit|)
PARITY_ATOL = 1e-4
RANDOM_CHECK_INPUTS = 8  # fp32 check without any real images (a registered name and no calib)


class ExportCheckError(ValueError):
    """An export whose file failed its check (it is removed)."""


@dataclass
class Source:
    """A model to export and what its files must carry."""

    model: nn.Module
    metadata: dict[str, Any]  # arch, kwargs, classes, preprocessing
    input_shape: tuple[int, int, int, int]
    run_dir: Path | None = None  # set when the source is a training run (its splits give labelled images)
    label: str = ""


@dataclass
class DeployReport:
    """What was written and how it was checked (see the module docstring)."""

    path: str
    format: str
    quantize: str | None
    num_bytes: int
    fp32_param_bytes: int  # 4 bytes x parameters: what an fp32 file of this model weighs at least
    files: list[str]
    input_shape: list[int]
    checked_on: str
    num_check_images: int
    max_abs_diff: float | None  # exported vs eager fp32 logits on the check images
    logit_scale: float | None
    parity_atol: float | None  # fp32 only: the bound max_abs_diff had to meet
    agreement: float | None  # int8: top-1 agreement with fp32 on the check images (fraction)
    accuracy: dict[str, Any] | None  # {"split", "images", "fp32", "exported", "drop_points"}
    max_drop: float | None
    within_budget: bool | None
    float_layers: list[str] = field(default_factory=list)
    fallback: list[dict[str, Any]] = field(default_factory=list)  # one entry per int8 attempt
    latency_ms: float | None = None  # median, batch 1, in the format's runtime
    latency_iqr_ms: list[float] | None = None
    threads: int | None = None
    format_info: dict[str, Any] = field(default_factory=dict)  # what the format recorded (e.g. delegates)
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ sources
def _checkpoint_source(path: Path) -> Source:
    from ..train.checkpoint import load_checkpoint, model_from_checkpoint

    model, ckpt = model_from_checkpoint(load_checkpoint(path))
    prep = ckpt["preprocessing"]
    chans = int(prep.get("in_chans", ckpt["kwargs"].get("in_chans", 3)))
    h, w = (int(s) for s in prep["input_size"])
    ckpt_path = Path(ckpt["path"])
    run = ckpt_path.parent if (ckpt_path.parent / "config.json").is_file() else None
    meta = {"arch": ckpt["arch"], "kwargs": ckpt["kwargs"], "classes": list(ckpt["classes"]), "preprocessing": prep}
    return Source(model, meta, (1, chans, h, w), run, label=str(ckpt_path))


def _registered_source(name: str, weights: str | None) -> Source:
    from ..data.transforms import make_preprocessing
    from ..registry import create_model, get_card

    card = get_card(name)  # ValueError naming close matches when unknown
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    model = create_model(name, weights=weights).eval()
    kwargs = dict(card.kwargs)
    chans = int(kwargs.get("in_chans", 3))
    num_classes = int(kwargs.get("num_classes", model.get_classifier().out_features))
    prep = make_preprocessing("imagenet", card.input_size, in_chans=chans)
    meta = {"arch": name, "kwargs": kwargs, "classes": [str(i) for i in range(num_classes)], "preprocessing": prep,
            "weights": Path(weights).name if weights else None}  # fmt: skip
    return Source(model, meta, (1, chans, card.input_size, card.input_size), None, label=name)


def resolve_source(
    source: str | os.PathLike, weights: str | os.PathLike | None = None, input_size: int | tuple[int, int] | None = None
) -> Source:
    """A run directory, a checkpoint file, or a registered model name (with ``weights``: a state_dict file)."""
    path = Path(source)
    if path.exists():
        if weights is not None:
            raise ValueError(f"--weights goes with a registered model name, not with the checkpoint {source}")
        src = _checkpoint_source(path)
    else:
        src = _registered_source(str(source), None if weights is None else os.fspath(weights))
    if input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else (int(s) for s in input_size)
        prep = dict(src.metadata["preprocessing"], input_size=[h, w])
        if prep.get("resize") == "shorter":
            prep["resize_size"] = int(math.floor(min(h, w) / 0.875))
        src.metadata["preprocessing"] = prep
        src.input_shape = (1, src.input_shape[1], h, w)
    return src


# ------------------------------------------------------------------------------------------------ checks
def logits_of(runner: Any, images: torch.Tensor, batch: int = 32) -> np.ndarray:
    return np.concatenate([np.asarray(runner(images[i : i + batch].numpy())) for i in range(0, len(images), batch)])


@torch.no_grad()
def eager_logits(model: nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    return np.concatenate([model(images[i : i + batch]).numpy() for i in range(0, len(images), batch)])


def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.numpy()).mean() * 100)


def measure(runner: Any, check: ImageSet, ref: np.ndarray) -> dict[str, Any]:
    """Agreement (fraction), max |diff| against the fp32 reference and, with labels, accuracies in points."""
    got = logits_of(runner, check.images)
    out = {"agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
           "max_abs_diff": float(np.abs(got - ref).max()), "logit_scale": float(np.abs(ref).max())}  # fmt: skip
    if check.labels is not None:
        out["fp32"], out["exported"] = _accuracy(ref, check.labels), _accuracy(got, check.labels)
        out["drop_points"] = out["fp32"] - out["exported"]
    else:
        out["drop_points"] = (1 - out["agreement"]) * 100
    return out


def _latency(runner: Any, shape: tuple[int, ...], threads: int | None, min_time_s: float) -> tuple[float, list[float]]:
    from .bench import time_function

    x = np.random.default_rng(SEED).standard_normal(shape).astype(np.float32)
    t = time_function(lambda: runner(x), threads=threads, warmup=3, min_time_s=min_time_s, repeats=10)
    return t.median_ms, [t.q1_ms, t.q3_ms]


def files_of(path: Path) -> tuple[list[Path], int]:
    """(every file of an export: main, its format's companions, sidecar; bytes of the model files without the
    sidecar).  Only the format's own companions count: ``model.int8.pte`` does not own OpenVINO's
    ``model.int8.bin`` beside it."""
    name = format_for_path(path)
    suffixes = get_format(name).companions if name is not None else ()
    model_files = [path] + [c for s in suffixes if (c := path.with_suffix(s)) != path and c.is_file()]
    side = path.with_name(path.name + ".json")
    return model_files + ([side] if side.is_file() else []), sum(f.stat().st_size for f in model_files)


# ------------------------------------------------------------------------------------------------ export
def _default_output(source: str | os.PathLike, fmt: Format, quantize: str | None) -> Path:
    src = Path(source)
    base = src / "model" if src.is_dir() else src.with_suffix("") if src.exists() else Path(Path(str(source)).name)
    return base.with_name(base.name + (".int8" if quantize else "") + fmt.suffix)


def _images_for(src: Source, calib: str | os.PathLike | None, calib_images: int, split: str) -> tuple[ImageSet | None, ImageSet]:
    """(calibration images or None, check images): see the module docstring, stage 2."""
    prep = src.metadata["preprocessing"]
    calib_set = check_set = None
    if calib is not None:
        calib_set, check_set = load_images(calib, prep, calib_images)
    if src.run_dir is not None:
        run_calib, check_set = run_images(src.run_dir, prep, split, calib_images)
        calib_set = calib_set or run_calib
    if check_set is None or len(check_set.images) == 0:
        gen = torch.Generator().manual_seed(SEED)
        check_set = ImageSet(torch.randn((RANDOM_CHECK_INPUTS, *src.input_shape[1:]), generator=gen), None,
                             f"{RANDOM_CHECK_INPUTS} seeded random inputs (give calib images to check on real ones)")  # fmt: skip
    return calib_set, check_set


@dataclass
class _Attempts:
    """Everything one export writes its tries from: ``attempt(float_layers)`` writes the file with those layers
    kept in float, loads it in its runtime and measures it against the eager reference logits."""

    fmt: Format
    deployed: nn.Module
    src: Source
    out: Path
    base_meta: dict[str, Any]
    quantize: str | None
    calib_set: ImageSet | None
    check: ImageSet
    ref: np.ndarray
    threads: int | None

    def attempt(self, float_layers: tuple[str, ...]) -> tuple[Path, Any, dict[str, Any]]:
        meta = {**self.base_meta, "float_layers": list(float_layers)} if self.quantize else self.base_meta
        calib = None if self.calib_set is None else self.calib_set.images
        request = ExportRequest(self.deployed, torch.zeros(self.src.input_shape), self.out, meta, self.quantize,
                                calib, float_layers)  # fmt: skip
        path = self.fmt.export(request)
        runner = self.fmt.load(path, self.threads)
        return path, runner, measure(runner, self.check, self.ref)


def _check_export_args(fmt: Format, quantize: str | None, max_drop: float) -> None:
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize and not fmt.supports_int8:
        raise ValueError(f"format {fmt.name!r} has no int8 export")
    if not max_drop >= 0:
        raise ValueError(f"max_drop must be >= 0 (top-1 points), got {max_drop!r}")


def _check_fp32(report: DeployReport, result: dict[str, Any], path: Path, tries: _Attempts) -> None:
    """fp32 parity within ``PARITY_ATOL`` relative to the largest logit, else the files are removed."""
    report.parity_atol = PARITY_ATOL * max(1.0, result["logit_scale"])
    if not result["max_abs_diff"] <= report.parity_atol:
        for f in files_of(path)[0]:
            f.unlink(missing_ok=True)
        raise ExportCheckError(
            f"{tries.fmt.name}: the exported file differs from the eager model by {result['max_abs_diff']:.3g} "
            f"(> {report.parity_atol:.3g}) on {tries.check.description}; it was removed"
        )


def _int8_with_fallback(
    report: DeployReport, first: tuple[Path, Any, dict[str, Any]], tries: _Attempts, max_drop: float
) -> tuple[Path, Any, dict[str, Any]]:
    """Full int8, or, beyond ``max_drop``, the fewest most sensitive layers kept in float that fit the budget
    (``quant_fallback``); fills the report's fallback fields and returns the (path, runner, result) kept."""
    from .quant_fallback import layer_sensitivity, search_float_layers

    path, runner, result = first
    report.max_drop, report.fallback = max_drop, [{"float_layers": 0, "drop_points": result["drop_points"]}]
    if result["drop_points"] > max_drop:
        ranked = list(layer_sensitivity(tries.deployed, tries.calib_set.images[:32]))
        measured: dict[tuple[str, ...], tuple[Path, Any, dict[str, Any]]] = {}

        def drop_with(layers: tuple[str, ...]) -> float:
            measured[layers] = tries.attempt(layers)
            return measured[layers][2]["drop_points"]

        found = search_float_layers(ranked, drop_with, max_drop, first_drop=result["drop_points"])
        report.fallback = found.steps
        if found.float_layers:
            last = list(measured)[-1]
            path, runner, result = measured[last] if last == found.float_layers else tries.attempt(found.float_layers)
        elif measured:  # full int8 was the best after all: write it again
            path, runner, result = tries.attempt(())
        report.float_layers = list(found.float_layers)
    report.agreement = result["agreement"]
    report.within_budget = result["drop_points"] <= max_drop
    return path, runner, result


def _new_report(tries: _Attempts, path: Path, result: dict[str, Any]) -> DeployReport:
    from ..analysis import count_params

    src, check = tries.src, tries.check
    return DeployReport(
        path=str(path), format=tries.fmt.name, quantize=tries.quantize, num_bytes=0,
        fp32_param_bytes=4 * count_params(src.model), files=[], input_shape=list(src.input_shape),
        checked_on=check.description, num_check_images=len(check.images), max_abs_diff=result["max_abs_diff"],
        logit_scale=result["logit_scale"], parity_atol=None, agreement=None, accuracy=None, max_drop=None,
        within_budget=None, threads=tries.threads,
    )  # fmt: skip


def _finish(report: DeployReport, path: Path, result: dict[str, Any], tries: _Attempts) -> None:
    """Accuracy, files, sizes and the metadata read back from the file kept."""
    check = tries.check
    if "fp32" in result:
        report.accuracy = {"split": check.description, "images": len(check.images), "fp32": result["fp32"],
                           "exported": result["exported"], "drop_points": result["drop_points"]}  # fmt: skip
    files, report.num_bytes = files_of(path)
    report.files = [str(f) for f in files]
    report.metadata = tries.fmt.read_metadata(path)
    report.format_info = {k: v for k, v in report.metadata.items() if k not in tries.base_meta and k != "float_layers"}


def export(
    source: str | os.PathLike,
    format: str = "onnx",
    *,
    quantize: str | None = None,
    calib: str | os.PathLike | None = None,
    max_drop: float = 1.0,
    output: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    input_size: int | tuple[int, int] | None = None,
    threads: int | None = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    split: str = "val",
    latency_s: float = 1.0,
) -> DeployReport:
    """Export ``source`` to ``format`` (fp32, or ``quantize="int8"``), check it in its own runtime, report.

    ``calib``: a folder of images or a dataset source, for int8 calibration and the check images (a run
    without it calibrates on its own training split).  ``max_drop``: the int8 budget in top-1 points (accuracy
    on the run's ``split`` when the source is a run, else disagreement with fp32); beyond it layers fall back
    to float (``lightnets.deploy.quant_fallback``).  ``latency_s``: seconds of batch-1 timing (0: no timing).
    The report is also written to ``<file>.report.json``.
    """
    from .. import __version__
    from .inference_form import optimize

    start = time.perf_counter()
    fmt = get_format(format)
    _check_export_args(fmt, quantize, max_drop)
    src = resolve_source(source, weights, input_size)
    calib_set, check = _images_for(src, calib, calib_images, split)
    if quantize and calib_set is None:
        raise ValueError("int8 needs calibration images: give calib=DIR_OR_DATASET (--calib)")
    out = Path(output) if output is not None else _default_output(source, fmt, quantize)
    if out.is_dir():  # before any work: the file would go where a folder is
        raise ValueError(f"output {out} is a directory; give a file name, e.g. {out / ('model' + fmt.suffix)}")
    base_meta = {**src.metadata, "input_shape": list(src.input_shape), "input_layout": "NCHW", "format": fmt.name,
                 "quantize": quantize, "lightnets": __version__}  # fmt: skip
    tries = _Attempts(fmt, optimize(src.model, channels_last=False), src, out, base_meta, quantize, calib_set,
                      check, eager_logits(src.model, check.images), threads)  # fmt: skip
    path, runner, result = first = tries.attempt(())
    report = _new_report(tries, path, result)
    if quantize is None:
        _check_fp32(report, result, path, tries)
    else:
        path, runner, result = _int8_with_fallback(report, first, tries, max_drop)
    _finish(report, path, result, tries)
    if latency_s > 0:
        report.latency_ms, report.latency_iqr_ms = _latency(runner, src.input_shape, threads, latency_s)
    report.seconds = time.perf_counter() - start
    atomic_write(path.with_name(path.name + ".report.json"), json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def format_names() -> list[str]:
    """Every format lightnets knows (their modules may still need packages)."""
    return sorted(set(FORMATS) | set(MODULES))


def load_exported(path: str | os.PathLike, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(runner: float32 NCHW tensor -> logits tensor, metadata) for a file written by ``export``, in its format's
    own runtime.  The metadata has the class names and the preprocessing to apply (``lightnets predict FILE``)."""
    path = Path(path)
    name = format_for_path(path)
    if name is None:
        raise ValueError(f"{path}: no lightnets format writes {path.suffix!r} files (known: {format_names()})")
    fmt = get_format(name)
    meta = fmt.read_metadata(path)
    missing = [k for k in ("classes", "preprocessing") if k not in meta]
    if missing:
        raise ValueError(f"{path} lacks the lightnets metadata {missing}; export it again with `lightnets export`")
    run = fmt.load(path, threads)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(run(x.detach().cpu().numpy())))

    return forward, meta
