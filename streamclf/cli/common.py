"""What every command of the CLI shares: the exit codes, the backend and precision choices,
help texts that show their default, deprecated flag spellings, and the parser class (usage
errors in one line, with a "did you mean" for a misspelled flag, command or choice).

Light: importing it loads no heavy library (the choices come from the backend factory,
which loads its backends only when one is built).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, NoReturn

from streamclf.engine.backends.factory import BACKENDS, PRECISIONS
from streamclf.errors import ConfigError

__all__ = ["BACKENDS", "PRECISIONS", "SETUP_LOGGER", "Deprecated", "ExitCode", "Parser",
           "add_data_argument", "resolve_data", "selected_parser", "with_default"]

#: The logger of the one-off set-up steps of a first run (ONNX export, OpenVINO
#: conversion, timing the backends for ``--backend auto``): shown on stderr by default.
SETUP_LOGGER = "streamclf.setup"


class ExitCode(IntEnum):
    """The exit status of every ``streamclf`` command."""

    OK = 0
    #: A user error (one line on stderr), or a run whose every file/stream failed.
    ERROR = 1
    #: A command line argparse rejects (unknown flag, bad choice, missing argument).
    USAGE = 2
    #: Ctrl-C / SIGTERM before the command could end cleanly (128 + SIGINT).
    INTERRUPTED = 130


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (list, tuple)):
        return " ".join(map(str, default))
    return str(default)


def with_default(text: str, default: Any) -> str:
    """``text`` plus `` (default X)``, unless ``text`` already says its default (no
    "(default ...)" twice) or there is none (``None``, ``False``)."""
    if default is None or default is False or "default" in text:
        return text
    return f"{text} (default {_shown(default)})"


class Deprecated(argparse.Action):
    """An old spelling of a flag: hidden from the help, still accepted, with a one-line
    warning naming the new one (``use``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, use: str,
                 **kwargs: Any) -> None:
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"streamclf: warning: {option_string} is deprecated; use {self.use}",
              file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def add_data_argument(parser: argparse.ArgumentParser, text: str) -> None:
    """The dataset of ``evaluate`` and ``train``, taken the same way: ``DATA`` (``--data
    DATA`` is accepted too, hidden); :func:`resolve_data` reconciles the two."""
    parser.add_argument("data", nargs="?", default=None, metavar="DATA", help=text)
    parser.add_argument("--data", dest="data_flag", default=None, help=argparse.SUPPRESS)


def resolve_data(args: argparse.Namespace) -> str:
    """``args.data`` from ``DATA`` or ``--data``; raises ConfigError when neither or two
    different ones are given."""
    given = {d for d in (args.data, getattr(args, "data_flag", None)) if d is not None}
    if len(given) > 1:
        raise ConfigError(f"two datasets given ({' and '.join(sorted(given))}); give one DATA")
    if not given:
        raise ConfigError("no dataset: give DATA (a folder or a CSV file)")
    args.data = given.pop()
    return str(args.data)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def selected_parser(parser: argparse.ArgumentParser,
                    namespace: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)sub-command parser that ``namespace`` was parsed with."""
    while True:
        sub = _subparsers(parser)
        name = getattr(namespace, sub.dest, None) if sub is not None else None
        if sub is None or name not in sub.choices:
            return parser
        parser = sub.choices[name]


def _option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions if a.help is not argparse.SUPPRESS
            for s in a.option_strings if s.startswith("--")]


def _close(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the choice closest to ``word`` (or that it begins), or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6) or [
        c for c in choices if word and c.startswith(word)][:1]
    return f"; did you mean {close[0]}?" if close else ""


def _unrecognized(extras: Sequence[str], parser: argparse.ArgumentParser) -> str:
    hint = ""
    for token in extras:
        if token.startswith("-") and not hint:
            hint = _close(token.split("=", 1)[0], _option_names(parser))
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


_INVALID_CHOICE = re.compile(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)$")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2)
    naming the command, with a "did you mean" for a misspelled flag, sub-command or
    choice. Sub-parsers made by ``add_subparsers()`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2)) or [
                c.strip() for c in match.group(2).split(",")]
            message += _close(match.group(1), choices)
        self.exit(ExitCode.USAGE,
                  f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> argparse.Namespace:
        """As ``ArgumentParser.parse_args``; unknown flags are reported by the sub-command
        they were given to, with the closest flag it has."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            target = selected_parser(self, parsed)
            target.error(_unrecognized(extras, target))
        return parsed
