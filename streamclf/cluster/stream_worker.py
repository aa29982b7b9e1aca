"""One stream on a cluster node: the live engine's :class:`~streamclf.live.runner.StreamRunner`
with a remote model.

:class:`RemoteBackend` is an :class:`~streamclf.engine.backends.base.InferenceBackend` whose
``infer`` sends the clip to the model actors (as a
:class:`~streamclf.cluster.messages.ClipRequest`) and waits for the answer, so capture, the
ring, the scheduler, the worker, smoothing and events are exactly those of a local run. At
most one window per stream is in flight: a slow model means fewer, fresher windows (skipped
ones counted) rather than a queue. Events wait in a bounded :class:`Outbox` (an event sink)
until the driver drains them.

:class:`StreamActor` runs without Ray too (tests pass any ``infer``); ``streamclf cluster``
makes it a Ray actor whose ``infer`` asks the model actors in turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streamclf.cluster.messages import ClipRequest, ClipResult, Drained
from streamclf.config import StreamConfig
from streamclf.engine.batcher import InferenceWorker
from streamclf.errors import ModelError, StreamclfError
from streamclf.live.parts import source_options
from streamclf.live.runner import StreamRunner
from streamclf.live.sinks import EventBus
from streamclf.masking import mask_credentials
from streamclf.media.sources import FrameSource, open_source
from streamclf.models.registry import get_spec
from streamclf.types import Event, StreamTotals

__all__ = ["InferenceStopped", "Outbox", "RemoteBackend", "StreamActor"]

log = logging.getLogger(__name__)

#: ``infer(request, stop) -> result``; raises :class:`InferenceStopped` once ``stop`` is set.
RemoteInfer = Callable[[ClipRequest, threading.Event], ClipResult]
OUTBOX_MAX = 20_000


class InferenceStopped(Exception):
    """The stream was asked to stop while its window was in the model."""


class Outbox:
    """An event sink that keeps events until :meth:`take`; holds at most ``maxlen`` (the
    newest; older ones are dropped and counted). Thread-safe."""

    def __init__(self, maxlen: int = OUTBOX_MAX) -> None:
        self._events: deque[Event] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self._lost = 0

    def write(self, event: Event) -> None:
        with self._lock:
            if len(self._events) >= self._maxlen:  # the driver stopped polling
                self._events.popleft()
                self._lost += 1
            self._events.append(event)

    def take(self) -> tuple[tuple[Event, ...], int]:
        """Every event held (oldest first) and how many were dropped since the last take."""
        with self._lock:
            events, lost = tuple(self._events), self._lost
            self._events.clear()
            self._lost = 0
        return events, lost


class RemoteBackend:
    """Runs clips on the model actors through ``infer``; one clip per call.

    ``last_meta()`` gives the last answer's ``batch`` (clips in the model call that held
    it) and ``model_actor``, added to the ``prediction`` event. Called from the worker
    thread only.
    """

    name = "remote"

    def __init__(self, stream: str, labels: Sequence[str], infer: RemoteInfer,
                 stop: threading.Event) -> None:
        self.stream, self.labels = stream, tuple(labels)
        self._infer, self._stop = infer, stop
        self._index = 0
        self._meta: dict[str, Any] = {}

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs = []
        for frames in clips:
            now = time.time()
            request = ClipRequest(self.stream, frames, now, now, self._index)
            self._index += 1
            result = self._infer(request, self._stop)
            self._meta = {"batch": result.batch, "model_actor": result.actor}
            probs.append(np.asarray(result.probs, dtype=np.float32))
        return np.stack(probs), np.zeros((len(probs), 0), np.float32)

    def last_meta(self) -> dict[str, Any]:
        return dict(self._meta)


def _close_all(sources: list[FrameSource]) -> None:
    for source in sources:
        source.close()


class StreamActor:
    """One stream of a cluster run: a :class:`StreamRunner` on a :class:`RemoteBackend`.

    Args:
        config: this stream's settings.
        model: the model's name (its clip geometry).
        labels: the model's class names.
        models: handles of the model actors (Ray); unused when ``infer`` is given.
        first: the replica this stream sends its windows to (streams next to each other in
            the config share one, so that their windows batch); after a failed window the
            stream moves on to the next replica.
        infer_timeout_s: longest wait for one window's answer.
        infer: sends a clip and waits for its result (tests); default: the model actors.
        source_factory: opens the source (tests); default: the config's source.

    Thread-safety: the methods may be called from any thread (Ray actor threads).
    """

    def __init__(self, config: StreamConfig, model: str, labels: tuple[str, ...],
                 models: Sequence[Any] = (),
                 first: int = 0, infer_timeout_s: float = 30.0, *,
                 infer: RemoteInfer | None = None,
                 source_factory: Callable[[], FrameSource] | None = None) -> None:
        self.config, self.model, self.labels = config, model, tuple(labels)
        self.stream = config.stream_id
        self._models, self._current, self._timeout = list(models), first, infer_timeout_s
        self._stop = threading.Event()
        self.outbox = Outbox()
        self.bus = EventBus()
        self.bus.add_sink(self.outbox, "outbox", inline=True)
        self.remote = RemoteBackend(self.stream, labels, infer or self._ray_infer, self._stop)
        self.worker = InferenceWorker(self.remote, on_error=self._on_error, max_batch=1)
        self._factory = source_factory or self._default_factory()
        self.runner: StreamRunner | None = None
        self._stopped: Drained | None = None

    def _default_factory(self) -> Callable[[], FrameSource]:
        cfg = self.config
        options = source_options(cfg)
        return lambda: open_source(cfg.source, **options)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> dict[str, Any]:
        """Open the source once (fail fast, learn its rate) and build the runner;
        ``{"error": message}`` when the source cannot be opened."""
        import socket

        try:
            first = [self._factory()]
        except StreamclfError as exc:
            return {"stream": self.stream, "error": mask_credentials(str(exc))}
        info = first[0].info

        def factory() -> FrameSource:
            return first.pop() if first else self._factory()

        self.runner = StreamRunner(
            self.config, get_spec(self.model), self.labels, self.bus, self.worker,
            factory, source_fps_hint=info.fps, backend_name=self.remote.name,
            extra_fields=self.remote.last_meta, close_parts=lambda: _close_all(first))
        return {"stream": self.stream, "source": info.name, "kind": info.kind, "fps": info.fps,
                "width": info.width, "height": info.height, "node": socket.gethostname()}

    def start(self) -> None:
        if self.runner is None:
            raise RuntimeError("open() first")
        self.worker.start()
        self.runner.start()

    def stop(self, timeout_s: float = 2.0) -> Drained:
        """Stop capture and the worker (each bounded), end an open label, publish
        ``stopped`` with the totals, and return every event not drained yet."""
        if self._stopped is None and self.runner is not None:
            t0 = time.monotonic()
            self._stop.set()  # a window waiting on the model gives up
            self.runner.stop_capture()
            self.worker.stop(max(0.1, timeout_s / 2))
            self.runner.stop(max(0.1, timeout_s - (time.monotonic() - t0)))
        return self.drain()

    # -- driver side -----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """The source ended (or gave up) and every due window was classified."""
        return self.runner is not None and self.runner.finished()

    def drain(self) -> Drained:
        """The events since the last call (oldest first) and the counters now."""
        events, lost = self.outbox.take()
        totals = self.runner.totals() if self.runner is not None else StreamTotals()
        return Drained(self.stream, events, totals, self.finished, lost)

    # -- worker thread ---------------------------------------------------------------------
    def _on_error(self, stream: str, exc: Exception) -> None:
        if isinstance(exc, InferenceStopped) or self._stop.is_set():
            return  # stopping: the window is dropped, not an error
        if self.runner is not None:
            self.runner.on_inference_error(exc)

    def _ray_infer(self, request: ClipRequest, stop: threading.Event) -> ClipResult:
        import ray

        ref = self._models[self._current % len(self._models)].infer.remote(request,
                                                                             self._timeout)
        deadline = time.monotonic() + self._timeout + 1.0
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=0.1)
                if ready:
                    result: ClipResult = ray.get(ready[0])
                    return result
                if stop.is_set():
                    raise InferenceStopped
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from the model within {self._timeout:g} s")
        except TimeoutError:
            self._current += 1  # try the next replica with the next window
            raise
        except ray.exceptions.RayTaskError as exc:  # the model raised: report its own error
            self._current += 1
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else
                   ModelError(str(exc).splitlines()[0])) from None
        except ray.exceptions.RayError as exc:  # the replica died (Ray restarts it)
            lost = self._current % len(self._models)
            self._current += 1
            raise ModelError(f"model actor {lost} unavailable ({type(exc).__name__})") from None
