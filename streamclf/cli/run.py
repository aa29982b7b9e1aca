"""The live commands of the CLI: ``run`` (one stream or several), ``serve`` and ``demo``.

``add_parsers`` builds ``run`` and ``demo`` (``serve``: :mod:`streamclf.cli.serve`). Each
``cmd_*`` takes the parsed arguments and returns the exit status; user errors are raised as
:class:`~streamclf.errors.StreamclfError` and printed by :func:`streamclf.cli.main.main`.
Every input is checked (:func:`streamclf.cli.checks.check_run`) before the model loads.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.cli import checks
from streamclf.cli.common import with_default
from streamclf.cli.flags import add_config_flags, add_model_flags, add_stream_flags
from streamclf.errors import WeightsError

if TYPE_CHECKING:
    from streamclf.config import RunConfig
    from streamclf.web.server import WebServer

__all__ = ["add_parsers", "cmd_demo", "cmd_run", "cmd_serve", "default_demo_clip",
           "run_streams"]

log = logging.getLogger("streamclf")


def default_demo_clip() -> Path:
    """The bundled demo clip (``streamclf/assets/demo.mp4``)."""
    return Path(str(resources.files("streamclf") / "assets" / "demo.mp4"))


def add_parsers(sub: Any) -> None:
    """Add ``run``, ``serve`` and ``demo`` to ``sub``."""
    from streamclf.cli.serve import add_serve_parser, add_web_flags

    run = sub.add_parser("run", help="classify a live source continuously")
    add_stream_flags(run, "webcam index or /dev/videoN, rtsp://, http(s)://, a file, or "
                          "synthetic; repeat for several streams (ID names one)")
    add_config_flags(run)
    add_web_flags(run)
    add_serve_parser(sub)

    demo = sub.add_parser("demo", help="stream the bundled demo clip through the pipeline")
    add_model_flags(demo)
    demo.add_argument("--source", default=None, metavar="FILE",
                      help="video file (default: the bundled clip)")
    demo.add_argument("--output", default="demo-overlay.mp4", metavar="VIDEO",
                      help=with_default("overlay video path", "demo-overlay.mp4"))
    demo.add_argument("--events", default="demo-events.jsonl", metavar="LOG",
                      help=with_default("event log path", "demo-events.jsonl"))


def cmd_demo(args: argparse.Namespace) -> int:
    """Stream the bundled clip (paced like a camera) through the whole pipeline."""
    from streamclf.config import load_config

    source = Path(args.source) if args.source else default_demo_clip()
    overrides = {
        "id": "demo", "model": args.model, "weights": args.weights,
        "device": args.device, "backend": args.backend, "precision": args.precision,
        "classmap": args.classmap, "topk": args.topk,
        "output": args.output, "events": args.events,
    }
    config = load_config(None, overrides, [str(source)])
    checks.check_run(config)
    try:
        return run_streams(config, None, {}, None)
    except WeightsError as exc:
        if args.weights != "kinetics400":
            raise
        banner = "!" * 78
        print(f"{banner}\n!! {exc}\n!! DEMO FALLS BACK TO RANDOM WEIGHTS: the pipeline runs, "
              f"but the labels are meaningless.\n{banner}", file=sys.stderr, flush=True)
        return run_streams(load_config(None, {**overrides, "weights": "random"}, [str(source)]),
                           None, {}, None)
    finally:
        print(f"overlay video: {args.output}\nevent log: {args.events}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from streamclf.cli.flags import config_overrides
    from streamclf.config import load_config

    checks.check_positive("--max-upload-mb", args.max_upload_mb)
    overrides = config_overrides(args)
    streams = load_config(args.config, overrides, args.source)
    checks.check_run(streams)
    web = None
    if args.web is not None:
        from streamclf.cli.serve import open_web_for_run

        web = open_web_for_run(args, streams)  # bind first: a taken port fails early
    try:
        return run_streams(streams, args.config, overrides, web)
    finally:
        if web is not None:
            web.stop()


def run_streams(streams: RunConfig, config_path: str | None, overrides: dict[str, Any],
                web: WebServer | None) -> int:
    """Run the streams (one or many) with :func:`streamclf.live.control.run_streams`."""
    from streamclf.live.control import run_streams as run

    return run(streams, config_path, overrides, web)


def cmd_serve(args: argparse.Namespace) -> int:
    from streamclf.cli.serve import cmd_serve as serve

    return serve(args, run_streams)
