"""The driver of ``streamclf cluster run``: places the actors, gathers events, stops cleanly.

1. Model actors (``--model-actors`` of them, each ``--model-cpus`` CPUs and ``--model-gpus``
   GPUs, spread over the nodes) load the model; the first one's labels go to the streams.
2. One stream actor per configured stream (``--stream-cpus`` each, spread over the nodes)
   opens its source; one that cannot is logged (``error`` + ``stopped``) and the others go
   on; when none can, the run fails with the first reason.
3. Every 0.2 s the driver drains each stream's outbox and writes the events, in the order
   received, to the run's :class:`~streamclf.live.sinks.EventBus` (which numbers them: ``seq`` is
   contiguous over all streams) and so to every sink (the log, a webhook).
4. At the deadline, on a stop request (SIGINT/SIGTERM), or when every stream has ended (files
   without ``loop``), each stream is stopped (bounded waits): its open label ends and its
   ``stopped`` event with the totals is the stream's last. A stream actor that dies (its
   node was lost) gets an ``error`` and a ``stopped`` event with its last known totals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from streamclf.cluster.connect import cluster_resources
from streamclf.cluster.messages import Drained
from streamclf.config import RunConfig, StreamConfig
from streamclf.errors import ConfigError, ModelError, SourceError
from streamclf.live.events import make_event
from streamclf.live.sinks import EventBus
from streamclf.types import Event, StreamTotals

__all__ = ["ClusterOptions", "ClusterRunner", "RunOutcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterOptions:
    """How the run is laid out on the cluster (the command's flags).

    ``model_gpus=None``: one GPU per model actor when the cluster has GPUs and the config's
    device is not ``cpu``, else none.
    """

    model_actors: int = 1
    model_cpus: float = 1.0
    model_gpus: float | None = None
    stream_cpus: float = 0.5
    start_timeout_s: float = 300.0
    infer_timeout_s: float = 30.0
    poll_s: float = 0.2
    status_every_s: float = 5.0


@dataclass(frozen=True)
class RunOutcome:
    """How the run ended: per-stream errors (``"stream: message"``) and whether it was
    stopped by a request (signal)."""

    errors: tuple[str, ...]
    interrupted: bool
    models: tuple[dict[str, Any], ...] = ()


class Interrupted(Exception):
    """A stop was requested while the driver waited for the cluster."""


@dataclass
class _Stream:
    config: StreamConfig
    handle: Any = None
    pending: Any = None  # the ObjectRef of an unanswered drain()
    totals: StreamTotals = field(default_factory=StreamTotals)
    finished: bool = False
    done: bool = False  # its `stopped` event is written
    error: str | None = None
    predictions: int = 0
    last_latency_ms: float | None = None
    last_label: str = ""


class ClusterRunner:
    """Runs every stream of ``config`` on the connected Ray cluster.

    Args:
        config: the run (:func:`~streamclf.config.load_config`).
        options: actor layout and timeouts.
        bus: where every event goes (the caller's sinks: the log, a webhook; not closed
            here). It numbers them: ``seq`` is contiguous over all streams.
        stop: set (from a signal handler) to stop the run.
        status_out: where a status line goes every ``status_every_s`` (None: nowhere).

    Thread-safety: :meth:`run` blocks its thread; only ``stop`` is meant for other threads.
    """

    def __init__(self, config: RunConfig, options: ClusterOptions, bus: EventBus,
                 stop: threading.Event | None = None,
                 status_out: TextIO | None = None) -> None:
        from streamclf.outputs import check_outputs

        check_outputs(config)
        self.config, self.options, self.bus = config, options, bus
        self.status_out = status_out
        self.stop = stop or threading.Event()
        self.streams = [_Stream(c) for c in config.streams]
        self.models: list[Any] = []
        self.model_info: list[dict[str, Any]] = []

    # -- the run ---------------------------------------------------------------------------
    def run(self, duration_s: float | None = None) -> RunOutcome:
        """Place the actors, run until the deadline / a stop / every stream ended, stop.

        Raises:
            ConfigError: the cluster lacks the resources, or the actors were not placed
                within ``start_timeout_s``.
            ModelError: a model actor could not load the model.
            SourceError: no stream could open its source.
            Interrupted: stopped while the actors were starting.
        """
        import ray

        try:
            self._check_resources()
            labels = self._start_models()
            self._start_streams(labels)
            deadline = None if duration_s is None else time.monotonic() + duration_s
            next_status = time.monotonic() + self.options.status_every_s
            while not self.stop.is_set():
                self._poll()
                active = [s for s in self.streams if not s.done]
                if not active or all(s.finished for s in active):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if time.monotonic() >= next_status:
                    next_status += self.options.status_every_s
                    self._print_status()
                self.stop.wait(self.options.poll_s)
            interrupted = self.stop.is_set()
            self._stop_streams()
            stats = self._model_stats()
        finally:
            for handle in [s.handle for s in self.streams if s.handle is not None] + self.models:
                ray.kill(handle)
        errors = tuple(f"{s.config.stream_id}: {s.error}" for s in self.streams if s.error)
        return RunOutcome(errors, interrupted, tuple(stats))

    # -- placement -------------------------------------------------------------------------
    def _model_gpus(self, resources: dict[str, float]) -> float:
        if self.options.model_gpus is not None:
            return self.options.model_gpus
        has_gpu = resources.get("GPU", 0.0) >= 1.0
        return 1.0 if has_gpu and self.config.device != "cpu" else 0.0

    def _check_resources(self) -> None:
        res, opt = cluster_resources(), self.options
        cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
        need = opt.model_actors * opt.model_cpus + len(self.streams) * opt.stream_cpus
        if need > cpus + 1e-9:
            raise ConfigError(
                f"the cluster has {cpus:g} CPUs but {opt.model_actors} model actor(s) x "
                f"{opt.model_cpus:g} (--model-cpus) + {len(self.streams)} streams x "
                f"{opt.stream_cpus:g} (--stream-cpus) need {need:g}; lower them or add nodes")
        gpu_need = opt.model_actors * self._model_gpus(res)
        if gpu_need > gpus + 1e-9:
            raise ConfigError(f"the cluster has {gpus:g} GPUs but {opt.model_actors} model "
                              f"actor(s) x {self._model_gpus(res):g} (--model-gpus) need "
                              f"{gpu_need:g}")

    def _wait(self, refs: Sequence[Any], what: str) -> list[Any]:
        """Results of ``refs`` (in order), polling the stop event; bounded by the timeout."""
        import ray

        deadline = time.monotonic() + self.options.start_timeout_s
        pending = list(refs)
        while pending:
            if self.stop.is_set():
                raise Interrupted
            if time.monotonic() > deadline:
                raise ConfigError(f"{what} did not start within "
                                  f"{self.options.start_timeout_s:g} s (busy cluster, or no node "
                                  "with the resources asked for)")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
        return list(ray.get(list(refs)))

    def _start_models(self) -> tuple[str, ...]:
        import ray

        from streamclf.cluster.model_server import ModelActor

        opt, shared = self.options, self.config
        gpus = self._model_gpus(cluster_resources())
        # max_restarts: Ray brings a dead replica back (it reloads in its constructor); the
        # window that was in it fails (an `error` event), later ones wait for the restart.
        actor = ray.remote(ModelActor).options(
            num_cpus=opt.model_cpus, num_gpus=gpus, scheduling_strategy="SPREAD",
            max_concurrency=max(8, 2 * len(self.streams) + 4), max_restarts=-1)
        threads = max(1, int(opt.model_cpus))
        self.models = [actor.remote(i, shared, self.config.max_batch, self.config.max_wait_ms,
                                    threads) for i in range(opt.model_actors)]
        infos = self._wait([m.load.remote() for m in self.models], "the model actors")
        for info in infos:
            if "error" in info:
                raise ModelError(f"model actor {info['index']}: {info['error']}")
        self.model_info = infos
        first = infos[0]
        log.info("model %s on %d actor(s): %s", shared.model, len(infos),
                 "; ".join(f"{i['node']} {i['device']} {i['backend']}" for i in infos))
        if self.status_out is not None:
            print(f"streamclf: {shared.model} on {len(infos)} model actor(s), backend "
                  f"{first['reason']}, device {first['device']}", file=self.status_out,
                  flush=True)
        return tuple(first["labels"])

    def _start_streams(self, labels: tuple[str, ...]) -> None:
        import ray

        from streamclf.cluster.stream_worker import StreamActor

        actor = ray.remote(StreamActor).options(
            num_cpus=self.options.stream_cpus, scheduling_strategy="SPREAD", max_concurrency=2)
        for i, s in enumerate(self.streams):
            first = i * len(self.models) // len(self.streams)  # neighbours share a replica
            s.handle = actor.remote(s.config, self.config.model, labels, self.models, first,
                                    self.options.infer_timeout_s)
        infos = self._wait([s.handle.open.remote() for s in self.streams], "the stream actors")
        failed = []
        for s, info in zip(self.streams, infos, strict=True):
            if "error" in info:
                failed.append(info["error"])
                self._finish(s, info["error"], where="open")
            else:
                log.info("stream %s: %s on %s", s.config.stream_id, info["source"], info["node"])
        if len(failed) == len(self.streams):
            raise SourceError(failed[0] if len(failed) == 1 else
                              f"no stream could open its source; first: {failed[0]}")
        self._wait([s.handle.start.remote() for s in self.streams if not s.done],
                   "the stream actors")

    # -- events ----------------------------------------------------------------------------
    def _write(self, event: Event) -> None:
        self.bus.publish(event)

    def _take(self, s: _Stream, drained: Drained) -> None:
        for event in drained.events:
            if event.type == "prediction":
                s.predictions += 1
                s.last_latency_ms = event.fields.get("latency_ms")
                s.last_label = event.fields.get("stable_label") or \
                    f"({event.fields.get('labels', ['?'])[0]})"
            if event.type == "stopped":
                s.done = True
                if event.fields.get("error"):
                    s.error = str(event.fields["error"])
            self._write(event)
        if drained.lost_events:
            log.warning("stream %s: %d events were dropped before the driver collected them",
                        s.config.stream_id, drained.lost_events)
        s.totals, s.finished = drained.totals, drained.finished

    def _finish(self, s: _Stream, message: str, where: str) -> None:
        """A stream that ended without its own ``stopped``: write an error and one."""
        s.error, s.done = message, True
        stream = s.config.stream_id
        self._write(make_event("error", stream, where=where, message=message))
        t = s.totals
        self._write(make_event("stopped", stream, frames=t.frames, windows=t.windows,
                               drops=t.drops, skipped_windows=t.skipped_windows, error=message))

    def _poll(self) -> None:
        """Ask every running stream for its events; take the answers that are ready."""
        import ray

        live = [s for s in self.streams if not s.done]
        for s in live:
            if s.pending is None:
                s.pending = s.handle.drain.remote()
        refs = [s.pending for s in live]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.options.poll_s)
        ready_ids = set(ready)
        for s in live:
            if s.pending in ready_ids:
                ref, s.pending = s.pending, None
                self._collect(s, ref)

    def _collect(self, s: _Stream, ref: Any) -> None:
        import ray

        try:
            self._take(s, ray.get(ref))
        except ray.exceptions.RayError as exc:
            log.error("stream %s: its actor failed: %s", s.config.stream_id, exc)
            self._finish(s, f"stream actor lost: {type(exc).__name__}", where="cluster")

    def _stop_streams(self, timeout_s: float = 2.0) -> None:
        """Stop every running stream; write its last events (bounded: ~timeout + 3 s)."""
        import ray

        live = [s for s in self.streams if not s.done and s.handle is not None]
        stops = {id(s): s.handle.stop.remote(timeout_s) for s in live}
        refs = [r for s in live for r in (s.pending, stops[id(s)]) if r is not None]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s + 3.0)
        for s in live:
            for ref in (s.pending, stops[id(s)]):
                if ref is None or s.done:
                    continue
                if ray.wait([ref], timeout=0)[0]:
                    self._collect(s, ref)
            s.pending = None
            if not s.done:
                self._finish(s, "the stream actor did not stop in time", where="cluster")

    def _model_stats(self) -> list[dict[str, Any]]:
        import ray

        refs = [m.stats.remote() for m in self.models]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=2.0)
        stats = [ray.get(r) for r in refs if r in set(ready)]
        for st in stats:
            log.info("model actor %s: %s clips in %s batches (mean %s), %s s busy",
                     st["index"], st["clips"], st["batches"], st.get("mean_batch"),
                     st.get("busy_s"))
        return stats

    def _print_status(self) -> None:
        if self.status_out is None:
            return
        parts = []
        for s in self.streams:
            lat = "-" if s.last_latency_ms is None else f"{s.last_latency_ms:.0f} ms"
            state = "ended" if s.done else "finished" if s.finished else "live"
            parts.append(f"[{s.config.stream_id}] {state} {s.predictions} clips, latency {lat}, "
                         f"drops {s.totals.drops}, {s.last_label[:30]}")
        print("cluster: " + " | ".join(parts), file=self.status_out, flush=True)
