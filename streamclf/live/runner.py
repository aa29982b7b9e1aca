"""``StreamRunner``: one live stream, the only live loop there is.

    source -> CaptureThread -> FrameRing -> (a slot on the shared InferenceWorker:
           WindowScheduler, backend) -> Smoother -> events on the run's EventBus
                                     \\-> frames -> OverlayRenderer (video file, window, MJPEG)

A runner owns no model and no thread of inference: the :class:`~streamclf.live.pipeline.
LivePipeline` gives it the worker (local backend, or a remote one in a cluster actor) and the
bus every sink hangs on. Single-stream, multi-stream and cluster runs all go through here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from streamclf.config import StreamConfig
from streamclf.engine.batcher import InferenceWorker, StreamSlot
from streamclf.live.alerts import AlertTracker
from streamclf.live.events import make_event, prediction_event
from streamclf.live.overlay import OverlayRenderer, OverlayStatus
from streamclf.live.parts import LIVE_KINDS
from streamclf.live.sinks import EventBus
from streamclf.live.smoothing import Smoother, top_k
from streamclf.masking import mask_credentials
from streamclf.media.capture import CaptureThread
from streamclf.media.reach import tcp_probe
from streamclf.media.ring import FrameRing
from streamclf.media.roi import resolve_roi, roi_transform
from streamclf.media.scheduler import WindowScheduler
from streamclf.media.sources import MAX_FPS, FrameSource, parse_spec
from streamclf.models.registry import ModelSpec
from streamclf.sections import ClipsConfig
from streamclf.types import (
    BufferPolicy,
    EventType,
    Frame,
    Prediction,
    StreamHealth,
    StreamTotals,
    Window,
    WindowScores,
)

__all__ = ["LATENCY_HISTORY", "StreamRunner"]

log = logging.getLogger(__name__)

#: Predictions whose latency the `stopped` event's percentiles are taken over (the latest).
LATENCY_HISTORY = 100_000
_STATE = {EventType.SOURCE_OPENED: "live", EventType.SOURCE_RESTORED: "live",
          EventType.SOURCE_LOST: "lost", EventType.RECONNECT_FAILED: "reconnecting",
          EventType.ERROR: "failed"}


class StreamRunner:
    """Runs one stream on a shared worker and bus.

    Args:
        config: the stream's settings (source, pace, stride, smoothing, reconnects, ...).
        spec: the model's clip geometry (frames, clip duration, side and crop size).
        labels: the model's class names, ``K`` of them.
        bus: where every event of this stream is published.
        worker: the inference worker this stream's windows go to (started by its owner).
        source_factory: opens the source; its first call may return one opened already.
        renderer: draws the overlay for the frame sinks (video file, window, MJPEG); None
            without any.
        source_fps_hint: the source's declared rate, to size the ring.
        backend_name: shown in health.
        extra_fields: called on the worker thread for each prediction; its fields are added
            to the ``prediction`` event (a cluster actor adds ``batch`` and ``model_actor``).
        close_parts: closes what was opened for a stream that is never started.
        frame_taps: called on the capture thread with each frame the ring took (its picture
            at the source's resolution, not converted); must return at once (e.g. the event
            clips' pre-roll buffer keeps the reference and goes).
        clips: the run's event clips; with ``config.alerts``, its alerts' ``end`` events name
            their clip and snapshot (:class:`~streamclf.live.alerts.AlertTracker`).
        score_taps: called on the worker thread with each published window's full scores
            (:class:`~streamclf.types.WindowScores`); must return at once.

    Thread-safety: ``start``/``stop`` from the owner's thread; ``health``, ``totals`` and
    ``finished`` from any thread (counters are read without locks and may be one frame
    apart). Capture callbacks run on the capture thread, publish on the worker thread.
    """

    def __init__(self, config: StreamConfig, spec: ModelSpec, labels: tuple[str, ...],
                 bus: EventBus, worker: InferenceWorker,
                 source_factory: Callable[[], FrameSource], *,
                 renderer: OverlayRenderer | None = None, source_fps_hint: float = 30.0,
                 backend_name: str = "",
                 extra_fields: Callable[[], Mapping[str, Any]] | None = None,
                 close_parts: Callable[[], None] | None = None,
                 frame_taps: Sequence[Callable[[Frame], None]] = (),
                 clips: ClipsConfig | None = None,
                 score_taps: Sequence[Callable[[WindowScores], None]] = ()) -> None:
        self.config, self.spec, self.labels = config, spec, tuple(labels)
        self._frame_taps = tuple(frame_taps)
        self._score_taps = tuple(score_taps)
        self.bus, self.worker, self.renderer = bus, worker, renderer
        self.stream = config.stream_id
        self.source_name = mask_credentials(str(config.source))
        self.backend_name = backend_name
        self._extra = extra_fields
        self._close_parts = close_parts or (lambda: None)
        self._live = parse_spec(config.source)[0] in LIVE_KINDS
        policy = BufferPolicy.LOSSLESS if config.pace == "fast" else BufferPolicy.LATEST
        duration = spec.clip_duration_s
        stride = config.stride or duration / 2.0
        # A rate outside (0, MAX_FPS] is a broken header: size for 30 fps (LOSSLESS grows).
        fps = source_fps_hint if source_fps_hint and 0 < source_fps_hint <= MAX_FPS else 30.0
        # Hold one window plus two strides of frames at up to 2x the declared rate.
        capacity = max(16, math.ceil((duration + 2 * stride) * fps * 2) + 8)
        crop, roi = spec.crop_size, config.roi
        self.ring = FrameRing(
            capacity, (crop, crop, 3),
            transform=roi_transform(roi, spec.side_size, crop),  # the model's region
            policy=policy, stream=self.stream, window_s=duration + 2.0 / fps,
            max_bytes=int(config.ring_mb * (1 << 20)),
            check=None if roi is None else (lambda h, w: resolve_roi(roi, h, w)),
        )
        self.scheduler = WindowScheduler(duration, stride, policy, frame_interval=1.0 / fps)
        self.smoother = Smoother(self.labels, window=config.smooth, threshold=config.threshold,
                                 start_after=config.start_after, topk=config.topk)
        self.slot = StreamSlot(self.stream, self.ring, self.scheduler, spec.num_frames,
                               publish=self._publish, on_reset=self._on_reset)
        self.capture = CaptureThread(
            source_factory, on_frame=self._on_frame, stream_id=self.stream,
            pace=config.pace, loop=config.loop, on_event=self._on_capture_event,
            read_timeout_s=config.read_timeout_ms / 1000.0, max_reconnects=config.max_reconnects,
            backoff_initial_s=config.backoff_initial_s, backoff_max_s=config.backoff_max_s,
            backoff_jitter=config.backoff_jitter,
            retry_first_open=self._live, probe=tcp_probe(str(config.source)),
        )
        self._pending_error: dict[str, Any] | None = None  # a file's failure, see finished()
        self.source_state = "opening"
        self._status = OverlayStatus(stream=self.stream, roi=config.roi)
        self._last_pred: Prediction | None = None
        self._lock = threading.Lock()  # publish vs. the final `stopped`
        self._started = self._stopped = False
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._published = 0  # predictions published (a window done after stop() is not)
        self._inference_errors = 0
        self._clip_rate = 0.0
        self._last_publish: float | None = None
        self._final: StreamTotals | None = None
        self._alerts = None if config.alerts is None else AlertTracker(
            self.stream, config.alerts, self.labels, clips)
        self._media_ts = 0.0  # the last published window's end, in media time

    # -- events ----------------------------------------------------------------------------
    def emit(self, type_: EventType | str, /, **fields: Any) -> None:
        """Publish one event of this stream (any thread)."""
        self.bus.publish(make_event(type_, self.stream, **fields))

    def on_inference_error(self, exc: Exception) -> None:
        """The worker failed on one of this stream's windows (worker thread)."""
        self._inference_errors += 1
        log.error("inference failed on %s: %s", self.stream, exc)
        self.emit(EventType.ERROR, where="inference", message=f"{type(exc).__name__}: {exc}")

    def on_output_error(self, message: str) -> None:
        """An overlay output failed (e.g. the video file hit a full disk); the stream goes on."""
        log.error("overlay: %s", message)
        self.emit(EventType.ERROR, source="output", message=mask_credentials(message))

    # -- capture thread --------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> bool:
        accepted = self.ring.push(frame)
        if accepted:
            self.worker.notify()
            if self.renderer is not None:
                self.renderer.submit(frame.picture, self._status)
            for tap in self._frame_taps:
                tap(frame)
        return accepted

    def _on_capture_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind in ("source_lost", "source_restored"):
            # No window spans the gap: a new ring epoch, and the worker resets the scheduler
            # and the smoother (ending a stable label) when it sees it.
            self.ring.reset()
        self.source_state = _STATE.get(EventType(kind), self.source_state)
        if kind == "error" and not self._live:
            # A file that fails part-way (truncated, corrupt): its frames read before the
            # failure are still classified; the error comes after those windows.
            self._pending_error = fields
            return
        self.emit(kind, **fields)

    def _flush_pending_error(self) -> None:
        pending, self._pending_error = self._pending_error, None
        if pending is not None:
            self.emit(EventType.ERROR, **pending)

    # -- worker thread ---------------------------------------------------------------------
    def _on_reset(self, reason: str = "reset") -> None:
        for change in self.smoother.reset():  # at the last window's media time
            self.emit(change.kind, label=change.label, score=round(change.score, 4),
                      media_ts=round(self._media_ts, 3))
        for alert in self._alerts.finish(reason, time.time()) if self._alerts else ():
            self.bus.publish(alert)

    def _publish(self, window: Window, probs: np.ndarray, feats: np.ndarray,
                 inference_ms: float) -> None:
        with self._lock:
            if self._stopped:  # finished after the stream stopped: its `stopped` is out
                return
            now = time.monotonic()
            if self._last_publish is not None:
                rate = 1.0 / max(now - self._last_publish, 1e-6)
                old = self._clip_rate
                self._clip_rate = rate if old == 0 else 0.8 * old + 0.2 * rate
            self._last_publish = now
            smoothed = self.smoother.update(probs)
            raw_labels, raw_scores = top_k(probs, self.labels, self.config.topk)
            media_start, media_ts = window.media_span
            self._media_ts = media_ts
            pred = Prediction(
                stream=self.stream, window_start=window.wall_start, window_end=window.wall_end,
                published=time.time(), inference_ms=inference_ms, labels=smoothed.labels,
                scores=smoothed.scores, raw_labels=raw_labels, raw_scores=raw_scores,
                features=feats, stable_label=smoothed.stable_label, media_start=media_start,
                media_ts=media_ts,
            )
            event = prediction_event(pred, input_fps=round(self.capture.fps, 2),
                                     drops=self.ring.drops)
            if self._extra is not None:
                event = make_event(event.type, event.stream, event.ts,
                                   **{**event.fields, **self._extra()})
            self.bus.publish(event)
            for change in smoothed.changes:
                self.emit(change.kind, label=change.label, score=round(change.score, 4),
                          media_ts=round(media_ts, 3))
            if self._score_taps:
                scores = WindowScores(self.stream, media_start, media_ts,
                                      np.array(probs, np.float32), smoothed.probs.copy(),
                                      smoothed.stable_label, self.labels)
                for tap in self._score_taps:
                    tap(scores)
            if self._alerts is not None:
                for alert in self._alerts.update(media_ts, smoothed.stable_label,
                                                 smoothed.probs, ts=event.ts,
                                                 window_end=window.wall_end):
                    self.bus.publish(alert)
            self._last_pred = pred
            self._latencies.append(pred.latency_ms)
            self._published += 1
            shown = [(lab, sc) for lab, sc in zip(pred.labels, pred.scores, strict=True)
                     if sc >= self.config.threshold] or list(
                         zip(pred.labels[:1], pred.scores[:1], strict=True))
            self._status = OverlayStatus(
                stream=self.stream, labels=tuple(lab for lab, _ in shown),
                scores=tuple(sc for _, sc in shown), stable_label=pred.stable_label,
                input_fps=self.capture.fps, inference_fps=self.worker.inference_fps,
                latency_ms=pred.latency_ms, drops=self.ring.drops, roi=self.config.roi,
            )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Join the worker and start capture (and the overlay)."""
        if self._started:
            return
        self._started = True
        log.info("stream %s: %s with %s (%s backend)", self.stream, self.source_name,
                 self.spec.name, self.backend_name)
        self.worker.add_stream(self.slot)
        if self.renderer is not None:
            self.renderer.start()
        self.capture.start()

    def stop_capture(self) -> None:
        """Ask capture to end, without waiting (the pipeline stops all streams at once)."""
        self.capture.stop(0.0)

    def stop(self, timeout_s: float = 2.0) -> StreamTotals:
        """Stop capture, leave the worker, stop the overlay (each bounded), end an open
        label, and publish ``stopped`` with the totals: the stream's last event.
        Idempotent."""
        if self._final is not None:
            return self._final
        if not self._started:
            self._close_parts()
        t0 = time.monotonic()
        self.capture.stop(timeout_s / 2)
        self.worker.remove_stream(self.stream)
        if self.renderer is not None:
            self.renderer.stop(max(0.1, timeout_s - (time.monotonic() - t0)))
        with self._lock:
            self._flush_pending_error()
            self._on_reset("stopped")  # an open label (alert) gets its end before `stopped`
            self._stopped = True
            totals = self.totals()
            fields: dict[str, Any] = {
                "frames": totals.frames, "windows": totals.windows, "drops": totals.drops,
                "skipped_windows": totals.skipped_windows,
                "inference_errors": self._inference_errors,
            }
            if self._latencies:
                lat = np.asarray(self._latencies)
                totals = dataclasses.replace(
                    totals, latency_ms_p50=round(float(np.percentile(lat, 50)), 1),
                    latency_ms_p95=round(float(np.percentile(lat, 95)), 1))
                fields["latency_ms_p50"] = totals.latency_ms_p50
                fields["latency_ms_p95"] = totals.latency_ms_p95
            if self.renderer is not None:
                fields["overlay_drops"] = self.renderer.drops
                fields["overlay_errors"] = self.renderer.errors
            if totals.error:
                fields["error"] = totals.error
            self.emit(EventType.STOPPED, **fields)
            self.source_state = "stopped"
            self._final = totals
        return totals

    def close_unstarted(self) -> None:
        """Close what was opened for a stream that is never started (no events)."""
        if not self._started:
            self._close_parts()

    def finished(self) -> bool:
        """The source has ended or given up, and every window of it has been classified
        (frames read before a failure are still classified)."""
        if self.capture.finished.is_set() and self.worker.idle(self.stream):
            self._flush_pending_error()
            return True
        return False

    def totals(self) -> StreamTotals:
        err = self.capture.error
        return StreamTotals(
            frames=self.capture.frames_read, windows=self._published, drops=self.ring.drops,
            skipped_windows=self.scheduler.skipped,
            error=mask_credentials(str(err)) if err else None,
        )

    def health(self) -> StreamHealth:
        """A snapshot for ``/api/status``, the public ``health()`` and tests (any thread)."""
        pred = self._last_pred
        state = self.source_state
        if state == "live" and self.capture.finished.is_set():
            state = "ended"
        return StreamHealth(
            stream=self.stream, source=self.source_name, model=self.spec.name,
            backend=self.backend_name, source_state=state,
            input_fps=round(self.capture.fps, 2),
            inference_fps=round(self.worker.inference_fps, 2),
            clips_per_s=round(self._clip_rate, 2),
            latency_ms=round(pred.latency_ms, 1) if pred is not None else None,
            frames=self.capture.frames_read, windows=self._published, drops=self.ring.drops,
            skipped_windows=self.scheduler.skipped, reconnects=self.capture.reconnects,
            stable_label=pred.stable_label if pred is not None else None,
            labels=tuple(pred.labels) if pred is not None else (),
            scores=tuple(round(float(s), 4) for s in pred.scores) if pred is not None else (),
        )
