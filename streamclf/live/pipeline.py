"""``MultiStreamPipeline``: many streams, one model, one batching inference worker.

    stream A: source -> CaptureThread -> FrameRing ─┐
    stream B: source -> CaptureThread -> FrameRing ─┼─> InferenceWorker (batches up to
    stream C: ...                                   ─┘   max_batch windows, one per stream)
                         -> each stream's Smoother -> one EventLog (+ each stream's overlay)

Every stream is a :class:`~streamclf.live.runner.StreamPipeline` built on the shared backend,
worker and event log (events carry the stream id). Streams can be added and removed while
the others run (:meth:`MultiStreamPipeline.add_stream` / :meth:`remove_stream`, used by
the config reload on SIGHUP and by the web view's ``/api/streams``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from streamclf.config import RunConfig
from streamclf.engine.backends.base import InferenceBackend
from streamclf.engine.batcher import InferenceWorker
from streamclf.engine.runtime import default_inference_threads, tune_switch_interval
from streamclf.errors import ConfigError
from streamclf.live.events import EventLog, make_event
from streamclf.live.parts import make_renderer
from streamclf.live.runner import (
    PipelineResult,
    StreamPipeline,
)
from streamclf.models.registry import ModelSpec
from streamclf.streams_config import StreamsConfig

__all__ = ["MultiResult", "MultiStreamPipeline"]

log = logging.getLogger(__name__)
_SHARED_KEYS = ("model", "weights", "device", "backend", "precision", "classmap", "events",
                "threads", "torch_compile")


@dataclass(frozen=True)
class MultiResult:
    """Each stream's :class:`PipelineResult` by id; ``error`` is the first stream error."""

    streams: dict[str, PipelineResult]

    @property
    def error(self) -> str | None:
        errors = [f"{sid}: {r.error}" for sid, r in self.streams.items() if r.error]
        return "; ".join(errors) or None


