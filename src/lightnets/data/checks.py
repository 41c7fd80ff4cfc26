"""Checks that fail early and say why, before hours are spent on a run that was never going to work.

- ``check_data(root)`` (the ``lightnets check-data DIR`` command) tries every file of an image folder the way
  training would read it and reports everything at once: per class how many files are good and bad, each bad
  file with the reason, and what is wrong with the folder as a whole (an empty class, a single class, a
  symlink loop, a val class that train lacks, one file filed under two classes, ...).
- ``check_model_config(name, kwargs, input_size, batch_size)`` builds the model and pushes one image of that
  size through it, so bad model arguments and inputs too small for the network are refused with a sentence
  naming the value before any data is loaded, not with a traceback from deep inside a layer at the first
  training step.

Both follow the folder rules of ``lightnets.data`` (class = sorted non-hidden subfolder, files found
recursively, symlinks followed but never in a loop, hidden files and unknown extensions ignored), so what
check-data calls good is exactly what training reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import create_model
from ..util.limits import check_fits
from .folders import _dir_key, find_splits
from .images import IMG_EXTENSIONS, check_image, is_image_file
from .preprocessing import mode_for_chans

# =========================================================================== dataset folders


@dataclass
class ClassCount:
    """Files of one class folder: ``good`` ones decode, ``bad`` ones would be skipped by training."""

    # "train" / "val" / "test" in a folder with split subfolders, "" in a plain folder of classes
    split: str
    name: str
    good: int = 0
    bad: int = 0

    @property
    def total(self) -> int:
        return self.good + self.bad


@dataclass
class DataReport:
    """What ``check_data`` found.  ``ok`` is False when any file is bad or anything needs attention."""

    root: str
    full_decode: bool
    classes: list[ClassCount] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files
    warnings: list[str] = field(default_factory=list)  # problems of the folder as a whole
    ignored: list[str] = field(default_factory=list)  # files training never looks at (extension, hidden)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.warnings

    @property
    def good(self) -> int:
        return sum(c.good for c in self.classes)

    @property
    def bad(self) -> int:
        return sum(c.bad for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "full_decode": self.full_decode,
            "ok": self.ok,
            "good": self.good,
            "bad": self.bad,
            "classes": [asdict(c) for c in self.classes],
            "problems": [{"path": p, "reason": r} for p, r in self.problems],
            "warnings": list(self.warnings),
            "ignored": list(self.ignored),
        }

    def to_table(self) -> str:
        """Per-class counts, then every bad file with its reason, then the warnings (text, for the CLI)."""
        splits = any(c.split for c in self.classes)
        width = max([len(_show(c.name)) for c in self.classes] + [5])
        head = (f"{'split':<6} " if splits else "") + f"{'class':<{width}} {'good':>7} {'bad':>7}"
        lines = [
            f"{_show(self.root)}: {'every image decoded' if self.full_decode else 'headers checked'}",
            head,
        ]
        for c in self.classes:
            lines.append(
                (f"{c.split:<6} " if splits else "") + f"{_show(c.name):<{width}} {c.good:>7} {c.bad:>7}"
            )
        lines.append((" " * 7 if splits else "") + f"{'total':<{width}} {self.good:>7} {self.bad:>7}")
        if self.problems:
            lines += ["", f"{len(self.problems)} unreadable file(s), which training skips:"]
            lines += [f"  {_show(p)}: {r}" for p, r in self.problems]
        if self.warnings:
            lines += ["", f"{len(self.warnings)} warning(s):"]
            lines += [f"  {_show(w)}" for w in self.warnings]
        if self.ignored:
            lines += ["", f"{len(self.ignored)} file(s) ignored (hidden, or not an image extension), e.g. "
                      f"{', '.join(_show(Path(p).name) for p in self.ignored[:3])}"]  # fmt: skip
        lines += ["", "OK" if self.ok else "problems found"]
        return "\n".join(lines)


def _show(text: str) -> str:
    # File names that are not valid UTF-8 arrive as surrogate escapes; print their bytes as \xNN instead of
    # letting a strict terminal encoding raise.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _walk(directory: Path, extensions: Sequence[str]) -> tuple[list[Path], list[str], list[Path]]:
    """(image files, warnings, ignored files) below one class folder, found as data.ImageFolder finds them."""
    files: list[Path] = []
    ignored: list[Path] = []
    warnings: list[str] = []
    real = directory.resolve()
    seen = {k for k in map(_dir_key, real.parents) if k is not None}

    def unreadable(e: OSError) -> None:
        warnings.append(f"cannot list folder {e.filename}: {e.strerror or e}; its files are not used")

    for dirpath, dirnames, filenames in os.walk(directory, onerror=unreadable, followlinks=True):
        key = _dir_key(dirpath)
        if key is None or key in seen:
            warnings.append(
                f"symlink loop: {dirpath} leads back to {os.path.realpath(dirpath)} (a folder above it or "
                "already walked); not followed"
            )
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            (files if is_image_file(name, extensions) else ignored).append(Path(dirpath) / name)
    return files, warnings, ignored


def _class_dirs(root: Path, split: str, report: DataReport) -> list[tuple[str, Path]]:
    where = f"{split} folder {root}" if split else str(root)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        report.warnings.append(f"cannot list {where}: {e.strerror or e}")
        return []
    dirs, loose = [], []
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            dirs.append((e.name, Path(e.path)))
        elif is_image_file(e.name):
            loose.append(e.name)
    if loose:
        report.warnings.append(
            f"{len(loose)} image file(s) directly in {where} (e.g. {loose[0]}) are in no class folder and are "
            "not used; move them into root/<class>/"
        )
    if not dirs:
        report.warnings.append(f"{where} has no class subfolders (expected {root}/<class>/<image files>)")
    return dirs


def check_data(
    root: str | os.PathLike,
    *,
    full_decode: bool = True,
    in_chans: int = 3,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    workers: int = 0,
) -> DataReport:
    """Check every file of the image folder ``root`` (root/<class>/..., or root/train|val|test/<class>/...).

    ``full_decode`` decodes each image completely, as training will (slower; finds truncated data anywhere);
    without it, data.check_image's cheaper check (headers and PNG checksums; JPEGs without their end marker
    and GIF / BMP / TIFF files are still decoded in full).
    ``in_chans`` picks the mode images are converted to (3: RGB, 1: grayscale).  ``workers`` > 0 decodes in
    that many threads (Pillow releases the GIL while decoding).  Raises FileNotFoundError / NotADirectoryError
    for a missing root; everything else is reported, never raised.
    """
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"no such folder: {root_path}")
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a folder: {root_path}")
    mode = mode_for_chans(in_chans)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    report = DataReport(root=str(root_path), full_decode=full_decode)
    layout = find_splits(root_path) or {"": root_path}

    jobs: list[tuple[ClassCount, Path]] = []
    names_by_split: dict[str, list[str]] = {}
    for split, split_root in layout.items():
        names_by_split[split] = []
        for name, class_dir in _class_dirs(split_root, split, report):
            files, warnings, ignored = _walk(class_dir, extensions)
            count = ClassCount(split, name)
            report.classes.append(count)
            report.warnings += warnings
            report.ignored += [str(p) for p in ignored]
            names_by_split[split].append(name)
            jobs += [(count, p) for p in files]

    def check(path: Path) -> str | None:
        return check_image(path, full_decode=full_decode, mode=mode)

    if workers > 0:
        with ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(check, [p for _, p in jobs]))
    else:
        reasons = [check(p) for _, p in jobs]
    for (count, path), reason in zip(jobs, reasons, strict=True):
        if reason is None:
            count.good += 1
        else:
            count.bad += 1
            report.problems.append((str(path), reason))

    _folder_warnings(report, jobs, reasons, names_by_split)
    return report


def _folder_warnings(
    report: DataReport,
    jobs: list[tuple[ClassCount, Path]],
    reasons: list[str | None],
    names_by_split: dict[str, list[str]],
) -> None:
    for c in report.classes:
        where = f"{c.split} class" if c.split else "class"
        if c.total == 0:
            report.warnings.append(f"{where} {c.name!r} is empty (no image files): the model would get a class "
                                   "it never sees")  # fmt: skip
        elif c.good == 0:
            report.warnings.append(f"{where} {c.name!r} has no readable image (all {c.bad} are bad)")
    train_split = "train" if "train" in names_by_split else ""
    train_names = names_by_split.get(train_split, [])
    if len(train_names) == 1:
        report.warnings.append(
            f"only one class ({train_names[0]!r}): a classifier needs at least two, every prediction would be it"
        )
    for split, names in names_by_split.items():
        unknown = sorted(set(names) - set(train_names))
        if split != train_split and unknown:
            report.warnings.append(
                f"{split} has class folders that train lacks: {unknown}; training refuses this"
            )
    # the same file reached under two classes (a symlink, a hard link) teaches the model two labels for it
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    for (count, path), reason in zip(jobs, reasons, strict=True):
        key = _dir_key(path) if reason is None else None
        if key is None:
            continue
        label = (count.split, count.name)
        first = owner.setdefault(key, label)
        if first != label:
            a = f"{first[0]}/{first[1]}" if first[0] else first[1]
            b = f"{label[0]}/{label[1]}" if label[0] else label[1]
            report.warnings.append(
                f"{path} is the same file as one in {a!r} (filed under both {a!r} and {b!r})"
            )


# =========================================================================== model configuration


def check_model_config(
    name: str,
    model_kwargs: Mapping[str, Any] | None = None,
    input_size: int | Sequence[int] | None = None,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> None:
    """Refuse, with a ValueError naming the value, a model configuration that cannot train.

    An input size whose activations cannot fit in the memory of ``device`` is refused first, from an estimate
    at a small size (``limits.check_fits``), before anything that large is allocated.

    The model is built (so bad keyword arguments fail here, including ones that only overflow deep inside a
    builder).  With ``input_size`` (an int or (H, W)), one image of that size goes through it in eval mode,
    which refuses an input too small for the network, and the BatchNorm layers report the feature maps they
    would normalise: a training batch of ``batch_size`` whose smallest map leaves a single value per channel
    (e.g. a 1x1 map in batches of one) is refused too, instead of failing at the first training step.

    (An eval-mode pass of one real image costs about what a training step does; building and running the model
    on PyTorch's meta device instead costs a second of one-time set-up per process.)
    """
    kwargs = dict(model_kwargs or {})
    try:
        model = create_model(name, **kwargs)
    except (TypeError, ArithmeticError) as e:  # e.g. width_mult=inf overflows a channel count
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"bad arguments for model {name!r} ({shown}): {type(e).__name__}: {e}") from None
    if input_size is None:
        return
    h, w = (
        (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    )
    if h <= 0 or w <= 0:
        raise ValueError(f"input size must be positive, got {h}x{w}")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    in_chans = int(kwargs.get("in_chans", 3))
    check_fits(model, (h, w), batch_size, in_chans=in_chans, training=True, device=device)
    smallest = _smallest_norm_map(model, name, h, w, in_chans)
    if smallest is not None:
        values, layer, shape = smallest
        if batch_size * values < 2:
            raise ValueError(
                f"{name} cannot train on {h}x{w} images in batches of {batch_size}: BatchNorm layer {layer!r} would "
                f"normalise a {'x'.join(map(str, shape[1:])) or '1'} map, a single value per channel; use a larger "
                "--input-size or --batch-size, or --small-input"
            )


def _smallest_norm_map(
    model: nn.Module, name: str, h: int, w: int, in_chans: int
) -> tuple[int, str, tuple[int, ...]] | None:
    """One eval-mode pass of an h x w image: (values per channel, layer name, input shape) of the BatchNorm layer
    that normalises the smallest feature map, None without BatchNorm; a ValueError when the input is too small."""
    maps: list[tuple[int, str, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda _, args, n=n: maps.append((math.prod(args[0].shape[2:]), n, tuple(args[0].shape[1:])))
        )
        for n, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    x = torch.zeros(1, in_chans, h, w)
    try:
        with torch.no_grad():
            model.eval()(x)
    except (RuntimeError, ValueError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"input size {h}x{w} is too small for {name} ({detail}); use a larger --input-size"
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    return min(maps) if maps else None
