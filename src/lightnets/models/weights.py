"""Reading weight files safely and loading them strictly into a model.

Files are read without executing code: ``.safetensors`` through the safetensors library, anything else with
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain containers.
URLs are fetched into torch.hub's cache and must match a sha256 (given, or torch.hub's hash-in-filename
convention ``name-<hex prefix>.pth``) unless the caller opts out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

log = logging.getLogger(__name__)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


class WeightsError(ValueError):
    """A weights file that cannot be read, or does not fit the model."""


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_url(source: str) -> bool:
    return urlparse(str(source)).scheme in {"http", "https", "file", "ftp"}


def fetch_url(url: str, sha256: str | None = None, allow_unverified: bool = False) -> Path:
    """Download ``url`` into torch.hub's checkpoint cache (once) and verify its sha256.

    The expected hash is ``sha256`` if given, else the hex prefix in the file name (torch.hub's convention).
    Without either, the download is refused unless ``allow_unverified=True``.
    """
    filename = os.path.basename(urlparse(url).path) or "weights.pth"
    expected = sha256.lower() if sha256 else None
    if expected is None:
        m = _HASH_IN_NAME.search(filename)
        expected = m.group(1) if m else None
    if expected is None and not allow_unverified:
        raise WeightsError(
            f"refusing to load {url}: no sha256 to check it against. Pass weights_sha256=... "
            "(--weights-sha256), or allow_unverified=True (--allow-unverified-weights) if you trust the source."
        )
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / filename
    if not dest.exists():
        # download_url_to_file writes to a temporary file and renames it, so a failed download leaves nothing
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=None, progress=False)
    if expected is not None:
        actual = sha256_of(dest)
        if not actual.startswith(expected):
            dest.unlink(missing_ok=True)
            raise WeightsError(f"sha256 mismatch for {url}: expected {expected}..., got {actual}")
    return dest


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from a ``.safetensors`` or PyTorch file without executing any code.

    A full lightnets checkpoint (a dict with a ``"model"`` state_dict) is accepted too.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"weights path is a directory, not a file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"cannot read safetensors file {path}: {e}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # weights_only refuses arbitrary pickled objects instead of running them; say so plainly
        raise WeightsError(
            f"cannot read weights file {path} safely: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            " (files are loaded with weights_only=True; a file that needs arbitrary code is refused)"
        ) from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return dict(obj)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], ignore_prefix: str | None = None) -> dict[str, list]:
    """Compare ``state`` against ``model``'s keys and shapes: missing, unexpected and mismatched keys."""
    own = model.state_dict()

    def skip(key: str) -> bool:
        return ignore_prefix is not None and key.startswith(ignore_prefix + ".")

    missing = [k for k in own if k not in state and not skip(k)]
    unexpected = [k for k in state if k not in own and not skip(k)]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in state
        if k in own and not skip(k) and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def _format_problems(problems: dict[str, list], limit: int = 10) -> str:
    parts = []
    for kind, items in problems.items():
        if not items:
            continue
        if kind == "mismatched":
            shown = [f"{k} (file {a}, model {b})" for k, a, b in items[:limit]]
        else:
            shown = list(items[:limit])
        more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
        parts.append(f"{len(items)} {kind}: {', '.join(shown)}{more}")
    return "; ".join(parts)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state_dict") -> dict[str, Any]:
    """Load ``state`` into ``model`` strictly, replacing a classifier of a different class count.

    Returns what happened (``replaced_classifier``: the classifier keys kept from the fresh model).
    """
    head_name = model.classifier_name() if hasattr(model, "classifier_name") else None
    problems = check_state_dict(model, state)
    replaced: list[str] = []
    if head_name is not None:
        prefix = head_name + "."
        head_keys = {k for k in model.state_dict() if k.startswith(prefix)}
        head_mismatch = [m for m in problems["mismatched"] if m[0] in head_keys]
        # An identity head (num_classes=0) has no keys: the file's head keys are then simply unused.
        head_unexpected = [k for k in problems["unexpected"] if k.startswith(prefix)] if not head_keys else []
        if head_mismatch or head_unexpected:
            replaced = sorted({m[0] for m in head_mismatch} | set(head_unexpected))
            problems["mismatched"] = [m for m in problems["mismatched"] if m[0] not in head_keys]
            problems["unexpected"] = [k for k in problems["unexpected"] if k not in head_unexpected]
    if any(problems.values()):
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {_format_problems(problems)}")
    to_load = {k: v for k, v in state.items() if k not in replaced}
    model.load_state_dict(to_load, strict=not replaced)
    if replaced:
        msg = (
            f"{source}: classifier '{head_name}' has a different class count in the file "
            f"({', '.join(f'{k} {tuple(state[k].shape)}' for k in replaced)}); kept the freshly initialised one"
        )
        warnings.warn(msg, stacklevel=3)
        log.info(msg)
    return {"replaced_classifier": replaced}


def load_pretrained(
    model: nn.Module, source: str | os.PathLike, sha256: str | None = None, allow_unverified: bool = False
) -> dict[str, Any]:
    """Load a weights file or URL into ``model`` (see ``load_into`` for the rules)."""
    source = str(source)
    if is_url(source):
        path = fetch_url(source, sha256=sha256, allow_unverified=allow_unverified)
    else:
        path = Path(source).expanduser()
        if sha256 is not None:
            actual = sha256_of(path) if path.exists() else None
            if actual is not None and not actual.startswith(sha256.lower()):
                raise WeightsError(f"sha256 mismatch for {path}: expected {sha256}..., got {actual}")
    state = read_state_dict(path)
    return load_into(model, state, source=str(source))
