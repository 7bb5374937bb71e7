"""What the `stream-rec` argument modules share: the one-line-error parser, argument types, the
settings flags, and the data-set flags of several commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NoReturn

from .settings import Settings, env_name

__all__ = ["CliParser", "settings_from"]

# The standard two-file splits (stream_rec.datasets.splits.STANDARD_DATASETS, spelled out here so
# that --help loads no data code).
_SPLITS = ("diginetica", "nowplaying", "sessions")

class CliParser(argparse.ArgumentParser):
    """argparse, but a bad argument gets ONE line: what is wrong and what is expected."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check it; one message for both failures."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
_positive_float = _number(float, lambda v: v > 0, "a number > 0")


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1; got {text!r}")
    return value


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """One flag per Settings field, documented with its env var; unset flags stay None."""
    group = parser.add_argument_group("settings (flag > environment variable > default)")
    by_name = {f.name: f for f in fields(Settings)}
    for name in names:
        f = by_name[name]
        flag = "--" + name.replace("_", "-")
        help_ = f"{f.metadata['help']} [env: {env_name(name)}] (default: {f.default!r})"
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        if typ == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        conv: Any = {"int": int, "float": float}.get(typ, str)
        kw: dict[str, Any] = {"type": conv, "default": None, "help": help_}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kw)


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings, overridden by the settings flags given (unset flags are None)."""
    names = {f.name for f in fields(Settings)}
    return Settings.from_env(**{k: v for k, v in vars(args).items() if k in names})


def _add_generator_args(p: argparse.ArgumentParser, *, users: int, items: int) -> None:
    p.add_argument("--users", type=_positive_int, default=users, help=f"generated shoppers (default {users})")
    p.add_argument("--items", type=_positive_int, default=items, help=f"generated catalogue size (default {items})")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated shoppers (the catalogue is fixed; default 7)")


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-item-count", type=_positive_int, default=5,
                   help="--dataset events: drop items seen fewer times (default 5)")
    p.add_argument("--test-days", type=_non_negative_float, default=7.0,
                   help="--dataset events: sessions of the last N days are the test set (default 7)")
