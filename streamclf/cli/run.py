"""The live commands of the CLI: ``run`` (one stream or several), ``serve`` and ``demo``.

Each ``cmd_*`` takes the parsed arguments and returns the exit status; user errors are
raised as :class:`~streamclf.errors.StreamclfError` and printed by :func:`streamclf.cli.main.main`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.errors import WeightsError

if TYPE_CHECKING:
    from streamclf.config import RunConfig
    from streamclf.streams_config import StreamsConfig
    from streamclf.web.server import WebServer

__all__ = ["RUN_KEYS", "cmd_demo", "cmd_run", "cmd_serve", "run_pipeline"]

log = logging.getLogger("streamclf")

EXIT_OK, EXIT_ERROR = 0, 1


def default_demo_clip() -> Path:
    """The bundled demo clip (``streamclf/assets/demo.mp4``)."""
    return Path(str(resources.files("streamclf") / "assets" / "demo.mp4"))


def cmd_demo(args: argparse.Namespace) -> int:
    """Stream the bundled clip (paced like a camera) through the whole pipeline."""
    from streamclf.config import load_config

    source = Path(args.source) if args.source else default_demo_clip()
    overrides = {
        "source": str(source), "stream_id": "demo", "model": args.model, "weights": args.weights,
        "device": args.device, "classmap": args.classmap, "topk": args.topk,
        "output": args.output, "events": args.events,
    }
    try:
        return run_pipeline(load_config(None, overrides))
    except WeightsError as exc:
        if args.weights != "kinetics400":
            raise
        banner = "!" * 78
        print(f"{banner}\n!! {exc}\n!! DEMO FALLS BACK TO RANDOM WEIGHTS: the pipeline runs, "
              f"but the labels are meaningless.\n{banner}", file=sys.stderr, flush=True)
        return run_pipeline(load_config(None, {**overrides, "weights": "random"}))
    finally:
        print(f"overlay video: {args.output}\nevent log: {args.events}", flush=True)


RUN_KEYS = ("source", "stream_id", "model", "weights", "device", "backend", "precision",
             "classmap", "stride", "topk",
             "smooth", "threshold", "pace", "loop", "transport", "display", "output", "events",
             "duration", "threads", "quiet", "max_reconnects", "backoff_initial_s",
             "backoff_max_s", "backoff_jitter")


def run_pipeline(config: RunConfig, web: WebServer | None = None) -> int:
    """Run one stream until it ends, --duration passes, or SIGINT/SIGTERM; returns the status.
    With ``web`` (a bound server), the stream is shown in the web view while it runs."""
    from streamclf.live.runner import StreamPipeline

    pipeline = StreamPipeline.from_config(config)
    if web is not None:
        from streamclf.web.attach import attach_pipeline

        attach_pipeline(web.hub, pipeline)
        if not web.started_serving:
            web.start()
            print(f"streamclf: web view on {web.url}", file=sys.stderr, flush=True)
    if not config.quiet:
        print(f"streamclf: {pipeline.spec.name} on {config.device}, backend "
              f"{pipeline.backend_reason}", file=sys.stderr, flush=True)
    log.info("backend: %s", pipeline.backend_reason)
    previous = {}

    def on_signal(signum: int, _frame: object) -> None:
        pipeline.request_stop()
        if web is not None:
            web.stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        result = pipeline.run()
        if not pipeline.wait_threads(0.3):
            # A window is still in the model (slow CPU). Its result would come after
            # `stopped` and is dropped; console_main's immediate exit ends the thread.
            log.info("inference thread still busy at exit; its last window is dropped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped: %d frames, %d windows, %d drops", result.frames, result.windows,
             result.drops)
    if result.error:
        print(f"streamclf: error: {result.error}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from streamclf.streams_config import load_streams_config

    overrides = {key: getattr(args, key) for key in RUN_KEYS if key != "source"}
    overrides.update(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    streams = load_streams_config(args.config, overrides, args.source)
    web = None
    if args.web is not None:
        from streamclf.cli.serve import open_web_for_run

        web = open_web_for_run(args, streams.shared)  # bind first: a taken port fails early
    try:
        return run_streams(streams, args.config, overrides, web)
    finally:
        if web is not None:
            web.stop()


def run_streams(streams: StreamsConfig, config_path: str | None, overrides: dict[str, Any],
                 web: WebServer | None) -> int:
    """One stream: the single-stream pipeline; several (or a ``streams:`` list): the
    multi-stream run with its shared batching worker."""
    if not streams.listed and len(streams.streams) == 1:
        return run_pipeline(streams.shared, web)
    from streamclf.live.control import run_streams as run_multi

    status, error = run_multi(streams, config_path, overrides, web)
    if error:
        print(f"streamclf: error: {error}", file=sys.stderr, flush=True)
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    from streamclf.cli.serve import cmd_serve as serve

    return serve(args, run_streams)
