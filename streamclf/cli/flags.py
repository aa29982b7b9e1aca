"""Command-line flags generated from the config schema (:mod:`streamclf.config`), so each
key is declared once and means the same in every command.

A field becomes ``--kebab-name`` (or its ``flag`` metadata; ``flag=None``: no flag), with
its help text, its choices and its default in the help.

* :func:`add_config_flags` (``run``, ``serve``): flags default to None ("not given"), so a
  YAML config's value stands unless the flag is passed.
* :func:`add_model_flags` (``classify``, ``evaluate``, ``demo``, ``export``, ``train``):
  the model flags with their real defaults, for the commands without a config file.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from streamclf.cli.common import with_default
from streamclf.config import RunConfig, StreamConfig

__all__ = ["MODEL_KEYS", "add_config_flags", "add_model_flags", "config_overrides"]

#: The keys that choose and run the model, in the order the help lists them.
MODEL_KEYS = ("model", "weights", "device", "backend", "precision", "classmap", "topk")


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


def _shown(default: Any) -> Any:
    """How a default reads in the help: ``unset`` for None, ``true``/``false``."""
    return "unset" if default is None else default


def _kwargs(f: dataclasses.Field[Any], text: str) -> dict[str, Any]:
    """``add_argument`` keywords of a field (its type, choices or metavar); no default."""
    kind = str(f.type)
    if "bool" in kind:
        return {"dest": f.name, "action": "store_true", "help": text}
    conv: Any = float if "float" in kind else int if "int" in kind else str
    if "parse" in f.metadata:  # a section given by its main value (URL, folder) or a box
        conv = str
    kwargs: dict[str, Any] = {"dest": f.name, "type": conv, "help": text}
    if "metavar" in f.metadata:
        kwargs["metavar"] = f.metadata["metavar"]
    elif "choices" in f.metadata:
        kwargs["choices"] = list(f.metadata["choices"])
    else:
        kwargs["metavar"] = "S" if f.name.endswith("_s") else f.name.upper()
    return kwargs


def add_stream_flags(parser: argparse.ArgumentParser, source_help: str) -> None:
    """``--source [ID=]SPEC`` (repeatable: one stream each) and ``--config FILE``."""
    parser.add_argument("--source", action="append", default=None, metavar="[ID=]SPEC",
                        help=source_help)
    parser.add_argument("--config", default=None, help="YAML run config (flags override it)")


def add_config_flags(parser: argparse.ArgumentParser, only: Iterable[str] | None = None,
                     defaults: dict[str, Any] | None = None) -> None:
    """Add a flag for each config key (or just ``only``); ``defaults`` overrides the default
    shown in the help (e.g. ``quiet`` on for ``serve``)."""
    for f in _schema_fields(only):
        flag = _flag(f)
        assert flag is not None
        default = (defaults or {}).get(f.name, f.default)
        text = f.metadata.get("help", "")
        if "default" not in text:  # a help that says its default keeps its own wording
            text = with_default(text, _shown(default)) if default is not False else \
                f"{text} (default false)"
        parser.add_argument(flag, default=None, **_kwargs(f, text))


def add_model_flags(parser: argparse.ArgumentParser, keys: Iterable[str] = MODEL_KEYS, *,
                    required: Iterable[str] = (), helps: Mapping[str, str] | None = None,
                    defaults: Mapping[str, Any] | None = None) -> None:
    """Add ``--model --weights --device --backend --precision --classmap --topk`` (or just
    ``keys``) with the schema's help, choices and defaults: the same flags, meaning the same,
    in every command that loads a model.

    Args:
        required: keys that must be given (no default).
        helps: a command's own wording for some keys (the default is still appended).
        defaults: a command's own default for some keys.
    """
    fields = {f.name: f for f in _schema_fields(None)}
    must = set(required)
    for key in keys:
        f = fields[key]
        flag = _flag(f)
        assert flag is not None
        default = None if key in must else (defaults or {}).get(key, f.default)
        text = with_default((helps or {}).get(key, f.metadata.get("help", "")), default)
        parser.add_argument(flag, default=default, required=key in must, **_kwargs(f, text))


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (``None``: not given)."""
    return {f.name: getattr(args, f.name) for f in _schema_fields(None) if hasattr(args, f.name)}
