"""The ``streamclf`` command line.

Every user error ends as one line on stderr and a non-zero exit status (the table:
:class:`~streamclf.cli.common.ExitCode`); a traceback is printed only with ``--debug``.
The one-off set-up steps of a first run (exporting, converting and timing backends) say
what they do on stderr, one line each with its time (logger ``streamclf.setup``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from streamclf import __version__
from streamclf.cli import cluster as cli_cluster
from streamclf.cli import evaluate as cli_evaluate
from streamclf.cli import evaluate_stream as cli_evaluate_stream
from streamclf.cli import events as cli_events
from streamclf.cli import offline as cli_offline
from streamclf.cli import run as cli_run
from streamclf.cli import score_events as cli_score_events
from streamclf.cli import timeline as cli_timeline
from streamclf.cli import train as cli_train
from streamclf.cli.common import SETUP_LOGGER, ExitCode, Parser
from streamclf.errors import StreamclfError
from streamclf.masking import mask_credentials

__all__ = ["build_parser", "console_main", "main"]

log = logging.getLogger("streamclf")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamclf",
                    description="Real-time human action recognition on video.")
    parser.add_argument("--version", action="version", version=f"streamclf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and decoder logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log lifecycle details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_offline.add_parsers(sub)  # models, classify, export, bench
    cli_run.add_parsers(sub)  # run, serve, demo
    cli_evaluate.add_parser(sub)
    cli_evaluate_stream.add_parser(sub)
    cli_cluster.add_parser(sub)
    cli_train.add_parser(sub)
    cli_events.add_parser(sub)
    cli_score_events.add_parser(sub)
    cli_timeline.add_parser(sub)
    return parser


class _Formatter(logging.Formatter):
    """``streamclf: LEVEL: message`` (set-up steps: ``streamclf: message``), with URL
    credentials hidden in every line, whichever module wrote it (defence in depth: the
    modules mask what they log, this catches what a library or an exception text adds)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == SETUP_LOGGER and record.levelno == logging.INFO:
            text = f"streamclf: {record.getMessage()}"
        return mask_credentials(text)


def _configure_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter("streamclf: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The set-up steps of a first run (seconds to minutes) are always said.
    logging.getLogger(SETUP_LOGGER).setLevel(min(level, logging.INFO))
    if not debug:
        # FFmpeg prints decoder complaints straight to stderr; streamclf reports
        # corrupt input itself in one line. --debug keeps FFmpeg's own messages.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": cli_offline.cmd_models, "classify": cli_offline.cmd_classify,
    "export": cli_offline.cmd_export, "bench": cli_offline.cmd_bench,
    "run": cli_run.cmd_run, "demo": cli_run.cmd_demo, "serve": cli_run.cmd_serve,
    "evaluate": cli_evaluate.run,
    "evaluate-stream": cli_evaluate_stream.run, "cluster": cli_cluster.run, "train": cli_train.run,
    "score-events": cli_score_events.run,
    "events": cli_events.run, "timeline": cli_timeline.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see :class:`ExitCode`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return ExitCode.OK if exc.code in (None, 0) else ExitCode.USAGE
    _configure_logging(args.verbose, args.debug)
    try:
        return int(_COMMANDS[args.command](args))
    except StreamclfError as exc:
        if args.debug:
            raise
        print(f"streamclf: error: {mask_credentials(str(exc))}", file=sys.stderr, flush=True)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print("streamclf: interrupted", file=sys.stderr, flush=True)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"streamclf: internal error: {type(exc).__name__}: {mask_credentials(str(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr, flush=True)
        return ExitCode.ERROR


def console_main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: run :func:`main`, then leave at once.

    Every file the command wrote is closed and every thread joined by then; skipping
    the interpreter's teardown (over a second with torch loaded) keeps Ctrl-C/SIGTERM
    shutdown of ``streamclf run`` well inside its 2 s budget.
    """
    status = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    console_main()