class MultiStreamPipeline:
    """Runs several streams on one shared backend.

    Build with :meth:`from_config` (real parts) or the constructor (tests: any backend and
    a ``make_stream(config) -> StreamPipeline`` factory). Thread-safety: ``add_stream``,
    ``remove_stream``, ``request_stop`` and ``health`` from any thread; ``run`` from one.
    """

    def __init__(self, spec: ModelSpec, backend: InferenceBackend, events: EventLog,
                 max_batch: int = 4, max_wait_ms: float = 10.0,
                 status_out: TextIO | None = None, open_stream: Any = None) -> None:
        self.spec = spec
        self.backend = backend
        self.events = events
        self.status_out = status_out
        self.worker = InferenceWorker(backend, on_error=self._on_inference_error,
                                      max_batch=max_batch, max_wait_ms=max_wait_ms)
        self._open_stream = open_stream  # see stream_parts.open_stream_parts
        self._streams: dict[str, StreamPipeline] = {}
        self._results: dict[str, PipelineResult] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._last_status = 0.0
        self.backend_reason = f"{backend.name} (given)"
        self.shared: RunConfig | None = None
        #: Called with each new stream before it starts (e.g. to show it in the web view).
        self.on_add: Callable[[StreamPipeline], None] | None = None

    # -- wiring ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: StreamsConfig,
                    status_out: TextIO | None = None) -> MultiStreamPipeline:
        """Load the model once, open the shared event log, then open every stream (a stream
        that fails to open fails the whole start: nothing is left running)."""
        import torch

        from streamclf.engine.backends.factory import create_backend
        from streamclf.live.parts import open_stream_parts
        from streamclf.media.sources import parse_spec
        from streamclf.models.loader import load_model

        shared = config.shared
        for stream in config.streams:
            parse_spec(stream.source)  # an unknown URL scheme fails before the model loads
        threads = shared.threads or default_inference_threads()
        torch.set_num_threads(threads)
        model = load_model(shared.model, shared.weights, shared.classmap, shared.device)
        choice = create_backend(model, shared.backend, shared.precision, threads,
                                torch_compile=shared.torch_compile)
        tune_switch_interval(choice.backend.name)
        events = EventLog(shared.events, max_bytes=shared.events_max_bytes)
        out = None if shared.quiet else (status_out or sys.stderr)
        multi = cls(model.spec, choice.backend, events, config.max_batch, config.max_wait_ms,
                    out, open_stream=open_stream_parts)
        multi.backend_reason = choice.reason
        multi.shared = shared
        try:
            for stream in config.streams:
                multi.add_stream(stream)
        except BaseException:
            for pipe in multi._streams.values():
                pipe.close_unstarted()
            events.close()
            raise
        return multi

    # -- streams ---------------------------------------------------------------------------
    @property
    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def stream(self, stream_id: str) -> StreamPipeline:
        with self._lock:
            return self._streams[stream_id]

    def add_stream(self, config: RunConfig) -> StreamPipeline:
        """Open ``config``'s source and sinks and start it at once if the run has started.

        Raises:
            ConfigError: the id is taken, or a shared key (model, weights, ...) differs
                from the running streams'. SourceError: the source cannot be opened.
        """
        with self._lock:
            if config.stream_id in self._streams:
                raise ConfigError(f"stream {config.stream_id!r} is already running")
            if self.shared is not None:
                for key in _SHARED_KEYS:
                    if getattr(config, key) != getattr(self.shared, key):
                        raise ConfigError(f"stream {config.stream_id!r}: {key!r} must be the "
                                          f"same for every stream of a run")
            if self._open_stream is None:
                raise ConfigError("this run cannot open new streams")
            factory, sinks, fps, close = self._open_stream(config)
            pipe = StreamPipeline(config, self.spec, self.backend, factory, self.events,
                                  make_renderer(sinks, self.events, config.stream_id), None,
                                  source_fps_hint=fps, worker=self.worker)
            pipe.close_parts = close
            self._streams[config.stream_id] = pipe
            self._results.pop(config.stream_id, None)
            if self.on_add is not None:
                self.on_add(pipe)
            if self._started:
                pipe.start()
            log.info("stream %s added: %s", config.stream_id, pipe.source_name)
            return pipe

    def remove_stream(self, stream_id: str, timeout_s: float = 2.0) -> PipelineResult:
        """Stop one stream (its ``stopped`` event is written); the others keep running.

        Raises:
            ConfigError: no such stream.
        """
        with self._lock:
            pipe = self._streams.pop(stream_id, None)
        if pipe is None:
            raise ConfigError(f"no stream {stream_id!r}; running: {', '.join(self.stream_ids)}")
        result = pipe.stop(timeout_s)
        with self._lock:
            self._results[stream_id] = result
        log.info("stream %s removed", stream_id)
        return result

    # -- run -------------------------------------------------------------------------------
    def start(self) -> None:
        self._last_status = time.monotonic()  # the first status line after 2 s, not at 0
        with self._lock:
            self._started = True
            pipes = list(self._streams.values())
        self.worker.start()
        for pipe in pipes:
            pipe.start()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None) -> MultiResult:
        """Run until ``duration_s``, :meth:`request_stop`, or every stream has ended."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        self.start()
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                with self._lock:
                    pipes = list(self._streams.items())
                ended = [sid for sid, p in pipes if p.finished()]
                for sid in ended:
                    self.remove_stream(sid)
                if not pipes:
                    break
                self._print_status()
                self._stop.wait(0.1)
        finally:
            result = self.stop()
        return result

    def stop(self, timeout_s: float = 2.0) -> MultiResult:
        """Stop every stream's capture, then the worker, then write each ``stopped``."""
        t0 = time.monotonic()
        with self._lock:
            pipes = list(self._streams.items())
            self._streams.clear()
        for _, pipe in pipes:
            pipe.capture.stop(0.0)
        self.worker.stop(max(0.1, timeout_s / 2))
        for sid, pipe in pipes:
            left = max(0.1, timeout_s - (time.monotonic() - t0))
            self._results[sid] = pipe.stop(left)
        if self.status_out is not None and getattr(self.status_out, "isatty", lambda: False)():
            self.status_out.write("\n")
        self.events.close()
        return MultiResult(dict(self._results))

    def wait_threads(self, timeout_s: float) -> bool:
        return self.worker.stop(timeout_s)

    # -- reporting -------------------------------------------------------------------------
    def health(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            pipes = dict(self._streams)
        return {sid: pipe.health() for sid, pipe in pipes.items()}

    def _on_inference_error(self, stream: str, exc: Exception) -> None:
        log.error("inference failed on %s: %s", stream, exc)
        self.events.write(make_event("error", stream, where="inference",
                                     message=f"{type(exc).__name__}: {exc}"))

    def _print_status(self) -> None:
        """Per-stream status lines every 2 s (a terminal or not)."""
        if self.status_out is None or time.monotonic() - self._last_status < 2.0:
            return
        self._last_status = time.monotonic()
        for sid, h in self.health().items():
            label = h["stable_label"] or (f"({h['labels'][0]} {h['scores'][0]:.2f})"
                                          if h["labels"] else "-")
            lat = "-" if h["latency_ms"] is None else f"{h['latency_ms']:.0f}"
            self.status_out.write(f"[{sid}] in {h['input_fps']:5.1f} fps | "
                                  f"{h['clips_per_s']:4.1f} clips/s | latency {lat} ms | "
                                  f"drops {h['drops']} | {label[:40]}\n")
        self.status_out.flush()
