"""CLI glue for the web view: ``streamclf serve`` and ``streamclf run --web HOST:PORT``.

Both take the address the same way, ``--web HOST:PORT`` (``serve``: default
127.0.0.1:8080; ``run``: no web view unless given). ``serve`` runs the stream given by
``--source``/``--config`` (optional: without one the page offers only the upload
classifier) and keeps serving after a finite source ends, until SIGINT/SIGTERM. ``run
--web`` is ``run`` plus the web view: it ends when the run does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamclf.cli import checks
from streamclf.cli.common import Deprecated, ExitCode, with_default
from streamclf.cli.flags import add_config_flags, add_stream_flags, config_overrides
from streamclf.errors import ConfigError
from streamclf.signals import stop_on_signals
from streamclf.web.server import TOKEN_ENV, WebServer, parse_bind

if TYPE_CHECKING:
    from streamclf.config import RunConfig

#: The config keys ``serve`` takes as flags.
_SERVE_KEYS = ("id", "model", "weights", "device", "backend", "precision", "classmap", "pace",
               "loop", "events", "output", "db", "clips")
#: Where ``serve`` listens unless told otherwise.
DEFAULT_WEB = "127.0.0.1:8080"

__all__ = ["DEFAULT_WEB", "add_serve_parser", "add_web_flags", "cmd_serve", "open_web"]

#: ``(streams, config path, overrides, web) -> exit status`` (cli._run_streams).
RunStreams = Callable[["RunConfig", "str | None", "dict[str, Any]", "WebServer | None"], int]


def add_web_flags(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--web HOST:PORT`` (default ``default``; None: no web view), ``--token``,
    ``--max-upload-mb``."""
    what = "serve the web view here" if default else "also serve the web view here"
    parser.add_argument("--web", default=default, metavar="HOST:PORT",
                        help=with_default(f"{what} (PORT 0: any free port; e.g. "
                                          "127.0.0.1:8080)", default))
    parser.add_argument("--token", default=None,
                        help=f"web view access token (default ${TOKEN_ENV}); required when "
                             "binding an address other than 127.0.0.1")
    parser.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=200.0,
                        help="largest video accepted by the upload form (default 200)")


def add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="web view: live overlay, events, health, upload")
    add_stream_flags(serve, "stream to show (webcam index, URL or file; repeat for several); "
                            "none: upload only")
    add_config_flags(serve, only=_SERVE_KEYS)
    add_web_flags(serve, default=DEFAULT_WEB)
    serve.add_argument("--host", action=Deprecated, use="--web HOST:PORT", default=None)
    serve.add_argument("--port", action=Deprecated, use="--web HOST:PORT", type=int,
                       default=None)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def open_web(host: str, port: int, args: argparse.Namespace, model: str, weights: str,
             classmap: str | None, device: str, backend: str, db: str | None = None,
             clips_dir: str | None = None) -> WebServer:
    """Bind the web server (fails fast: bad address, port in use, missing token) with an
    upload classifier built on first use, reviewing the alerts of ``db`` with the clips of
    ``clips_dir``; not started yet."""
    from streamclf.web.hub import WebHub
    from streamclf.web.uploads import ClassifierFactory, ClassifyService

    factory = ClassifierFactory(model, weights, classmap=classmap, device=device,
                                backend=backend)  # picklable: built in the worker process
    return WebServer(WebHub(), host, port, token=_token(args),
                     classifier=ClassifyService(factory),
                     max_upload_mb=args.max_upload_mb, model=model, db=db,
                     clips_dir=clips_dir)


def open_web_for_run(args: argparse.Namespace, config: RunConfig) -> WebServer:
    host, port = parse_bind(args.web)
    backend = "torch" if config.backend == "auto" else config.backend
    return open_web(host, port, args, config.model, config.weights, config.classmap,
                    config.device, backend, db=config.db,
                    clips_dir=config.clips.dir if config.clips else None)


def _bind(args: argparse.Namespace) -> tuple[str, int]:
    """``--web``, with the deprecated ``--host``/``--port`` replacing their part."""
    host, port = parse_bind(args.web)
    host = args.host if args.host is not None else host
    port = args.port if args.port is not None else port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: port must be 0-65535")
    return host, port


def cmd_serve(args: argparse.Namespace, run_streams: RunStreams) -> int:
    """``streamclf serve``: the stream(s) (if any) then the page until SIGINT/SIGTERM."""
    from streamclf.config import load_config

    checks.check_positive("--max-upload-mb", args.max_upload_mb)
    host, port = _bind(args)
    overrides: dict[str, Any] = config_overrides(args)
    overrides["quiet"] = True
    streams = None
    if args.source or args.config is not None:
        streams = load_config(args.config, overrides, args.source)
        checks.check_run(streams)
    config = streams
    model = (config.model if config else args.model) or "x3d_xs"
    weights = (config.weights if config else args.weights) or "kinetics400"
    classmap = config.classmap if config else args.classmap
    device = (config.device if config else args.device) or "auto"
    backend = (config.backend if config else args.backend) or "torch"
    checks.check_model(model, weights, classmap, device)  # the upload classifier's
    db = config.db if config else args.db
    clips = (config.clips.dir if config.clips else None) if config else args.clips
    server = open_web(host, port, args, model, weights, classmap, device,
                      "torch" if backend == "auto" else backend, db=db, clips_dir=clips)
    server.start()
    print(f"streamclf: web view on {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        status = int(ExitCode.OK)
        if streams is not None:
            status = run_streams(streams, args.config, overrides, server)
            if server.stop_requested.is_set():
                return status
            print("streamclf: streams ended; still serving (Ctrl-C to stop)",
                  file=sys.stderr, flush=True)
        with stop_on_signals(server.stop_requested) as stop:
            while not stop.wait(0.2):
                pass
        return status
    finally:
        server.stop()
