"""Human-readable names for class folders named by ImageNet WordNet ids (``n01440764`` -> ``tench``).

ImageNet-style folders name each class by its WordNet synset id, which means nothing to a reader of a report.
The package ships the 1000 ImageNet-1k synsets (``resources/imagenet_classes.tsv``: wnid, first WordNet lemma,
all lemmas; public facts from WordNet, in the standard index order of sorted wnids), so reports and predictions
can show ``tench (n01440764)``.  Class ids stored in checkpoints stay the folder names: display only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from ..evaluation.metrics import EvalResult

_WNID = re.compile(r"n\d{8}")


@lru_cache(maxsize=1)
def imagenet_names() -> dict[str, str]:
    """wnid -> short name (the synset's first lemma) for the 1000 ImageNet-1k classes, in index order."""
    text = resources.files("lightnets.data").joinpath("resources/imagenet_classes.tsv").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            wnid, name, _ = line.split("\t", 2)
            out[wnid] = name
    return out


def is_wnid(name: str) -> bool:
    """Whether ``name`` is a WordNet synset id (``n`` and eight digits)."""
    return _WNID.fullmatch(name) is not None


def display_name(name: str) -> str:
    """``tench (n01440764)`` for a known ImageNet wnid, ``name`` unchanged otherwise."""
    if not is_wnid(name):
        return name
    human = imagenet_names().get(name)
    return f"{human} ({name})" if human else name


def display_names(classes: Sequence[str]) -> list[str]:
    """The class names to show: human names with the wnid when *every* class is a wnid (an ImageNet-style
    folder), else the names unchanged, so a folder that merely has one class called like a wnid keeps its names."""
    names = [str(c) for c in classes]
    if names and all(is_wnid(c) for c in names):
        return [display_name(c) for c in names]
    return names


def readable_result(result: EvalResult) -> EvalResult:
    """A copy of an evaluation whose class names (and per-class rows) are the display names, for reports."""
    names = display_names(result.class_names)
    if names == list(result.class_names):
        return result
    rows = [
        {**r, "class": names[r["index"]]} if r.get("kind") == "class" else dict(r) for r in result.per_class
    ]
    return dataclasses.replace(result, class_names=names, per_class=rows)
