"""Judge the deployed model, not only the trained one.

The model on the device is not the model that was trained: it was exported, maybe quantized to int8, and runs
in another runtime.  ``evaluate_deployed(FILE, DATA)`` runs an exported file (any format of
``lightnets.deploy.runtimes``) in its own runtime, with the class names, label order and preprocessing recorded in the
file, and gives the same ``EvalResult`` as a checkpoint evaluation (top-1/5, confusion matrix, per-class
precision / recall / F1, worst errors).  ``compare_deployed(RUN, DATA, FILES)`` puts the checkpoint and its
deployed forms side by side on the same images: the result of each, the images whose prediction changed
between the checkpoint and each file (both predictions with their confidences), the largest logit difference,
file sizes and batch-1 latency measured in the same process (``lightnets.deploy.bench.time_interleaved``, so the
forms take turns and share the machine's state).

Files are loaded through ``deploy.to_device.load_exported`` (the format registry); what a runtime raises on a bad
file (truncated, from another model, no metadata) becomes one ``ValueError`` line naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import Accumulator, EvalResult

__all__ = ["Comparison", "Flip", "FormEval", "compare_deployed", "evaluate_deployed", "open_exported"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class FormEval:
    """One form of a model (the checkpoint in PyTorch or an exported file in its runtime) on one dataset."""

    name: str  # "checkpoint" or the file's name
    path: str
    format: str  # "pytorch" or the runtime format ("onnx", "executorch", ...)
    quantize: str | None
    num_bytes: int  # model files (main + companions, without the metadata sidecar), or the checkpoint file
    result: EvalResult
    split: str
    data: str
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # evaluation order
    logits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    latency_ms: float | None = None  # median, batch 1
    latency_iqr_ms: list[float] | None = None
    dataset: Any = field(default=None, repr=False)  # the evaluated dataset (thumbnails for the report)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        """Softmax probability of the predicted class, per sample."""
        z = torch.from_numpy(self.logits).double()
        return torch.softmax(z, 1).max(1).values.numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "format": self.format, "quantize": self.quantize,
                "num_bytes": self.num_bytes, "split": self.split, "data": self.data, "latency_ms": self.latency_ms,
                "latency_iqr_ms": self.latency_iqr_ms, "result": self.result.to_dict()}  # fmt: skip


@dataclass
class Flip:
    """A sample the deployed form predicts differently from the checkpoint."""

    index: int  # sample id (dataset index)
    path: str | None
    true: int
    checkpoint_pred: int
    checkpoint_conf: float
    deployed_pred: int
    deployed_conf: float

    @property
    def effect(self) -> str:
        """"broke" (checkpoint right, file wrong), "fixed" (the other way) or "both wrong"."""
        return "broke" if self.checkpoint_pred == self.true else "fixed" if self.deployed_pred == self.true else "both wrong"


@dataclass
class Comparison:
    """The checkpoint (``forms[0]``) and its deployed forms on the same images."""

    forms: list[FormEval]
    flips: dict[str, list[Flip]]  # by deployed form name
    max_abs_diff: dict[str, float]  # by deployed form name: max |logit - checkpoint logit|
    logit_scale: float  # max |checkpoint logit|
    threads: int | None = None

    @property
    def classes(self) -> list[str]:
        return self.forms[0].result.class_names

    def agreement(self, name: str) -> float:
        """Fraction of samples where form ``name`` predicts what the checkpoint predicts."""
        return 1.0 - len(self.flips[name]) / max(1, self.forms[0].result.num_samples)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"classes": self.classes, "threads": self.threads, "logit_scale": self.logit_scale,
                "forms": [f.to_dict() for f in self.forms], "max_abs_diff": self.max_abs_diff,
                "agreement": {n: self.agreement(n) for n in self.flips},
                "flips": {n: [{**asdict(f), "effect": f.effect} for f in fs] for n, fs in self.flips.items()}}  # fmt: skip


# ------------------------------------------------------------------------------------------------ files
def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def open_exported(path: str | os.PathLike, threads: int | None = None) -> tuple[Any, dict[str, Any], str]:
    """(forward: NCHW tensor -> logits tensor, metadata, format name) of an exported file, checked.

    The file must exist, carry lightnets metadata, load in its runtime, and give one logit per recorded class
    on an input of its recorded shape; anything else is a ``ValueError`` naming the file (a truncated file,
    a metadata file of another model, an unknown suffix)."""
    from ..deploy.runtimes import format_for_path
    from ..deploy.to_device import load_exported

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model file not found: {path}")
    try:
        forward, meta = load_exported(path, threads)
    except (ValueError, OSError):  # already one line (unknown suffix, no metadata, missing package...)
        raise
    except Exception as e:  # noqa: BLE001 - each runtime has its own exception types for a bad file
        raise ValueError(f"{path}: cannot be loaded by its runtime ({format_for_path(path)}): {_one_line(e)}") from None
    classes = list(meta["classes"])
    shape = meta.get("input_shape") or [1, _in_chans(meta), *meta["preprocessing"]["input_size"]]
    try:
        out = forward(torch.zeros((1, *shape[1:]), dtype=torch.float32))
    except Exception as e:  # noqa: BLE001 - see above
        raise ValueError(f"{path}: its runtime fails on a {list(shape)} input: {_one_line(e)}") from None
    if tuple(out.shape) != (1, len(classes)):
        raise ValueError(f"{path} gives outputs of shape {list(out.shape)} but its metadata records "
                         f"{len(classes)} classes: the file and its metadata come from different models")  # fmt: skip
    return forward, meta, str(meta.get("format") or format_for_path(path))


def _in_chans(meta: dict[str, Any]) -> int:
    return int(meta["preprocessing"].get("in_chans", meta.get("kwargs", {}).get("in_chans", 3)))


def _model_bytes(path: Path) -> int:
    from ..deploy.to_device import files_of

    return files_of(path)[1]


# ------------------------------------------------------------------------------------------------ running
@torch.no_grad()
def _run(forward: Any, ds: Any, prep: dict[str, Any], classes: list[str], batch_size: int, workers: int,
         worst_n: int) -> tuple[EvalResult, np.ndarray, np.ndarray]:  # fmt: skip
    """(result, sample ids, logits) of ``forward`` over ``ds``: the loader of ``evaluate_checkpoint`` and the
    ``Accumulator`` of ``engine.evaluate``, keeping the logits to compare forms sample by sample."""
    from ..train.engine import batches_with_ids
    from .predict import eval_loader, sample_paths

    acc = Accumulator(len(classes), classes, worst_n=worst_n)
    all_ids, all_logits = [], []
    for images, targets, ids in batches_with_ids(eval_loader(ds, prep, batch_size, workers)):
        logits = torch.as_tensor(forward(images)).float()
        acc.update(logits, targets, ids=ids)
        all_ids.append(np.asarray(ids, dtype=np.int64))
        all_logits.append(logits.numpy())
    if not all_ids:
        raise ValueError("the evaluation split holds no readable images")
    return acc.compute(paths_by_id=sample_paths(ds)), np.concatenate(all_ids), np.concatenate(all_logits)


def _data_split(data: str, classes: list[str], in_chans: int, split: str, owner: str) -> tuple[str, Any]:
    from .predict import eval_split

    return eval_split(data, classes, in_chans, split, owner=owner)


def evaluate_deployed(
    path: str | os.PathLike,
    data: str,
    *,
    split: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    worst_n: int = 16,
    threads: int | None = None,
) -> FormEval:
    """Evaluate an exported file on a dataset source, in the file's own runtime.

    Class names, label order and preprocessing are the file's; the data's classes must be among them (the
    error names those that are not), a subset is fine.  ``split`` as in ``predict.evaluate_checkpoint``."""
    forward, meta, fmt = open_exported(path, threads)
    classes = list(meta["classes"])
    name, ds = _data_split(data, classes, _in_chans(meta), split, owner=f"the file {Path(path).name}")
    result, ids, logits = _run(forward, ds, meta["preprocessing"], classes, batch_size, workers, worst_n)
    return FormEval(Path(path).name, str(path), fmt, meta.get("quantize"), _model_bytes(Path(path)), result, name,
                    data, meta, ids, logits, dataset=ds)  # fmt: skip


# ------------------------------------------------------------------------------------------------ comparing
def _check_same_model(path: str | os.PathLike, meta: dict[str, Any], ckpt: dict[str, Any]) -> None:
    """Refuse a file exported from another model than the checkpoint (arch, kwargs or classes differ)."""
    name = Path(path).name
    if meta.get("arch") != ckpt["arch"] or dict(meta.get("kwargs") or {}) != dict(ckpt["kwargs"]):
        raise ValueError(f"{name} was exported from {meta.get('arch')} {meta.get('kwargs')}, not from the "
                         f"checkpoint's {ckpt['arch']} {ckpt['kwargs']}")  # fmt: skip
    mine, theirs = list(meta["classes"]), list(ckpt["classes"])
    if mine != theirs:
        differ = sorted(set(mine) ^ set(theirs)) or "same names in another order"
        raise ValueError(f"{name} records other classes than the checkpoint: {differ}")


def _flips(ref: FormEval, form: FormEval) -> list[Flip]:
    """Samples predicted differently by ``form`` and the checkpoint, aligned by sample id."""
    order_ref, order = np.argsort(ref.ids, kind="stable"), np.argsort(form.ids, kind="stable")
    if not np.array_equal(ref.ids[order_ref], form.ids[order]):
        raise ValueError(f"{form.name} was evaluated on other samples than the checkpoint (its preprocessing "
                         "dropped or added images)")  # fmt: skip
    rp, rc, fp, fc = ref.preds[order_ref], ref.confidence[order_ref], form.preds[order], form.confidence[order]
    paths = _paths_by_id(ref.dataset)
    targets = _targets_by_id(ref.dataset)
    ids = ref.ids[order_ref]
    return [Flip(int(ids[i]), paths[int(ids[i])] if paths else None, int(targets[int(ids[i])]), int(rp[i]),
                 float(rc[i]), int(fp[i]), float(fc[i])) for i in np.flatnonzero(rp != fp)]  # fmt: skip


def _paths_by_id(ds: Any) -> list[str] | None:
    from .predict import sample_paths

    return sample_paths(ds)


def _targets_by_id(ds: Any) -> list[int]:
    samples = getattr(ds, "samples", None)
    return [t for _, t in samples] if samples is not None else ds.labels.tolist()


def _max_diff(ref: FormEval, form: FormEval) -> float:
    a, b = ref.logits[np.argsort(ref.ids, kind="stable")], form.logits[np.argsort(form.ids, kind="stable")]
    return float(np.abs(a - b).max()) if a.size else 0.0


def _time_forms(forwards: list[Any], shapes: list[list[int]], threads: int | None, latency_s: float) -> list[Any]:
    """Batch-1 timings of every form, interleaved round by round (``bench.time_interleaved``)."""
    from ..deploy.bench import TimedCall, time_interleaved

    gen = torch.Generator().manual_seed(0)
    calls = []
    for forward, shape in zip(forwards, shapes, strict=True):
        x = torch.randn((1, *shape[1:]), generator=gen)
        calls.append(TimedCall(lambda f=forward, x=x: f(x), threads))
    return time_interleaved(calls, warmup=3, min_time_s=latency_s, repeats=10, rounds=5)


def compare_deployed(
    run: str | os.PathLike,
    data: str,
    files: list[str | os.PathLike],
    *,
    split: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    worst_n: int = 16,
    threads: int | None = None,
    latency_s: float = 1.0,
) -> Comparison:
    """The checkpoint of ``run`` (a run directory or checkpoint file) and each exported file of it, on the same
    split of ``data``: result per form, flipped predictions, logit differences, size and batch-1 latency
    (``latency_s`` seconds of timing per form; 0: none).  A file of another model is refused."""
    from .predict import load_for_inference

    if not files:
        raise ValueError("compare needs at least one exported file")
    model, ckpt = load_for_inference(run)
    opened = [open_exported(f, threads) for f in files]
    for f, (_, meta, _) in zip(files, opened, strict=True):
        _check_same_model(f, meta, ckpt)
    classes, prep = list(ckpt["classes"]), ckpt["preprocessing"]
    chans = int(prep.get("in_chans", ckpt["kwargs"].get("in_chans", 3)))
    split_name, ds = _data_split(data, classes, chans, split, owner="the checkpoint")

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    result, ids, logits = _run(eager, ds, prep, classes, batch_size, workers, worst_n)
    ckpt_path = Path(ckpt["path"])
    forms = [FormEval("checkpoint", str(ckpt_path), "pytorch", None, ckpt_path.stat().st_size, result, split_name,
                      data, {k: ckpt[k] for k in ("arch", "kwargs", "classes", "preprocessing")}, ids, logits,
                      dataset=ds)]  # fmt: skip
    for f, (forward, meta, fmt) in zip(files, opened, strict=True):
        res, fids, flogits = _run(forward, ds, meta["preprocessing"], classes, batch_size, workers, worst_n)
        name = Path(f).name
        if any(name == x.name for x in forms):
            name = str(f)
        forms.append(FormEval(name, str(f), fmt, meta.get("quantize"), _model_bytes(Path(f)), res, split_name,
                              data, meta, fids, flogits, dataset=ds))  # fmt: skip
    if latency_s > 0:
        shapes = [[1, chans, *prep["input_size"]]] + [m.get("input_shape") or [1, chans, *m["preprocessing"]["input_size"]]
                                                       for _, m, _ in opened]  # fmt: skip
        timings = _time_forms([eager] + [o[0] for o in opened], shapes, threads, latency_s)
        for form, t in zip(forms, timings, strict=True):
            form.latency_ms, form.latency_iqr_ms = t.median_ms, [t.q1_ms, t.q3_ms]
    ref = forms[0]
    return Comparison(forms, {f.name: _flips(ref, f) for f in forms[1:]}, {f.name: _max_diff(ref, f) for f in forms[1:]},
                      float(np.abs(ref.logits).max()) if ref.logits.size else 0.0, threads)  # fmt: skip


def is_exported_file(path: str | os.PathLike) -> bool:
    """True when ``path`` should be evaluated as an exported file, not as a run directory or checkpoint."""
    p = Path(path)
    return not p.is_dir() and p.suffix.lower() not in CHECKPOINT_SUFFIXES


def checkpoint_form(
    run: str | os.PathLike, data: str, *, split: str = "auto", batch_size: int = 64, workers: int = 0,
    worst_n: int = 16, cache: bool = True, cache_dir: str | os.PathLike | None = None,
) -> FormEval:  # fmt: skip
    """``predict.evaluate_checkpoint`` as a ``FormEval`` (what ``lightnets eval RUN DATA`` reports and writes)."""
    from .predict import evaluate_checkpoint

    result, ds, ckpt = evaluate_checkpoint(run, data, split=split, batch_size=batch_size, workers=workers,
                                           worst_n=worst_n, cache=cache, cache_dir=cache_dir)  # fmt: skip
    path = Path(ckpt["path"])
    meta = {k: ckpt[k] for k in ("arch", "kwargs", "classes", "preprocessing")}
    return FormEval("checkpoint", str(path), "pytorch", None, path.stat().st_size, result,
                    getattr(result, "split", split), data, meta, dataset=ds)  # fmt: skip
