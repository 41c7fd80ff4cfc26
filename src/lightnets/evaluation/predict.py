"""Using a trained checkpoint: evaluate it on a dataset, predict classes of image files.

Everything comes from the checkpoint (architecture, kwargs, class names, preprocessing), so nothing else
needs to be given.  Unreadable images are reported with their path and the rest are still predicted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data import ImageReadError, is_image_file, is_in_memory, list_image_files, load_dataset, load_image
from ..data.transforms import eval_transform, mode_for_chans
from ..data.wordnet import display_names
from ..train import eval_loader as train_eval_loader
from ..train import run_paths
from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from ..train.engine import evaluate
from ..util.atomic import save_image
from .metrics import EvalResult

if TYPE_CHECKING:
    from .deployed import Comparison, FormEval


def load_for_inference(source: str | os.PathLike | dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Model (eval mode) and checkpoint from a run directory (its best.pt) or a checkpoint file."""
    return model_from_checkpoint(source if isinstance(source, dict) else load_checkpoint(source))


def evaluate_checkpoint(
    source: str | os.PathLike,
    data: str,
    *,
    split: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    worst_n: int = 16,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[EvalResult, Any, dict[str, Any]]:
    """Evaluate a checkpoint on a dataset source (see ``load_dataset``).

    ``split``: "auto" takes the dataset's test split if it has one, else its val folder, else every image;
    or name "test", "val", "train" / "all".  The dataset's class names must be the checkpoint's (same names;
    a dataset with a subset of the classes is fine, its labels are mapped by name).  Returns
    (result, dataset, checkpoint).  Image folders are read through the decode cache unless ``cache`` is off.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("worst_n", worst_n, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    model, ckpt = load_for_inference(source)
    classes = list(ckpt["classes"])
    chans = int(ckpt["preprocessing"].get("in_chans", ckpt["kwargs"].get("in_chans", 3)))
    name, ds = eval_split(data, classes, chans, split, owner="the checkpoint", cache=cache, cache_dir=cache_dir)
    loader = train_eval_loader(ds, ckpt["preprocessing"], batch_size, workers, torch.device("cpu"))
    result = evaluate(model, loader, classes, worst_n=worst_n, paths_by_id=run_paths(ds))
    result.split = name  # type: ignore[attr-defined]
    return result, ds, ckpt


@dataclass
class Evaluation:
    """What ``evaluate_source`` evaluated (a checkpoint in PyTorch or an exported file in its runtime) and the
    files it wrote (empty without ``out``)."""

    form: FormEval
    files: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        """Which model was evaluated, in words (``mobilenet_v2 from runs/x/best.pt``)."""
        form = self.form
        if form.format == "pytorch":
            return f"{form.metadata['arch']} from {form.path}"
        return f"{form.name} ({form.format}, {form.quantize or 'fp32'}) in its runtime"


def evaluate_source(
    source: str | os.PathLike,
    data: str,
    *,
    split: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    worst_n: int = 16,
    threads: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> Evaluation:
    """Evaluate a checkpoint (file or run directory) or an exported file on a dataset source; with ``out``, also
    write eval.json, confusion_matrix.csv / .png, per_class.csv and report.html there (``lightnets eval``).

    An exported file (any suffix but a checkpoint's) runs in its own runtime with its recorded preprocessing and
    ``threads``; a checkpoint in PyTorch, its image folders read through the decode cache unless ``cache`` is
    off.  ``split`` as in ``evaluate_checkpoint``."""
    from .deployed import checkpoint_form, evaluate_deployed, is_exported_file

    if is_exported_file(source):
        form = evaluate_deployed(source, data, split=split, batch_size=batch_size, workers=workers,
                                 worst_n=worst_n, threads=threads)  # fmt: skip
    else:
        form = checkpoint_form(source, data, split=split, batch_size=batch_size, workers=workers, worst_n=worst_n,
                               cache=cache, cache_dir=cache_dir)  # fmt: skip
    evaluation = Evaluation(form)
    if out is not None:
        from .deployed_report import write_eval_dir

        evaluation.files = write_eval_dir(out, form)
    return evaluation


@dataclass
class ComparedForms:
    """What ``compare_source`` measured (the checkpoint beside its exported files) and the files it wrote."""

    comparison: Comparison
    files: dict[str, Path] = field(default_factory=dict)


def compare_source(
    source: str | os.PathLike,
    data: str,
    exported: list[str | os.PathLike],
    *,
    split: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    worst_n: int = 16,
    threads: int | None = None,
    latency_s: float = 1.0,
    out: str | os.PathLike | None = None,
) -> ComparedForms:
    """The checkpoint ``source`` (file or run directory) beside its ``exported`` files on the same images
    (``deployed.compare_deployed``); with ``out``, also write compare.json and compare.html there
    (``lightnets eval --compare``)."""
    from .deployed import compare_deployed, is_exported_file
    from .deployed_report import write_comparison

    if is_exported_file(source):
        raise ValueError(f"--compare needs the run directory or checkpoint first, got the file {source}")
    cmp = compare_deployed(source, data, exported, split=split, batch_size=batch_size, workers=workers,
                           worst_n=worst_n, threads=threads, latency_s=latency_s)  # fmt: skip
    return ComparedForms(cmp, write_comparison(out, cmp) if out is not None else {})


def eval_split(data: str, classes: list[str], in_chans: int, split: str = "auto", owner: str = "the model",
               cache: bool = True, cache_dir: str | os.PathLike | None = None) -> tuple[str, Any]:  # fmt: skip
    """(split name, dataset) of ``data`` to evaluate a model that knows ``classes`` (in its label order).

    ``split`` as in ``evaluate_checkpoint``.  Every class of the data must be one of ``classes`` (``owner``
    names the model in the error); a subset is fine: a relabelled copy maps the data's labels to the model's
    by name, the loaded dataset itself is never changed.
    """
    splits = load_dataset(data, val_fraction=0.0, in_chans=in_chans, cache=cache, cache_dir=cache_dir)
    options = {"test": splits.test, "val": splits.val, "train": splits.train, "all": splits.train}
    if split == "auto":
        name, ds = next((n, d) for n, d in (("test", splits.test), ("val", splits.val), ("all", splits.train)) if d is not None)
    elif split in options:
        name, ds = split, options[split]
        if ds is None:
            raise ValueError(f"{data} has no {split} split (it has: "
                             f"{', '.join(n for n, d in options.items() if d is not None)})")  # fmt: skip
    else:
        raise ValueError(f"split must be auto, test, val, train or all, got {split!r}")
    unknown = [c for c in splits.classes if c not in classes]
    if unknown:
        raise ValueError(f"{data} has classes {owner} does not know: {unknown[:10]} "
                         f"({owner} knows: {classes[:10]}{' ...' if len(classes) > 10 else ''})")  # fmt: skip
    if list(splits.classes) != classes:
        ds = _remap_labels(ds, [classes.index(c) for c in splits.classes], classes)
    if hasattr(ds, "scan"):
        ds.scan(check=True)
    return name, ds


def eval_loader(ds: Any, preprocessing: dict[str, Any], batch_size: int = 64, workers: int = 0) -> Any:
    """Unshuffled CPU batches of ``ds`` preprocessed as ``preprocessing`` says, the same as ``evaluate_checkpoint``
    uses: (images, targets, ids), ids being positions in memory and dataset indices from folders."""
    return train_eval_loader(ds, preprocessing, batch_size, workers, torch.device("cpu"))


def sample_paths(ds: Any) -> list[str] | None:
    """File path by sample id for a folder dataset, None for an in-memory one."""
    return run_paths(ds)


def _remap_labels(ds: Any, mapping: list[int], classes: list[str]) -> Any:
    """A relabelled copy of a dataset whose class list differs from the checkpoint's (matched by name); the
    dataset itself is left as it is (ImageFolder's ``targets`` is derived from ``samples``)."""
    if is_in_memory(ds):
        return type(ds)(ds.images, torch.tensor(mapping)[ds.labels], classes, getattr(ds, "name", ""))
    out = ds.subset(range(len(ds)))
    out.samples = [(p, mapping[t]) for p, t in ds.samples]
    out.classes, out.class_to_idx = list(classes), {c: i for i, c in enumerate(classes)}
    return out


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    names: list[str] | None = None  # what to show for each class in top (``tench (n01440764)``), None: the class

    def named_top(self) -> list[tuple[str, float]]:
        """``top`` with display names (lightnets.data.wordnet) in place of the class ids."""
        names = self.names or [c for c, _ in self.top]
        return [(n, p) for n, (_, p) in zip(names, self.top, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        names = self.names or [c for c, _ in self.top]
        return {"path": self.path, "top": [{"class": c, "name": n, "prob": p}
                                           for n, (c, p) in zip(names, self.top, strict=True)]}  # fmt: skip


@dataclass
class PredictResult:
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": [p.to_dict() for p in self.predictions],
                "errors": [{"path": p, "error": r} for p, r in self.errors]}  # fmt: skip


def expand_inputs(inputs: list[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files from files and directories (recursively); missing paths are returned as errors."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                errors.append((str(path), "directory holds no image files"))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            errors.append((str(path), "no such file or directory"))
    return files, errors


def _open_for_predict(source: str | os.PathLike, engine: str) -> tuple[Any, Any]:
    """(runner or None, source for ``load_for_inference`` or a (model, checkpoint) pair) of what ``predict`` is
    given: an exported file runs in its own runtime (whatever ``engine`` says), a checkpoint in ``engine``."""
    from ..deploy.runtimes import format_for_path

    if format_for_path(source) and Path(source).is_file():
        from ..deploy.to_device import load_exported

        runner, meta = load_exported(source)
        return runner, (None, meta)
    if engine != "eager":
        from ..deploy import load_runner

        runner, model, ckpt = load_runner(source, engine)
        return runner, (model, ckpt)
    return None, source


@torch.no_grad()
def predict(
    source: str | os.PathLike | tuple[nn.Module, dict[str, Any]],
    inputs: list[str | os.PathLike],
    *,
    topk: int = 5,
    batch_size: int = 32,
    runner: Any = None,
    engine: str = "eager",
) -> PredictResult:
    """Top-k classes with probabilities for each image in ``inputs`` (files or directories).

    ``source``: a run directory (its best.pt), a checkpoint file, an exported file (``.onnx``, ``.pte``, ...: run
    in its own runtime with the preprocessing it records), or a (model, checkpoint) pair.  ``engine`` runs a
    checkpoint through one of ``lightnets.deploy``'s engines instead of eager PyTorch; ``runner`` (optional)
    replaces the model's forward outright, e.g. an onnxruntime session wrapper taking and returning tensors.
    Bad images are listed in ``errors`` with the reason; the others are predicted.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if runner is None and isinstance(source, (str, os.PathLike)):
        runner, source = _open_for_predict(source, engine)
    model, ckpt = source if isinstance(source, tuple) else load_for_inference(source)
    classes = list(ckpt["classes"])
    shown = display_names(classes)
    prep = ckpt["preprocessing"]
    transform = eval_transform(prep)
    mode = mode_for_chans(int(prep.get("in_chans", 3)))
    files, errors = expand_inputs(inputs)
    forward = runner or model
    result = PredictResult(errors=errors)
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        logits = forward(torch.stack([t for _, t in batch]))
        probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)
        values, indices = probs.topk(min(topk, len(classes)), dim=1)
        for (path, _), vs, ix in zip(batch, values.tolist(), indices.tolist(), strict=True):
            result.predictions.append(Prediction(str(path), [(classes[i], v) for v, i in zip(vs, ix, strict=True)],
                                                 [shown[i] for i in ix]))  # fmt: skip
        batch.clear()

    for path in files:
        if not is_image_file(path):
            result.errors.append((str(path), "not an image file extension"))
            continue
        try:
            image = load_image(path, mode=mode)
        except ImageReadError as e:
            result.errors.append((str(path), e.reason))
            continue
        batch.append((path, transform(image)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return result


def annotate_predictions(result: PredictResult, out_dir: str | os.PathLike, mode: str = "RGB") -> list[Path]:
    """Write a copy of each predicted image with its top class drawn on (``predict --annotate DIR``)."""
    from .report import annotate_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, pred in enumerate(result.predictions):
        name, prob = pred.named_top()[0]
        image = annotate_image(load_image(pred.path, mode="RGB"), f"{name} ({prob:.1%})")
        dest = out / f"{i:04d}_{Path(pred.path).stem}.png"
        written.append(save_image(image, dest, what="annotated image"))
    return written
