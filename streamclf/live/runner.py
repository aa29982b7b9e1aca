"""``StreamPipeline``: one live stream end to end.

    source -> CaptureThread -> FrameRing -> (InferenceWorker: WindowScheduler, backend)
           -> Smoother -> EventLog + OverlayRenderer (+ console status line)

``from_config`` wires real parts from a :class:`~streamclf.config.RunConfig`; the
constructor only stores parts, so tests pass fakes (a source factory, a FakeBackend).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from streamclf.config import RunConfig
from streamclf.engine.backends.base import InferenceBackend
from streamclf.engine.batcher import InferenceWorker, StreamSlot
from streamclf.engine.runtime import default_inference_threads, tune_switch_interval
from streamclf.live.events import EventLog, make_event, prediction_event
from streamclf.live.overlay import OverlayRenderer, OverlayStatus
from streamclf.live.parts import make_renderer, open_stream_parts
from streamclf.live.smoothing import Smoother, top_k
from streamclf.media.capture import CaptureThread
from streamclf.media.preprocess import resize_and_crop
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.media.sources import FrameSource, mask_credentials
from streamclf.models.registry import ModelSpec
from streamclf.types import BufferPolicy, Frame, Prediction, Window

__all__ = ["PipelineResult", "StreamPipeline"]

log = logging.getLogger(__name__)

#: Predictions whose latency the `stopped` event's percentiles are taken over (the latest).
LATENCY_HISTORY = 100_000


@dataclass(frozen=True)
class PipelineResult:
    """How a run ended: totals, and the error that ended it (None for a clean stop)."""

    frames: int
    windows: int
    drops: int
    skipped_windows: int
    error: str | None


class StreamPipeline:
    """Runs one stream. Build with :meth:`from_config`, then :meth:`run` (blocking) or
    :meth:`start` / :meth:`stop`.

    Thread-safety: ``stop`` may be called from any thread (e.g. a signal handler's
    helper); the other methods belong to the thread that owns the pipeline.
    """

    def __init__(
        self,
        config: RunConfig,
        spec: ModelSpec,
        backend: InferenceBackend,
        source_factory: Callable[[], FrameSource],
        event_log: EventLog,
        renderer: OverlayRenderer | None = None,
        status_out: TextIO | None = None,
        source_fps_hint: float = 30.0,
        worker: InferenceWorker | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.backend = backend
        self.events = event_log
        self.renderer = renderer
        self.status_out = status_out
        self.stream = config.stream_id
        self.source_name = mask_credentials(str(config.source))
        policy = BufferPolicy.LOSSLESS if config.pace == "fast" else BufferPolicy.LATEST
        duration = spec.clip_duration_s
        stride = config.stride or duration / 2.0
        fps = source_fps_hint if source_fps_hint and source_fps_hint > 0 else 30.0
        # Hold one window plus two strides of frames at up to 2x the declared rate.
        capacity = max(16, math.ceil((duration + 2 * stride) * fps * 2) + 8)
        crop = spec.crop_size
        self.ring = FrameRing(
            capacity, (crop, crop, 3),
            transform=lambda img: resize_and_crop(img, spec.side_size, crop),
            policy=policy, stream=self.stream,
        )
        self.scheduler = WindowScheduler(duration, stride, policy, frame_interval=1.0 / fps)
        self.smoother = Smoother(backend.labels, window=config.smooth,
                                 threshold=config.threshold, start_after=config.start_after,
                                 topk=config.topk)
        # A shared worker (several streams, see multi_pipeline.py) is started and stopped by
        # its owner, which also owns (and closes) the shared event log.
        self._owns_worker = worker is None
        self.worker = worker or InferenceWorker(backend, on_error=self._on_inference_error)
        self.slot = StreamSlot(self.stream, self.ring, self.scheduler, spec.num_frames,
                               publish=self._publish, on_reset=self._on_reset)
        self.worker.add_stream(self.slot)
        self.capture = CaptureThread(
            source_factory, on_frame=self._on_frame, stream_id=self.stream,
            pace=config.pace, loop=config.loop, on_event=self._on_capture_event,
            read_timeout_s=config.read_timeout_ms / 1000.0, max_reconnects=config.max_reconnects,
            backoff_initial_s=config.backoff_initial_s, backoff_max_s=config.backoff_max_s,
            backoff_jitter=config.backoff_jitter,
        )
        self._status = OverlayStatus(stream=self.stream)
        self._last_pred: Prediction | None = None
        self._stop = threading.Event()
        self._stopped = False
        # Latency percentiles of the `stopped` event cover the most recent predictions only,
        # so a run of weeks keeps a fixed amount of memory.
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._published = 0  # predictions written (a window done after stop() is not)
        self._last_status = -math.inf
        self._clip_rate = 0.0
        self._last_publish: float | None = None
        self.close_parts: Callable[[], None] = lambda: None  # see open_stream_parts
        self.backend_reason = f"{backend.name} (given)"

    # -- wiring ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: RunConfig, status_out: TextIO | None = None) -> StreamPipeline:
        """Load the model, open the event log and sinks, and prepare the source factory."""
        from streamclf.engine.backends.factory import create_backend
        from streamclf.media.sources import parse_spec
        from streamclf.models.loader import load_model

        threads = config.threads or default_inference_threads()
        import torch

        torch.set_num_threads(threads)
        parse_spec(config.source)  # an unknown URL scheme fails before the model loads
        model = load_model(config.model, config.weights, config.classmap, config.device)
        factory, sinks, fps, close_parts = open_stream_parts(config)
        try:
            events = EventLog(config.events, max_bytes=config.events_max_bytes)
        except BaseException:
            close_parts()
            raise
        try:
            renderer = make_renderer(sinks, events, config.stream_id)
            out = None if config.quiet else (status_out or sys.stderr)
            choice = create_backend(model, config.backend, config.precision, threads,
                                    torch_compile=config.torch_compile)
            tune_switch_interval(choice.backend.name)
            pipeline = cls(config, model.spec, choice.backend, factory, events, renderer, out,
                           source_fps_hint=fps)
            pipeline.backend_reason = choice.reason
            pipeline.close_parts = close_parts
            return pipeline
        except BaseException:
            close_parts()
            events.close()
            raise

    # -- callbacks (capture thread) --------------------------------------------------------
    def _on_frame(self, frame: Frame) -> bool:
        accepted = self.ring.push(frame)
        if accepted:
            self.worker.notify()
            if self.renderer is not None:
                self.renderer.submit(frame.image, self._status)
        return accepted

    def _on_capture_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind in ("source_lost", "source_restored"):
            # No window spans the gap: a new ring epoch, and the worker resets the scheduler
            # and the smoother (ending a stable label) when it sees it.
            self.ring.reset()
        self.events.write(make_event(kind, self.stream, **fields))

    # -- callbacks (inference thread) ------------------------------------------------------
    def _on_reset(self) -> None:
        for change in self.smoother.reset():
            self.events.write(make_event(change.kind, self.stream, label=change.label,
                                         score=round(change.score, 4)))

    def _on_inference_error(self, stream: str, exc: Exception) -> None:
        log.error("inference failed on %s: %s", stream, exc)
        self.events.write(make_event("error", stream, where="inference",
                                     message=f"{type(exc).__name__}: {exc}"))

    def _publish(self, window: Window, probs: np.ndarray, feats: np.ndarray,
                 inference_ms: float) -> None:
        if self._stopped:  # a shared worker finished this window after the stream stopped
            return
        now = time.monotonic()
        if self._last_publish is not None:
            rate = 1.0 / max(now - self._last_publish, 1e-6)
            self._clip_rate = rate if self._clip_rate == 0 else 0.8 * self._clip_rate + 0.2 * rate
        self._last_publish = now
        smoothed = self.smoother.update(probs)
        raw_labels, raw_scores = top_k(probs, self.backend.labels, self.config.topk)
        pred = Prediction(
            stream=self.stream, window_start=window.wall_start, window_end=window.wall_end,
            published=time.time(), inference_ms=inference_ms, labels=smoothed.labels,
            scores=smoothed.scores, raw_labels=raw_labels, raw_scores=raw_scores,
            features=feats, stable_label=smoothed.stable_label,
        )
        self.events.write(prediction_event(pred, input_fps=round(self.capture.fps, 2),
                                           drops=self.ring.drops))
        for change in smoothed.changes:
            self.events.write(make_event(change.kind, self.stream, label=change.label,
                                         score=round(change.score, 4)))
        self._last_pred = pred
        self._latencies.append(pred.latency_ms)
        self._published += 1
        shown = [(lab, sc) for lab, sc in zip(pred.labels, pred.scores, strict=True)
                 if sc >= self.config.threshold] or list(zip(pred.labels[:1], pred.scores[:1],
                                                             strict=True))
        self._status = OverlayStatus(
            stream=self.stream, labels=tuple(lab for lab, _ in shown),
            scores=tuple(sc for _, sc in shown), stable_label=pred.stable_label,
            input_fps=self.capture.fps, inference_fps=self.worker.inference_fps,
            latency_ms=pred.latency_ms, drops=self.ring.drops,
        )
        if self.status_out is not None:
            self._print_status(pred)

    def _print_status(self, pred: Prediction) -> None:
        """One status line: rewritten in place on a terminal, else every 2 s."""
        tty = bool(getattr(self.status_out, "isatty", lambda: False)())
        now = time.monotonic()
        if not tty and now - self._last_status < 2.0:
            return
        self._last_status = now
        label = pred.stable_label or f"({pred.labels[0]} {pred.scores[0]:.2f})"
        line = (f"[{self.stream}] in {self.capture.fps:5.1f} fps | inference "
                f"{self.worker.inference_fps:4.1f} clips/s | latency {pred.latency_ms:5.0f} ms "
                f"| drops {self.ring.drops} | {label[:40]}")
        assert self.status_out is not None
        self.status_out.write(f"\r{line:<110}" if tty else f"{line}\n")
        self.status_out.flush()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        log.info("stream %s: %s with %s (%s backend)", self.stream, self.source_name,
                 self.spec.name, self.backend.name)
        if self.renderer is not None:
            self.renderer.start()
        if self._owns_worker:
            self.worker.start()
        self.capture.start()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from any thread and from signal handlers)."""
        self._stop.set()

    def run(self, duration_s: float | None = None) -> PipelineResult:
        """Start, run until ``duration_s`` elapses, the source ends, or :meth:`request_stop`,
        then stop. Returns the totals."""
        limit = self.config.duration if duration_s is None else duration_s
        deadline = None if limit is None else time.monotonic() + float(limit)
        self.start()
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                # End of file (or the source gave up): classify what is still due, then end.
                if self.finished():
                    break
                self._stop.wait(0.05)
        finally:
            result = self.stop()
        return result

    def stop(self, timeout_s: float = 2.0) -> PipelineResult:
        """Stop every thread (each join bounded), write ``stopped``, close the sinks and log."""
        if self._stopped:
            return self._result()
        self._stopped = True
        t0 = time.monotonic()
        if self._owns_worker:
            self.worker.stop(0.0)  # ask now; joined below, after capture
        self.capture.stop(timeout_s / 2)
        if self._owns_worker:
            self.worker.stop(max(0.1, timeout_s * 0.75 - (time.monotonic() - t0)))
        else:
            self.worker.remove_stream(self.stream)
        if self.renderer is not None:
            self.renderer.stop(max(0.1, timeout_s - (time.monotonic() - t0)))
        if self.status_out is not None and getattr(self.status_out, "isatty", lambda: False)():
            self.status_out.write("\n")
            self.status_out.flush()
        self._on_reset()  # an open label gets its label_end before `stopped`
        result = self._result()
        fields: dict[str, Any] = {
            "frames": result.frames, "windows": result.windows, "drops": result.drops,
            "skipped_windows": result.skipped_windows,
        }
        if self._latencies:
            lat = np.asarray(self._latencies)
            fields["latency_ms_p50"] = round(float(np.percentile(lat, 50)), 1)
            fields["latency_ms_p95"] = round(float(np.percentile(lat, 95)), 1)
        if self.renderer is not None:
            fields["overlay_drops"] = self.renderer.drops
            fields["overlay_errors"] = self.renderer.errors
        if result.error:
            fields["error"] = result.error
        self.events.write(make_event("stopped", self.stream, **fields))
        if self._owns_worker:
            self.events.close()
        return result

    def finished(self) -> bool:
        """The source has ended (or given up) and no window of it is still due."""
        return self.capture.finished.is_set() and (
            self.capture.error is not None or self.worker.idle(self.stream))

    def close_unstarted(self) -> None:
        """Close what :func:`~streamclf.live.parts.open_stream_parts` opened, for a stream
        never started."""
        self.close_parts()

    def wait_threads(self, timeout_s: float) -> bool:
        """After :meth:`stop`: wait up to ``timeout_s`` more for a window still in the model;
        True if the inference thread has ended."""
        return self.worker.stop(timeout_s)

    def health(self) -> dict[str, Any]:
        """A JSON-able snapshot for the web view's ``/api/status`` (any thread; reads
        counters without locks, so numbers may be one frame apart)."""
        pred = self._last_pred
        return {
            "source": self.source_name, "model": self.spec.name, "backend": self.backend.name,
            "input_fps": round(self.capture.fps, 2),
            "inference_fps": round(self.worker.inference_fps, 2),
            "clips_per_s": round(self._clip_rate, 2),
            "latency_ms": round(pred.latency_ms, 1) if pred is not None else None,
            "frames": self.capture.frames_read, "windows": self._published,
            "drops": self.ring.drops, "skipped_windows": self.scheduler.skipped,
            "stable_label": pred.stable_label if pred is not None else None,
            "labels": list(pred.labels) if pred is not None else [],
            "scores": [round(float(s), 4) for s in pred.scores] if pred is not None else [],
        }

    def _result(self) -> PipelineResult:
        err = self.capture.error
        return PipelineResult(
            frames=self.capture.frames_read, windows=self._published, drops=self.ring.drops,
            skipped_windows=self.scheduler.skipped, error=str(err) if err else None,
        )
