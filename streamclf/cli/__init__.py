"""The ``streamclf`` command line: one module per command group (see :mod:`.main`).

The shared pieces: :mod:`.common` (exit codes, backend choices, the parser class),
:mod:`.flags` (flags from the config schema, the model flags), :mod:`.checks` (inputs
checked before a model loads), :mod:`.signals` (SIGINT/SIGTERM/SIGHUP handling).
``build_parser`` and ``console_main`` load :mod:`.main` on first use (``main`` is that
module: call ``streamclf.cli.main.main``), so that importing a light helper such as
:mod:`.signals` does not build the whole CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_parser", "console_main"]


def __getattr__(name: str) -> Any:
    if name in ("build_parser", "console_main", "main"):
        module = importlib.import_module("streamclf.cli.main")
        return module if name == "main" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
