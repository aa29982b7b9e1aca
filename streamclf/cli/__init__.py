"""The ``streamclf`` command line: one module per command group (see :mod:`.main`)."""

from streamclf.cli.main import build_parser, console_main, main

__all__ = ["build_parser", "console_main", "main"]
