"""The command line's parser, fast: every command is there, every ``TrainConfig`` field is a ``train`` option
with the field's default and comment (generated, one source of truth), bad arguments exit 2 with one error line
and no traceback, and ``python -m lightnets.cli --help`` runs."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from lightnets import cli
from lightnets.cli import train_options
from lightnets.cli.common import REGISTRY
from lightnets.cli.train import resume_overrides
from lightnets.train import TrainConfig

EVERY_COMMAND = {"models", "profile", "train", "eval", "predict", "demo", "export", "convert", "check-data", "bench",
                 "guidelines"}  # fmt: skip


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def test_every_command_is_registered_and_parsed() -> None:
    assert set(cli.ORDER) == set(REGISTRY) == set(cli.COMMANDS) == EVERY_COMMAND
    assert list(_subparsers(cli.build_parser())) == list(cli.ORDER)
    for name, cmd in REGISTRY.items():
        assert cmd.help and cli.COMMANDS[name] is cmd.run


def test_every_train_field_is_an_option_of_train_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    flags = {o.field: o.flag for o in train_options.train_options()}
    for f in dataclasses.fields(TrainConfig):
        if f.name in train_options.EXCLUDED:
            assert train_options.EXCLUDED[f.name].strip(), f"{f.name}: excluded without a reason"
            continue
        assert f"{flags[f.name]} " in text or f"{flags[f.name]}\n" in text, f"TrainConfig.{f.name}: no {flags[f.name]}"
    assert set(train_options.EXCLUDED) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert "--track-test" in text and "--resume RUN_DIR" in text


def test_train_defaults_are_the_fields_defaults() -> None:
    args = cli.build_parser().parse_args(["train"])
    values = train_options.config_values(args)
    assert values == {f.name: _default(f) for f in dataclasses.fields(TrainConfig) if f.name not in train_options.EXCLUDED}
    assert TrainConfig(**values) == TrainConfig()
    for opt in train_options.train_options():  # the parser's own default too, where no conversion stands between
        if opt.to_field is None:
            assert getattr(args, opt.dest) == getattr(TrainConfig(), opt.field), opt.flag


def test_train_help_is_the_field_comments() -> None:
    comments = train_options.field_comments(TrainConfig)
    assert comments["max_train_samples"].startswith("an evenly spaced subset")
    for opt in train_options.train_options():
        expected = comments.get(opt.field)
        if expected and opt.flag.startswith("--no-") and opt.kwargs.get("action") == "store_false":
            expected = f"turn off: {expected}"  # a --no-x option switches off what the comment describes
        assert opt.kwargs["help"] == (expected.replace("%", "%%") if expected else None), opt.flag


def test_typed_values_reach_the_config() -> None:
    argv = ["train", "--model", "shufflenet_v2_x0_5", "--data", "digits", "--ema", "0.9", "--model-arg", "width_mult=0.5",
            "--no-progress", "--track-test", "--lp-ft", "--no-bn-eval", "--allow-unverified-weights", "--amp", "off",
            "--max-train-samples", "7", "--no-cache"]  # fmt: skip
    values = train_options.config_values(cli.build_parser().parse_args(argv))
    expected = dict(model="shufflenet_v2_x0_5", ema_decay=0.9, model_args={"width_mult": 0.5}, progress=False,
                    track_test=True, lp_ft=True, bn_eval=False, allow_unverified=True, amp="off", max_train_samples=7,
                    no_cache=True)  # fmt: skip
    assert {k: values[k] for k in expected} == expected
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--optimizer", "adam"])  # choices from the spelling table


def test_resume_overrides_are_only_the_typed_settings_by_field() -> None:
    argv = ["train", "--resume", "runs/x", "--epochs", "12", "--ema", "0.5", "--no-progress", "--model-arg", "a=1"]
    args = cli.build_parser().parse_args(argv)
    args.given = cli._given_dests(argv)
    assert resume_overrides(args) == {"epochs": 12, "ema_decay": 0.5, "progress": False, "model_args": {"a": 1}}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert cli._TRAIN_FIELDS and set(cli._TRAIN_FIELDS.values()) <= fields
    assert cli._TRAIN_FIELDS["ema"] == "ema_decay" and cli._TRAIN_FIELDS["model_arg"] == "model_args"


@dataclass
class _Toy:
    """A config to read comments from."""

    plain: int = 1
    trailing: str = "x"  # the trailing comment
    # the comment above,
    # on two lines
    above: float = 0.5
    skipped: int = 2  # fmt: skip
    mode: Literal["a", "b"] = "a"  # one of two
    flag: bool = True  # on unless --no-flag
    table: dict[str, int] = field(default_factory=dict)  # no spelling for this


def test_field_comments_trailing_above_and_none() -> None:
    assert train_options.field_comments(_Toy) == {"trailing": "the trailing comment",
                                                  "above": "the comment above, on two lines", "mode": "one of two",
                                                  "flag": "on unless --no-flag", "table": "no spelling for this"}  # fmt: skip


def test_options_from_types_literal_no_flag_and_unspellable() -> None:
    hints = typing.get_type_hints(_Toy)
    by_name = {f.name: f for f in dataclasses.fields(_Toy)}
    mode = train_options._option(by_name["mode"], hints["mode"], "one of two")
    assert mode.flag == "--mode" and mode.kwargs["choices"] == ["a", "b"] and mode.kwargs["default"] == "a"
    flag = train_options._option(by_name["flag"], hints["flag"], None)
    assert flag.flag == "--no-flag" and flag.kwargs["action"] == "store_false" and flag.dest == "flag"
    with pytest.raises(TypeError, match="_Toy|table"):
        train_options._option(by_name["table"], hints["table"], None)


def test_percent_in_a_comment_is_escaped_for_argparse() -> None:
    opt = train_options._option(dataclasses.fields(_Toy)[0], int, "about 10% of it")
    p = argparse.ArgumentParser()
    p.add_argument(opt.flag, **opt.kwargs)
    assert "about 10% of it" in p.format_help()


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--epochs", "x"], "lightnets train: error: argument --epochs: invalid int value: 'x'"),
    (["nosuch"], "lightnets: error: argument COMMAND: invalid choice: 'nosuch'"),
    (["predict", "run"], "lightnets predict: error: the following arguments are required: images"),
    (["profile", "mobilenet_v2", "--input-size", "0x3"], "lightnets profile: error: argument --input-size: "),
])  # fmt: skip
def test_bad_arguments_exit_2_with_one_error_line(argv: list[str], expected: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(expected), err
    assert err.splitlines()[-1] == errors[0] and "Traceback" not in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["train"], "lightnets train: error: train needs --model and --data (or --resume RUN_DIR)"),
    (["train", "--model", "mobilenet_v2"], "lightnets train: error: train needs --model and --data"),
    (["models", "no_such_net*"], "lightnets models: error: no registered model matches 'no_such_net*'"),
    (["train", "--model", "x", "--data", "digits"], "lightnets train: error: unknown model 'x'"),
])  # fmt: skip
def test_bad_values_return_2_with_exactly_one_line(argv: list[str], expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), captured.err
    assert captured.out == ""


def test_python_m_lightnets_cli_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "lightnets.cli", "--help"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lightnets") and all(name in proc.stdout for name in EVERY_COMMAND)
