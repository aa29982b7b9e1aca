"""Command-line flags generated from the config schema (:mod:`streamclf.config`), so each
key is declared once and means the same in every command.

A field becomes ``--kebab-name`` (or its ``flag`` metadata; ``flag=None``: no flag), with
its help text, its choices and its default in the help. Flags default to None ("not
given"), so a YAML config's value stands unless the flag is passed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from streamclf.config import RunConfig, StreamConfig

__all__ = ["add_config_flags", "config_overrides"]


def _flag(f: dataclasses.Field[Any]) -> str | None:
    if "flag" in f.metadata:
        flag: str | None = f.metadata["flag"]
        return flag
    return "--" + f.name.replace("_", "-")


def _schema_fields(only: Iterable[str] | None) -> list[dataclasses.Field[Any]]:
    wanted = None if only is None else set(only)
    out = []
    for cls in (RunConfig, StreamConfig):
        for f in dataclasses.fields(cls):
            if f.name == "streams" or _flag(f) is None:
                continue
            if wanted is None or f.name in wanted:
                out.append(f)
    return out


def add_config_flags(parser: argparse.ArgumentParser, only: Iterable[str] | None = None,
                     defaults: dict[str, Any] | None = None) -> None:
    """Add a flag for each config key (or just ``only``); ``defaults`` overrides the default
    shown in the help (e.g. ``quiet`` on for ``serve``)."""
    for f in _schema_fields(only):
        flag = _flag(f)
        assert flag is not None
        kind = str(f.type)
        default = (defaults or {}).get(f.name, f.default)
        shown = "unset" if default is None else str(default).lower() if isinstance(
            default, bool) else default
        text = f"{f.metadata.get('help', '')} (default {shown})"
        if "bool" in kind:
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=text)
            continue
        conv: Any = float if "float" in kind else int if "int" in kind else str
        kwargs: dict[str, Any] = {"dest": f.name, "type": conv, "default": None, "help": text}
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
        else:
            kwargs["metavar"] = "S" if f.name.endswith("_s") else f.name.upper()
        parser.add_argument(flag, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (``None``: not given)."""
    return {f.name: getattr(args, f.name) for f in _schema_fields(None) if hasattr(args, f.name)}
