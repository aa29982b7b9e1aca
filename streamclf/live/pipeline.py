"""``LivePipeline``: a live run. N streams, one model, one batching worker, one event bus.

    stream A: StreamRunner (capture -> ring) ─┐
    stream B: StreamRunner                   ─┼─> InferenceWorker (batches up to max_batch
    stream C: ...                            ─┘   windows, one per stream)
          -> each runner's Smoother -> EventBus -> sinks (JSONL log, status line, web, ...)

A single-stream run is a pipeline with one stream. Streams can be added and removed while
the others run (the SIGHUP reload and ``/api/streams``). Use it as a context manager::

    config = RunConfig(model="x3d_xs", streams=[StreamConfig(id="cam0", source="clip.mp4")])
    with LivePipeline(config, sinks=[print]) as run:
        run.join()  # every stream has ended, or config.duration passed
    print(run.result)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends.base import InferenceBackend
from streamclf.engine.batcher import InferenceWorker
from streamclf.errors import ConfigError
from streamclf.live.events import EventLog
from streamclf.live.overlay import FrameSink, OverlayRenderer
from streamclf.live.parts import OpenStream, open_stream_parts
from streamclf.live.runner import StreamRunner
from streamclf.live.sinks import EventBus, Sink, SinkHealth
from streamclf.live.status import StatusLine
from streamclf.models.registry import ModelSpec
from streamclf.sinks.clips import EVENT_TYPES as CLIP_EVENTS
from streamclf.sinks.clips import ClipRecorders
from streamclf.types import EventType, StreamHealth, StreamTotals, WindowScores

__all__ = ["FrameSinks", "LivePipeline", "RunResult"]

log = logging.getLogger(__name__)
#: ``frame_sinks(stream_id, health)``: extra overlay outputs for a new stream (the web
#: view's MJPEG); ``health`` is that stream's :meth:`StreamRunner.health`.
FrameSinks = Callable[[str, Callable[[], StreamHealth]], Sequence[FrameSink]]


@dataclass(frozen=True)
class RunResult:
    """Each stream's totals by id, in the order they ended."""

    streams: dict[str, StreamTotals]

    @property
    def error(self) -> str | None:
        """Every stream error, ``"id: message"`` joined by ``; `` (None: no error)."""
        errors = [f"{sid}: {t.error}" for sid, t in self.streams.items() if t.error]
        return "; ".join(errors) or None

    @property
    def exit_code(self) -> int:
        """1 when every stream failed, else 0 (one dead camera of many is an event)."""
        failed = [t for t in self.streams.values() if t.error]
        return 1 if self.streams and len(failed) == len(self.streams) else 0


