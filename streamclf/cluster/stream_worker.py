"""One stream on a cluster node: capture, windows, remote inference, smoothing, events.

The same parts as :class:`~streamclf.live.runner.StreamPipeline` (CaptureThread -> FrameRing ->
WindowScheduler -> Smoother), but the model is remote: each due window goes out as a
:class:`~streamclf.cluster.messages.ClipRequest` through the ``infer`` callable and at most
one window per stream is in flight, so a slow model means fewer, fresher windows (skipped
ones counted) rather than a queue. Events wait in an outbox until the driver drains them.

:class:`StreamWorker` has no Ray in it (tests pass any ``infer``); :class:`StreamActor` is
the Ray actor around it, whose ``infer`` sends the clip to the model actors in turn.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from streamclf.cluster.messages import ClipRequest, ClipResult, Drained, StreamTotals
from streamclf.config import RunConfig
from streamclf.errors import ModelError, StreamclfError
from streamclf.live.events import make_event, prediction_event
from streamclf.live.smoothing import Smoother, top_k
from streamclf.media.capture import CaptureThread
from streamclf.media.preprocess import resize_and_crop
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.media.sources import FrameSource, mask_credentials, open_source, parse_spec
from streamclf.models.registry import get_spec
from streamclf.types import BufferPolicy, Event, Frame, Prediction, Window

__all__ = ["InferenceStopped", "StreamActor", "StreamWorker"]

log = logging.getLogger(__name__)

#: ``infer(request, stop) -> result``; raises :class:`InferenceStopped` once ``stop`` is set.
RemoteInfer = Callable[[ClipRequest, threading.Event], ClipResult]
_OUTBOX_MAX = 20_000
_ERROR_PAUSE_S = 0.5  # after a failed window, so a dead model does not spin the loop


class InferenceStopped(Exception):
    """The stream was asked to stop while its window was in the model."""


class StreamWorker:
    """Runs one stream; the driver polls :meth:`drain` and finally calls :meth:`stop`.

    Args:
        config: this stream's settings (source, pace, loop, stride, smoothing, timeouts).
        labels: the model's class names (from a model actor), ``K`` of them.
        infer: sends a clip to the model and waits for its :class:`ClipResult`.
        source_factory: opens the source (tests); default: :func:`open_source` with the
            config's transport and timeouts.

    Thread-safety: :meth:`drain`, :meth:`totals` and :meth:`stop` may be called from any
    thread (Ray actor threads); capture and the window loop run on their own threads.
    """

    def __init__(self, config: RunConfig, labels: tuple[str, ...], infer: RemoteInfer,
                 source_factory: Callable[[], FrameSource] | None = None) -> None:
        self.config, self.labels, self._infer = config, tuple(labels), infer
        self.stream = config.stream_id
        self.spec = get_spec(config.model)
        self._factory = source_factory or self._default_factory()
        self._outbox: deque[Event] = deque()
        self._outbox_lock = threading.Lock()
        self._lost = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._latencies: list[float] = []
        self._windows = self._errors = 0
        self._stopped = False
        self._first: FrameSource | None = None
        self.ring: FrameRing | None = None
        self.scheduler: WindowScheduler | None = None
        self.capture: CaptureThread | None = None
        self.smoother = Smoother(self.labels, window=config.smooth, threshold=config.threshold,
                                 start_after=config.start_after, topk=config.topk)
        self._loop = threading.Thread(target=self._run, name=f"streamclf-{self.stream}",
                                      daemon=True)

    def _default_factory(self) -> Callable[[], FrameSource]:
        cfg = self.config
        kind, _ = parse_spec(cfg.source)
        options: dict[str, Any] = {"live": cfg.pace == "realtime"} if kind == "synthetic" else {
            "transport": cfg.transport, "open_timeout_ms": cfg.open_timeout_ms,
            "read_timeout_ms": cfg.read_timeout_ms}
        return lambda: open_source(cfg.source, **options)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> dict[str, Any]:
        """Open the source once (fail fast, learn its rate) and build ring and scheduler.

        Raises:
            SourceError: the source cannot be opened (message with credentials masked).
        """
        self._first = self._factory()
        info = self._first.info
        spec, cfg = self.spec, self.config
        duration = spec.clip_duration_s
        stride = cfg.stride or duration / 2.0
        fps = info.fps if info.fps and info.fps > 0 else 30.0
        capacity = max(16, math.ceil((duration + 2 * stride) * fps * 2) + 8)  # as StreamPipeline
        policy = BufferPolicy.LOSSLESS if cfg.pace == "fast" else BufferPolicy.LATEST
        crop = spec.crop_size
        self.ring = FrameRing(capacity, (crop, crop, 3), policy=policy, stream=self.stream,
                              transform=lambda img: resize_and_crop(img, spec.side_size, crop))
        self.scheduler = WindowScheduler(duration, stride, policy, frame_interval=1.0 / fps)
        self.capture = CaptureThread(
            self._source, on_frame=self._on_frame, stream_id=self.stream, pace=cfg.pace,
            loop=cfg.loop, on_event=self._on_capture_event,
            read_timeout_s=cfg.read_timeout_ms / 1000.0, max_reconnects=cfg.max_reconnects,
            backoff_initial_s=cfg.backoff_initial_s, backoff_max_s=cfg.backoff_max_s,
            backoff_jitter=cfg.backoff_jitter)
        return {"stream": self.stream, "source": info.name, "kind": info.kind, "fps": info.fps,
                "width": info.width, "height": info.height}

    def _source(self) -> FrameSource:
        first, self._first = self._first, None
        return first if first is not None else self._factory()

    def start(self) -> None:
        if self.capture is None:
            raise RuntimeError("open() first")
        self._loop.start()
        self.capture.start()

    def stop(self, timeout_s: float = 2.0) -> Drained:
        """Stop capture and the window loop (each bounded), end an open label, add the
        ``stopped`` event with the totals, and return every event not drained yet."""
        if not self._stopped:
            self._stopped = True
            t0 = time.monotonic()
            self._stop.set()
            self._wake.set()
            if self.capture is not None:
                self.capture.stop(timeout_s / 2)
            elif self._first is not None:
                self._first.close()
            if self._loop.is_alive():
                self._loop.join(max(0.1, timeout_s - (time.monotonic() - t0)))
            self._end_label()
            self._emit("stopped", **self._stopped_fields())
        return self.drain()

    # -- driver side -----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """The source ended (or gave up) and every due window was classified."""
        return self._finished.is_set()

    def totals(self) -> StreamTotals:
        ring, sched = self.ring, self.scheduler
        return StreamTotals(
            frames=self.capture.frames_read if self.capture is not None else 0,
            windows=self._windows, drops=ring.drops if ring is not None else 0,
            skipped_windows=sched.skipped if sched is not None else 0)

    def drain(self) -> Drained:
        """The events since the last call (oldest first) and the counters now."""
        with self._outbox_lock:
            events = tuple(self._outbox)
            self._outbox.clear()
            lost, self._lost = self._lost, 0
        return Drained(self.stream, events, self.totals(), self.finished, lost)

    # -- capture thread --------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> bool:
        assert self.ring is not None
        accepted = self.ring.push(frame)
        if accepted:
            self._wake.set()
        return accepted

    def _on_capture_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind in ("source_lost", "source_restored") and self.ring is not None:
            self.ring.reset()  # no window spans the gap
        self._emit(kind, **fields)

    # -- window loop -----------------------------------------------------------------------
    def _run(self) -> None:
        ring, sched, capture = self.ring, self.scheduler, self.capture
        assert ring is not None and sched is not None and capture is not None
        epoch = ring.epoch
        while not self._stop.is_set():
            if ring.epoch != epoch:
                epoch = ring.epoch
                sched.reset()
                self._end_label()
            span = ring.span()
            due = sched.poll(*span) if span is not None else None
            if due is None:
                if capture.finished.is_set():
                    self._finished.set()  # end of file (or gave up) and nothing left to cut
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            window = ring.window(due, sched.duration, self.spec.num_frames)
            keep_from = sched.next_window_start()
            if keep_from is not None:
                ring.release_before(keep_from)
            if window is None or window.epoch != epoch:
                continue
            if not self._classify(window):
                break

    def _classify(self, window: Window) -> bool:
        """Send one window out and publish its result; False when stopping."""
        request = ClipRequest(self.stream, window.frames, window.wall_start, window.wall_end,
                              self._windows + self._errors)
        try:
            result = self._infer(request, self._stop)
        except InferenceStopped:
            return False
        except Exception as exc:  # one failed window (or a lost model actor) must not end it
            self._errors += 1
            log.error("stream %s: inference failed: %s", self.stream, exc)
            self._emit("error", where="inference", message=f"{type(exc).__name__}: {exc}")
            self._stop.wait(_ERROR_PAUSE_S)
            return True
        self._publish(window, result)
        return True

    def _publish(self, window: Window, result: ClipResult) -> None:
        probs = np.asarray(result.probs, dtype=np.float32)
        smoothed = self.smoother.update(probs)
        raw_labels, raw_scores = top_k(probs, self.labels, self.config.topk)
        pred = Prediction(
            stream=self.stream, window_start=window.wall_start, window_end=window.wall_end,
            published=time.time(), inference_ms=result.inference_ms, labels=smoothed.labels,
            scores=smoothed.scores, raw_labels=raw_labels, raw_scores=raw_scores,
            features=np.zeros(0, np.float32), stable_label=smoothed.stable_label)
        event = prediction_event(pred, input_fps=round(self.capture.fps, 2),
                                 drops=self.ring.drops)
        self._windows += 1
        self._latencies.append(pred.latency_ms)
        self._put(Event(event.type, event.stream, event.ts,
                        {**event.fields, "batch": result.batch, "model_actor": result.actor}))
        for change in smoothed.changes:
            self._emit(change.kind, label=change.label, score=round(change.score, 4))

    # -- events ----------------------------------------------------------------------------
    def _end_label(self) -> None:
        for change in self.smoother.reset():
            self._emit(change.kind, label=change.label, score=round(change.score, 4))

    def _stopped_fields(self) -> dict[str, Any]:
        totals = self.totals()
        fields: dict[str, Any] = {
            "frames": totals.frames, "windows": totals.windows, "drops": totals.drops,
            "skipped_windows": totals.skipped_windows, "inference_errors": self._errors}
        if self._latencies:
            lat = np.asarray(self._latencies)
            fields["latency_ms_p50"] = round(float(np.percentile(lat, 50)), 1)
            fields["latency_ms_p95"] = round(float(np.percentile(lat, 95)), 1)
        error = self.capture.error if self.capture is not None else None
        if error is not None:
            fields["error"] = mask_credentials(str(error))
        return fields

    def _emit(self, type_: str, /, **fields: Any) -> None:
        self._put(make_event(type_, self.stream, **fields))

    def _put(self, event: Event) -> None:
        with self._outbox_lock:
            if len(self._outbox) >= _OUTBOX_MAX:  # the driver stopped polling: keep the newest
                self._outbox.popleft()
                self._lost += 1
            self._outbox.append(event)


class StreamActor:
    """The Ray actor around a :class:`StreamWorker` (create with ``ray.remote``).

    Args:
        config: this stream's settings.
        labels: the model's class names.
        models: handles of the model actors.
        first: the replica this stream sends its windows to (streams next to each other in
            the config share one, so that their windows batch); after a failed window the
            stream moves on to the next replica.
        infer_timeout_s: longest wait for one window's answer.
    """

    def __init__(self, config: RunConfig, labels: tuple[str, ...], models: list[Any],
                 first: int = 0, infer_timeout_s: float = 30.0) -> None:
        self._models, self._current, self._timeout = list(models), first, infer_timeout_s
        self.worker = StreamWorker(config, labels, self._infer)

    def open(self) -> dict[str, Any]:
        """Open the source; ``{"error": message}`` when it cannot be opened."""
        import socket

        try:
            info = self.worker.open()
        except StreamclfError as exc:
            return {"stream": self.worker.stream, "error": mask_credentials(str(exc))}
        return {**info, "node": socket.gethostname()}

    def start(self) -> None:
        self.worker.start()

    def drain(self) -> Drained:
        return self.worker.drain()

    def stop(self, timeout_s: float = 2.0) -> Drained:
        return self.worker.stop(timeout_s)

    def _infer(self, request: ClipRequest, stop: threading.Event) -> ClipResult:
        import ray

        ref = self._models[self._current % len(self._models)].infer.remote(request,
                                                                             self._timeout)
        deadline = time.monotonic() + self._timeout + 1.0
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=0.1)
                if ready:
                    return ray.get(ready[0])  # type: ignore[no-any-return]
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
