"""The ``lightnets train`` options, generated from ``TrainConfig`` (the one source of every training setting).

Each dataclass field becomes one option: ``max_train_samples`` -> ``--max-train-samples``, its type, default and
(for a ``Literal`` type) its choices from the field, its help text from the comment on the field's line in the
class's source.  Booleans follow one rule: default False -> ``--x``; default True -> ``--no-x`` (its help says
"turn off:" before the comment); default None -> ``--x / --no-x``.  What a field's name and type cannot say (a
shorter flag, choices of a ``str`` field, a dict typed as repeated ``key=value``) is in ``SPELLING``, a small
table that never repeats a default or a help text.  A new field therefore needs no CLI edit, unless its type has
no spelling yet: then building the parser fails naming the field, and a test says so first.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .common import model_kwargs


@dataclass(frozen=True)
class Spelling:
    """How the CLI spells a field where its name and type are not enough (only the parts that differ)."""

    flag: str | None = None  # the option's name, when it is not --field-name
    metavar: str | None = None
    choices: tuple[str, ...] | None = None  # a str field with a fixed set of values
    append: bool = False  # repeated option, one item each
    to_field: Callable[[Any], Any] | None = None  # parsed value -> field value


SPELLING: dict[str, Spelling] = {
    "ema_decay": Spelling(flag="--ema", metavar="DECAY"),
    "allow_unverified": Spelling(flag="--allow-unverified-weights"),
    "model_args": Spelling(flag="--model-arg", metavar="KEY=VALUE", append=True, to_field=model_kwargs),
    "optimizer": Spelling(choices=("sgd", "adamw")),
    "amp": Spelling(choices=("auto", "off", "bf16", "fp16")),
    "channels_last": Spelling(choices=("auto", "on", "off")),
}

# fields with no option, and why (none today: every setting of a run can be typed)
EXCLUDED: dict[str, str] = {}


@dataclass(frozen=True)
class TrainOption:
    """One generated option: the config field it sets, its flag, the ``add_argument`` keywords."""

    field: str
    flag: str
    kwargs: dict[str, Any]
    to_field: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flag.lstrip("-").replace("-", "_")

    def value(self, parsed: Any) -> Any:
        """The config value of what argparse parsed for this option."""
        return self.to_field(parsed) if self.to_field else parsed


def field_comments(cls: type) -> dict[str, str]:
    """The comment of each annotated field of ``cls``: the one ending its line, else the comment lines right
    above it.  Read from the class's own source (wherever the class lives)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT and not tok.string.lstrip("# ").startswith(("fmt:", "noqa", "type:"))}  # fmt: skip
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.end_lineno or node.lineno)
        if text is None:
            above, line = [], node.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above) or None
        if text:
            out[node.target.id] = text
    return out


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; a plain type as it is; None for a union of several types."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return hint


def _option(f: dataclasses.Field, hint: Any, help_text: str | None) -> TrainOption:
    """The option of one field: its spelling from the table, everything else from the field."""
    spell = SPELLING.get(f.name, Spelling())
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    flag = spell.flag or "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"help": help_text.replace("%", "%%") if help_text else None}
    if spell.metavar:
        kw["metavar"] = spell.metavar
    base = _base_type(hint)
    if spell.append:
        kw.update(action="append", default=None)
    elif base is bool and default is None:
        kw.update(action=argparse.BooleanOptionalAction, default=None)
    elif base is bool and default is True and not spell.flag:
        flag, kw = "--no-" + f.name.replace("_", "-"), {**kw, "action": "store_false", "dest": f.name}
        kw["help"] = f"turn off: {kw['help']}" if kw["help"] else None  # the comment describes the setting on
    elif base is bool:
        kw["action"] = "store_true"
    elif typing.get_origin(base) is typing.Literal or spell.choices:
        choices = spell.choices or typing.get_args(base)
        kw.update(choices=list(choices), type=type(choices[0]), default=default)
    elif base in (int, float, str):
        kw.update(type=base, default=default)
    else:
        raise TypeError(f"TrainConfig.{f.name} ({hint}) has no command-line spelling: add it to "
                        "lightnets.cli.train_options.SPELLING (or EXCLUDED, with the reason)")  # fmt: skip
    return TrainOption(f.name, flag, kw, spell.to_field)


@functools.cache
def train_options() -> tuple[TrainOption, ...]:
    """One option per ``TrainConfig`` field (except ``EXCLUDED``), in the order of the fields."""
    from ..train import TrainConfig

    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    comments = field_comments(TrainConfig)
    return tuple(_option(f, hints[f.name], comments.get(f.name))
                 for f in dataclasses.fields(TrainConfig) if f.name not in EXCLUDED)  # fmt: skip


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every generated option on ``parser``."""
    for opt in train_options():
        parser.add_argument(opt.flag, **opt.kwargs)


def renamed_dests() -> dict[str, str]:
    """Options whose argparse destination is not the field's name: destination -> field."""
    return {o.dest: o.field for o in train_options() if o.dest != o.field}


def config_values(args: argparse.Namespace, only: set[str] | None = None) -> dict[str, Any]:
    """``TrainConfig`` keywords from parsed arguments: every field, or only those whose option is in ``only``
    (the destinations actually typed)."""
    return {o.field: o.value(getattr(args, o.dest)) for o in train_options() if only is None or o.dest in only}
