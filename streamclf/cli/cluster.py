"""``streamclf cluster run``: the streams of a config on a Ray cluster, one event log.

Registered in :mod:`streamclf.cli.main` (``add_parser`` builds the sub-command, ``run`` is its
handler). Exit status, as ``streamclf run``'s: 0 after a clean end (deadline, every file
done, or SIGINT/SIGTERM), also when some streams ended with an error (each printed on one
line); 1 when every stream failed, or on a user error (bad config, unreachable
``--address``, model or sources that cannot be loaded); 130 when interrupted while the
actors were still starting.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from streamclf.cli import checks
from streamclf.cli.common import ExitCode
from streamclf.config import RunConfig
from streamclf.masking import mask_credentials
from streamclf.signals import stop_on_signals
from streamclf.sinks.webhook import WebhookForwarder, check_webhook_url
from streamclf.types import EventType

__all__ = ["add_parser", "run"]

log = logging.getLogger("streamclf")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``cluster`` (with its ``run`` action) to ``sub`` (an ``add_subparsers()``)."""
    cluster: argparse.ArgumentParser = sub.add_parser(
        "cluster", help="run streams on a Ray cluster",
        description="Scale out over a Ray cluster: stream actors spread over the nodes, a "
                    "pool of batching model actors, one event log on this machine.")
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "run", help="classify the streams of a config on the cluster",
        description="The streams of a multi-stream config (the `streamclf run --config` "
                    "format) run as Ray actors; events from all of them go to one log.")
    p.add_argument("--config", required=True, help="YAML config with a 'streams:' list (or "
                   "a single 'source'); max_batch / max_wait_ms set the model batching")
    p.add_argument("--address", default=None,
                   help="auto (the cluster of `ray start` on this machine), HOST:PORT (the "
                        "head's GCS) or ray://HOST:PORT (Ray Client); default: start a local "
                        "Ray instance on 127.0.0.1")
    p.add_argument("--events", default=None, metavar="LOG",
                   help="JSON Lines event log (default: the config's)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after this many seconds (default: the config's, else never)")
    p.add_argument("--webhook", default=None, metavar="URL",
                   help="also POST every event as JSON to this http(s) URL (non-blocking)")
    p.add_argument("--webhook-timeout", type=float, default=2.0, metavar="S",
                   help="timeout of one webhook POST (default 2)")
    p.add_argument("--model-actors", type=int, default=1, metavar="N",
                   help="model replicas (default 1); windows of every stream are batched")
    p.add_argument("--model-cpus", type=float, default=1.0, metavar="C",
                   help="CPUs reserved per model actor, also its inference threads (default 1)")
    p.add_argument("--model-gpus", type=float, default=None, metavar="G",
                   help="GPUs per model actor (default: 1 when the cluster has GPUs and the "
                        "device is not cpu, else 0)")
    p.add_argument("--stream-cpus", type=float, default=0.5, metavar="C",
                   help="CPUs reserved per stream actor (capture + resize; default 0.5)")
    p.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray instance (without --address; default: all)")
    p.add_argument("--start-timeout", type=float, default=300.0, metavar="S",
                   help="longest wait for the actors to be placed and loaded (default 300)")
    p.add_argument("--quiet", action="store_true", default=None,
                   help="no status lines (default: the config's quiet)")
    return cluster


def _absolute(config: RunConfig) -> RunConfig:
    """Paths that exist here become absolute: the actors do not run in this folder.
    (On a multi-node cluster the files must be at the same path on every node.)"""
    def local(value: str | None) -> str | None:
        if isinstance(value, str) and value and "://" not in value and Path(value).exists():
            return str(Path(value).resolve())
        return value

    streams = []
    for stream in config.streams:
        for key in ("output", "display"):
            if getattr(stream, key):
                log.warning("stream %s: cluster run ignores %r (no overlay on cluster actors)",
                            stream.id, key)
        streams.append(stream.replace(source=local(stream.source), output=None, display=False))
    return dataclasses.replace(config, weights=local(config.weights) or config.weights,
                               classmap=local(config.classmap), streams=tuple(streams))


def _load(args: argparse.Namespace) -> RunConfig:
    from streamclf.config import load_config

    for name in ("duration", "webhook_timeout", "model_cpus", "stream_cpus", "start_timeout"):
        checks.check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    checks.check_min("--model-gpus", args.model_gpus, 0)
    for name in ("model_actors", "num_cpus"):
        checks.check_min(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    if args.webhook:
        check_webhook_url(args.webhook)
    config = load_config(args.config, {"events": args.events, "duration": args.duration,
                                       "quiet": args.quiet, "webhook": args.webhook})
    if args.address is None:  # a local instance: the paths are this machine's
        checks.check_run(config, every_source=False)
    else:  # the nodes' files may not be here; what is here is checked
        checks.check_model(config.model, device=config.device)
        if config.events:
            checks.check_output("events", config.events)
    return _absolute(config)


def run(args: argparse.Namespace) -> int:
    """Handle ``streamclf cluster run``; returns the exit status (see the module doc)."""
    from streamclf.cluster.connect import check_address, connect, disconnect
    from streamclf.cluster.runner import ClusterOptions, ClusterRunner, Interrupted
    from streamclf.live.events import EventLog
    from streamclf.live.sinks import EventBus

    config = _load(args)
    if args.address is not None:
        check_address(args.address)  # before the event log is opened (and an old one rotated)
    options = ClusterOptions(model_actors=args.model_actors, model_cpus=args.model_cpus,
                             model_gpus=args.model_gpus, stream_cpus=args.stream_cpus,
                             start_timeout_s=args.start_timeout)
    bus = EventBus()
    bus.add_sink(EventLog(config.events, max_bytes=config.events_max_bytes), "events",
                 inline=True)
    webhook = None
    connection = None
    try:
        connection = connect(args.address, num_cpus=args.num_cpus)
        log.info("ray: %s", connection.address)
        if config.webhook:
            webhook = WebhookForwarder.from_config(config.webhook, args.webhook_timeout)
            webhook.start()
            bus.add_sink(webhook, "webhook", inline=True,  # never blocks: its own queue
                         types={EventType.ALERT} if config.webhook.alerts_only else None)
        status = None if config.quiet else sys.stderr
        with stop_on_signals() as stop:  # after ray.init, which sets its own
            runner = ClusterRunner(config, options, bus, stop, status)
            try:
                outcome = runner.run(config.duration)
            except Interrupted:
                print("streamclf: interrupted", file=sys.stderr, flush=True)
                return ExitCode.INTERRUPTED
    finally:
        bus.close(2.0)  # the webhook sends what is queued, then the log closes
        if webhook is not None:
            log.info("webhook: %s", webhook.summary())
            if webhook.failed or webhook.dropped:
                log.warning("webhook %s: %s (last error: %s)", mask_credentials(args.webhook),
                            webhook.summary(), webhook.last_error)
        if connection is not None:
            disconnect(connection)
    for message in outcome.errors:
        print(f"streamclf: error: stream {message}", file=sys.stderr, flush=True)
    every_stream_failed = len(outcome.errors) >= len(config.streams) > 0
    return ExitCode.ERROR if every_stream_failed else ExitCode.OK