class LivePipeline:
    """Runs the streams of a :class:`RunConfig` on one backend.

    Args:
        config: the run (model, outputs, batching) and its streams.
        sinks: event sinks (see :mod:`streamclf.live.sinks`), each on its own queue.
        backend: runs the model; default: loaded from ``config`` (the one way to load a
            model, :func:`~streamclf.engine.load.load_backend`). Tests pass a fake one; a
            cluster actor passes a remote one.
        spec: the clip geometry of a given ``backend``'s model (default: the zoo spec of
            ``config.model``; a fine-tuned checkpoint may have its own crop size).
        status_out: where the status line goes (None: no status line).
        open_stream: opens a stream's source and outputs (default: real ones).
        frame_sinks: extra overlay outputs per stream (see :data:`FrameSinks`).
        score_taps: called on the worker thread with every published window's full scores
            (:class:`~streamclf.types.WindowScores`), for timelines and threshold sweeps;
            each must return at once.

    The JSON Lines log (``config.events``) is attached inline: lossless, in ``seq`` order;
    the event store (``config.db``, :mod:`streamclf.sinks.store`) as a queued sink; the
    alert clips (``config.clips``, :mod:`streamclf.sinks.clips`) as one too, with a frame
    tap on each stream.

    Raises:
        ConfigError, SourceError, ModelError: bad settings, a source that cannot be opened
            (a file; a live source that cannot be opened goes to reconnecting), a model that
            cannot be loaded. Nothing is left running.

    Thread-safety: ``add_stream``, ``remove_stream``, ``request_stop``, ``health`` and
    ``add_sink`` from any thread; ``start``/``join``/``stop``/``run`` from the owner.
    """

    def __init__(self, config: RunConfig, *, sinks: Sequence[Sink] = (),
                 backend: InferenceBackend | None = None, status_out: TextIO | None = None,
                 open_stream: OpenStream = open_stream_parts,
                 frame_sinks: FrameSinks | None = None,
                 score_taps: Sequence[Callable[[WindowScores], None]] = (),
                 spec: ModelSpec | None = None) -> None:
        from streamclf.engine.load import load_backend
        from streamclf.media.sources import parse_spec
        from streamclf.models.registry import get_spec
        from streamclf.outputs import check_outputs

        if not isinstance(config, RunConfig):
            raise ConfigError(f"LivePipeline needs a RunConfig, got {type(config).__name__}")
        self.config = config
        for stream in config.streams:
            parse_spec(stream.source)  # an unknown URL scheme fails before the model loads
        check_outputs(config)  # no output over an input or a foreign file, before opening
        if backend is None:
            loaded = load_backend(config)
            self.spec, self.backend, self.backend_reason = (loaded.spec, loaded.backend,
                                                            loaded.reason)
        else:
            self.spec, self.backend = spec or get_spec(config.model), backend
            self.backend_reason = f"{backend.name} (given)"
        self.bus = EventBus()
        self.worker = InferenceWorker(self.backend, on_error=self._on_inference_error,
                                      max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)
        self._open_stream, self._frame_sinks = open_stream, frame_sinks
        self._score_taps = tuple(score_taps)
        self._runners: dict[str, StreamRunner] = {}
        self._results: dict[str, StreamTotals] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = self._closed = False
        self._clips: ClipRecorders | None = None  # event clips (config.clips)
        if config.events is not None:
            self.bus.add_sink(EventLog(config.events, max_bytes=config.events_max_bytes),
                              "events", inline=True)
        try:
            if status_out is not None:
                self.bus.add_sink(StatusLine(status_out), "status", maxsize=1000)
            if config.webhook is not None:
                from streamclf.sinks.webhook import WebhookForwarder

                hook = WebhookForwarder.from_config(config.webhook)
                hook.start()
                self.bus.add_sink(hook, "webhook", inline=True,  # never blocks: own queue
                                  types={EventType.ALERT} if config.webhook.alerts_only
                                  else None)
            if config.mqtt is not None:  # alerts, labels: its own queue and thread
                from streamclf.sinks.mqtt import MqttSink

                self.bus.add_sink(MqttSink(config.mqtt).start(), "mqtt", inline=True,
                                  types=MqttSink.TYPES)
            if config.db is not None:  # labels, alerts, errors: committed on its own thread
                from streamclf.sinks.store import STORED_TYPES, EventStore

                self.bus.add_sink(EventStore(config.db), "db", types=STORED_TYPES)
            if config.clips is not None:  # alert clips: a tap per stream, their own threads
                self._clips = ClipRecorders(config.clips)
                self.bus.add_sink(self._clips, "clips", types=CLIP_EVENTS)
            for sink in sinks:
                self.add_sink(sink)
            for stream in config.streams:
                self.add_stream(stream)
        except BaseException:
            self.close_unstarted()
            raise

    def add_sink(self, sink: Sink, name: str | None = None, **options: Any) -> None:
        """Attach one more event sink (see :meth:`EventBus.add_sink`)."""
        self.bus.add_sink(sink, name, **options)

    # -- streams ---------------------------------------------------------------------------
    @property
    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._runners)

    def stream(self, stream_id: str) -> StreamRunner:
        with self._lock:
            return self._runners[stream_id]

    @property
    def clips(self) -> ClipRecorders | None:
        """The run's alert clips recorder (its counters); None without ``config.clips``."""
        return self._clips

    def add_stream(self, config: StreamConfig) -> StreamRunner:
        """Open ``config``'s source and outputs; start it at once if the run has started.

        Raises:
            ConfigError: the id is taken, or the run has ended. SourceError: the source
                cannot be opened.
        """
        if not isinstance(config, StreamConfig):
            raise ConfigError(f"add_stream needs a StreamConfig, got {type(config).__name__}")
        with self._lock:
            if self._closed:
                raise ConfigError("the run has ended")
            if config.stream_id in self._runners:
                raise ConfigError(f"stream {config.stream_id!r} is already running")
            factory, outputs, fps, close = self._open_stream(config)
            try:
                sinks: list[FrameSink] = list(outputs)
                runner_box: list[StreamRunner] = []
                taps = []
                if self._clips is not None:  # the event clips' pre-roll: a frame tap
                    factory, tap = self._clips.attach(config.stream_id, factory)
                    taps.append(tap)
                if self._frame_sinks is not None:
                    sinks.extend(self._frame_sinks(config.stream_id,
                                                   lambda: runner_box[0].health()))
                renderer = None
                if sinks:
                    renderer = OverlayRenderer(
                        sinks, on_error=lambda m: runner_box[0].on_output_error(m))
                runner = StreamRunner(config, self.spec, self.backend.labels, self.bus,
                                      self.worker, factory, renderer=renderer,
                                      source_fps_hint=fps, backend_name=self.backend.name,
                                      close_parts=close, clips=self.config.clips,
                                      frame_taps=taps, score_taps=self._score_taps)
            except BaseException:
                close()
                raise
            runner_box.append(runner)
            self._runners[config.stream_id] = runner
            self._results.pop(config.stream_id, None)
            if self._started:
                runner.start()
            log.info("stream %s added: %s", config.stream_id, runner.source_name)
            return runner

    def remove_stream(self, stream_id: str, timeout_s: float = 2.0) -> StreamTotals:
        """Stop one stream (its ``stopped`` event is published); the others go on.

        Raises:
            ConfigError: no such stream.
        """
        with self._lock:
            runner = self._runners.pop(stream_id, None)
        if runner is None:
            raise ConfigError(f"no stream {stream_id!r}; running: {', '.join(self.stream_ids)}")
        totals = runner.stop(timeout_s)
        with self._lock:
            self._results[stream_id] = totals
        log.info("stream %s removed", stream_id)
        return totals

    # -- run -------------------------------------------------------------------------------
    def start(self) -> LivePipeline:
        """Start the worker and every stream."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            runners = list(self._runners.values())
        self.worker.start()
        for runner in runners:
            runner.start()
        return self

    def request_stop(self) -> None:
        """Make :meth:`join` return (any thread, signal handlers included)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every stream has ended (each ended stream is stopped and leaves),
        :meth:`request_stop`, or ``timeout_s`` (default: the config's ``duration``, else no
        limit). True when every stream has ended."""
        limit = self.config.duration if timeout_s is None else timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                runners = list(self._runners.items())
            for sid, runner in runners:
                if runner.finished():
                    self.remove_stream(sid)
            if not runners:
                return True
            if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            self._stop.wait(0.05)

    def run(self, duration_s: float | None = None) -> RunResult:
        """Start, :meth:`join` (up to ``duration_s``, default the config's ``duration``),
        stop; returns the totals."""
        self.start()
        try:
            self.join(duration_s)
        finally:
            result = self.stop()
        return result

    def stop(self, timeout_s: float = 2.0) -> RunResult:
        """Stop every stream's capture, then the worker, then publish each ``stopped``, then
        flush and close every sink. Idempotent."""
        t0 = time.monotonic()
        with self._lock:
            runners = list(self._runners.items())
            self._runners.clear()
            self._closed = True
        for _, runner in runners:
            runner.stop_capture()
        if not self.worker.stop(max(0.1, timeout_s / 2)):
            # A window is still in the model (slow CPU); its result would come after
            # `stopped`, so it is dropped.
            log.info("inference thread still busy at stop; its last window is dropped")
        for sid, runner in runners:
            left = max(0.1, timeout_s - (time.monotonic() - t0))
            self._results[sid] = runner.stop(left)
        self.bus.close(max(0.5, timeout_s - (time.monotonic() - t0)))
        return self.result

    def close_unstarted(self) -> None:
        """For a run that never started: close every opened source and the sinks."""
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
            self._closed = True
        for runner in runners:
            runner.close_unstarted()
        self.bus.close(0.5)

    @property
    def result(self) -> RunResult:
        return RunResult(dict(self._results))

    def __enter__(self) -> LivePipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reporting -------------------------------------------------------------------------
    def health(self) -> dict[str, StreamHealth]:
        with self._lock:
            runners = dict(self._runners)
        return {sid: runner.health() for sid, runner in runners.items()}

    def sink_health(self) -> list[SinkHealth]:
        return self.bus.sink_health()

    def _on_inference_error(self, stream: str, exc: Exception) -> None:
        with self._lock:
            runner = self._runners.get(stream)
        if runner is not None:
            runner.on_inference_error(exc)
        else:
            log.error("inference failed on %s: %s", stream, exc)
