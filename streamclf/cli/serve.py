"""CLI glue for the web view: ``streamclf serve`` and ``streamclf run --web HOST:PORT``.

``serve`` runs the stream given by ``--source``/``--config`` (optional: without one the
page offers only the upload classifier) and keeps serving after a finite source ends,
until SIGINT/SIGTERM. ``run --web`` is ``run`` plus the web view: it ends when the run
does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamclf.cli.flags import add_config_flags, config_overrides
from streamclf.web.server import TOKEN_ENV, WebServer, parse_bind

if TYPE_CHECKING:
    from streamclf.config import RunConfig

#: The config keys ``serve`` takes as flags.
_SERVE_KEYS = ("id", "model", "weights", "device", "backend", "precision", "classmap", "pace",
               "loop", "events", "output")

__all__ = ["add_serve_parser", "add_web_flags", "cmd_serve", "open_web"]

#: ``(streams, config path, overrides, web) -> exit status`` (cli._run_streams).
RunStreams = Callable[["RunConfig", "str | None", "dict[str, Any]", "WebServer | None"], int]


def add_web_flags(parser: argparse.ArgumentParser, with_bind: bool = True) -> None:
    """``--web HOST:PORT`` (unless ``with_bind`` is False), ``--token``, ``--max-upload-mb``."""
    if with_bind:
        parser.add_argument("--web", default=None, metavar="HOST:PORT",
                            help="also serve the web view here (e.g. 127.0.0.1:8080)")
    parser.add_argument("--token", default=None,
                        help=f"web view access token (default ${TOKEN_ENV}); required when "
                             "binding an address other than 127.0.0.1")
    parser.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=200.0,
                        help="largest video accepted by the upload form (default 200)")


def add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="web view: live overlay, events, health, upload")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any)")
    serve.add_argument("--source", action="append", default=None, metavar="[ID=]SPEC",
                       help="stream to show (webcam index, URL or file; repeat for several); "
                            "none: upload only")
    serve.add_argument("--config", default=None, help="YAML run config (flags override it)")
    add_config_flags(serve, only=_SERVE_KEYS)
    add_web_flags(serve, with_bind=False)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def open_web(host: str, port: int, args: argparse.Namespace, model: str, weights: str,
             classmap: str | None, device: str, backend: str) -> WebServer:
    """Bind the web server (fails fast: bad address, port in use, missing token) with an
    upload classifier built on first use; not started yet."""
    from streamclf.web.hub import WebHub
    from streamclf.web.uploads import ClassifyService

    def make_classifier() -> Any:
        from streamclf.offline.classify import ActionClassifier

        return ActionClassifier(model, weights, classmap=classmap, device=device,
                                backend=backend)

    return WebServer(WebHub(), host, port, token=_token(args),
                     classifier=ClassifyService(make_classifier),
                     max_upload_mb=args.max_upload_mb, model=model)


def open_web_for_run(args: argparse.Namespace, config: RunConfig) -> WebServer:
    host, port = parse_bind(args.web)
    backend = "torch" if config.backend == "auto" else config.backend
    return open_web(host, port, args, config.model, config.weights, config.classmap,
                    config.device, backend)


def _wait_for_signal(server: WebServer) -> None:
    stop = server.stop_requested
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_serve(args: argparse.Namespace, run_streams: RunStreams) -> int:
    """``streamclf serve``: the stream(s) (if any) then the page until SIGINT/SIGTERM."""
    from streamclf.config import load_config

    overrides: dict[str, Any] = config_overrides(args)
    overrides["quiet"] = True
    streams = None
    if args.source or args.config is not None:
        streams = load_config(args.config, overrides, args.source)
    config = streams
    model = (config.model if config else args.model) or "x3d_xs"
    weights = (config.weights if config else args.weights) or "kinetics400"
    classmap = config.classmap if config else args.classmap
    device = (config.device if config else args.device) or "auto"
    backend = (config.backend if config else args.backend) or "torch"
    server = open_web(args.host, args.port, args, model, weights, classmap, device,
                      "torch" if backend == "auto" else backend)
    server.start()
    print(f"streamclf: web view on {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        status = 0
        if streams is not None:
            status = run_streams(streams, args.config, overrides, server)
            if server.stop_requested.is_set():
                return status
            print("streamclf: streams ended; still serving (Ctrl-C to stop)",
                  file=sys.stderr, flush=True)
        _wait_for_signal(server)
        return status
    finally:
        server.stop()
