"""Drawing predictions on frames, and the sinks that show or save them.

:func:`draw_overlay` returns an annotated copy of an RGB frame. Sinks (video file, window,
fake) take annotated frames; :class:`OverlayRenderer` feeds them from its own thread behind a
bounded queue, so a slow disk or window never holds up capture or inference (it drops).

Example::

    renderer = OverlayRenderer([VideoFileSink("out.mp4", fps=30.0, size=(1280, 720))]).start()
    renderer.submit(frame.picture, OverlayStatus.from_prediction(pred, input_fps=30.0))
    renderer.stop()
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import ConfigError, DataError, StreamclfError
from streamclf.live.video_file import VideoFileSink  # re-exported: the overlay's file sink
from streamclf.media.picture import Picture, as_picture
from streamclf.media.roi import Roi, resolve_roi
from streamclf.types import Prediction

__all__ = ["FakeSink", "FrameSink", "OverlayRenderer", "OverlayStatus", "VideoFileSink",
           "WindowSink", "draw_overlay"]

log = logging.getLogger(__name__)
_WHITE, _GREY, _GREEN = (255, 255, 255), (170, 170, 170), (90, 230, 120)
_YELLOW, _BAR, _BAR_BG = (255, 210, 60), (50, 130, 230), (70, 70, 70)


@dataclass(frozen=True)
class OverlayStatus:
    """What the overlay shows (``None`` numbers are drawn as ``-``); ``stream`` is masked;
    ``roi``: the stream's region of interest, drawn as a box."""

    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    stable_label: str | None = None
    input_fps: float | None = None
    inference_fps: float | None = None
    latency_ms: float | None = None
    drops: int = 0
    stream: str = ""
    roi: Roi | None = None

    @classmethod
    def from_prediction(cls, pred: Prediction, input_fps: float | None = None,
                        inference_fps: float | None = None, drops: int = 0) -> OverlayStatus:
        return cls(pred.labels, pred.scores, pred.stable_label, input_fps, inference_fps,
                   pred.latency_ms, drops, pred.stream)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fit(cv2: Any, text: str, scale: float, thick: int, max_w: int) -> str:
    """``text`` in ASCII (Hershey fonts have nothing else), cut with '..' to ``max_w`` px."""
    text = text.encode("ascii", "replace").decode("ascii")
    cut = text
    while cut and cv2.getTextSize(cut if cut == text else cut + "..",
                                  cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] > max_w:
        cut = cut[:-1]
    return cut if cut == text else cut + ".."


def draw_overlay(image: np.ndarray, status: OverlayStatus) -> np.ndarray:
    """Draw labels, score bars, the stable label and stream stats on a copy of ``image``.

    ``image``: ``(H, W, 3)`` uint8 RGB, not modified. Returns a new ``(H, W, 3)`` uint8 RGB
    array with a dark semi-transparent panel top-left; text size follows the image height
    (legible from 320x240 to 1080p); top-k rows that do not fit are left out; an image under
    64x48 comes back unannotated. Raises DataError if ``image`` is not ``(H, W, 3)`` uint8.

    Thread-safety: pure function; safe from any thread.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise DataError("image must be (H, W, 3) uint8 RGB, got "
                         f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    if w < 64 or h < 48:
        return out
    cv2 = cv2_module()
    if status.roi is not None:  # the region the model sees, drawn under the panel
        with contextlib.suppress(StreamclfError):  # a box off this frame: nothing to draw
            x0, y0, x1, y1 = resolve_roi(status.roi, h, w)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), _YELLOW, max(1, round(h / 240)))
    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    fs = min(1.6, max(0.35, 0.5 * h / 480))  # font scale follows the image height
    thick, pad, margin = max(1, round(fs * 1.6)), max(3, round(6 * fs)), max(4, round(0.02 * h))
    big, big_thick = fs * 1.35, thick + 2 if fs >= 1 else thick + 1
    row_h = cv2.getTextSize("Ag", font, fs, thick)[0][1] + 2 * pad
    big_h = cv2.getTextSize("Ag", font, big, big_thick)[0][1] + 2 * pad
    stats = [f"in {_num(status.input_fps, 1)} fps  inf {_num(status.inference_fps, 1)} fps",
             f"latency {_num(status.latency_ms, 0)} ms  drops {status.drops}"]
    need = max(cv2.getTextSize(t, font, fs, thick)[0][0] for t in stats) + 2 * pad
    panel_w = min(w - 2 * margin, max(need, round(0.42 * w)))
    inner = panel_w - 2 * pad
    fixed = big_h + (row_h if status.stream else 0) + 2 * row_h + pad
    n_rows = min(len(status.labels), len(status.scores),
                 max(0, (h - 2 * margin - fixed) // row_h))
    panel_h = min(h - 2 * margin, fixed + n_rows * row_h)
    roi = out[margin:margin + panel_h, margin:margin + panel_w]
    roi[:] = cv2.convertScaleAbs(roi, alpha=0.35)  # darken: a 65 % black panel
    x, y = margin + pad, margin + big_h - pad

    def put(text: str, at: tuple[int, int], color: tuple[int, int, int], scale: float = fs,
            t: int = thick, width: int = inner) -> None:
        cv2.putText(out, _fit(cv2, text, scale, t, width), at, font, scale, color, t, aa)

    put(status.stable_label or "...", (x, y), _GREEN if status.stable_label else _GREY,
        big, big_thick)
    if status.stream:
        y += row_h
        put(status.stream, (x, y), _GREY)
    for label, score in list(zip(status.labels, status.scores, strict=False))[:n_rows]:
        top = y + pad
        y += row_h
        s = min(1.0, max(0.0, float(score))) if math.isfinite(score) else 0.0
        cv2.rectangle(out, (x, top), (x + inner, y - 1), _BAR_BG, -1)
        cv2.rectangle(out, (x, top), (x + round(s * inner), y - 1), _BAR, -1)
        put(f"{s:.2f} {label}", (x + pad // 2, y - pad // 2 - 1), _WHITE, width=inner - pad)
    for i, text in enumerate(stats):
        y += row_h
        put(text, (x, y), _YELLOW if i == 1 and status.drops > 0 else _WHITE)
    return out


class FrameSink(Protocol):
    """Where annotated ``(H, W, 3)`` uint8 RGB frames go. Used by one thread at a time."""

    def write(self, image: np.ndarray) -> None: ...
    def close(self) -> None: ...


class WindowSink:
    """Shows frames in an OpenCV window (``--display``); ``q`` or Esc calls ``on_quit``.

    Raises StreamclfError at construction if there is no display or OpenCV has no GUI.
    Thread-safety: not thread-safe; one thread (on macOS it must be the main thread).
    """

    def __init__(self, title: str = "streamclf",
                 on_quit: Callable[[], Any] | None = None) -> None:
        if sys.platform.startswith("linux") and not (
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise StreamclfError("--display needs a graphical display but DISPLAY is not set "
                                 "(headless machine?); use --output FILE.mp4 instead")
        self.title, self._on_quit = title, on_quit
        cv2 = cv2_module()
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except Exception as exc:  # cv2.error; headless builds raise "not implemented"
            why = "no GUI support" if "not implemented" in str(exc) else str(exc).strip()[:120]
            raise StreamclfError(f"--display: OpenCV cannot open a window ({why}); the headless"
                                 " build has no GUI: install opencv-python") from None

    def write(self, image: np.ndarray) -> None:
        cv2 = cv2_module()
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) and self._on_quit is not None:
            self._on_quit()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the user may have closed it already
            cv2_module().destroyWindow(self.title)


class FakeSink:
    """Records copies of frames (tests); slow by ``delay_s``, failing from write ``fail_at``.

    Thread-safety: ``frames`` is guarded by a lock; safe to read from another thread."""

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.delay_s, self.fail_at, self.closed, self.writes = delay_s, fail_at, False, 0
        self._frames: list[np.ndarray] = []
        self._lock = threading.Lock()

    @property
    def frames(self) -> list[np.ndarray]:
        with self._lock:
            return list(self._frames)

    def write(self, image: np.ndarray) -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes > self.fail_at:
            raise OSError("fake sink failure")
        if self.delay_s:
            time.sleep(self.delay_s)  # simulates a slow disk or display
        with self._lock:
            self._frames.append(image.copy())

    def close(self) -> None:
        self.closed = True


class OverlayRenderer:
    """A thread that draws ``(image, status)`` items and writes them to sinks.

    ``submit`` never blocks: the queue holds ``queue_size`` items and drops the oldest
    (counted in :attr:`drops`). A sink whose ``write`` raises is closed and removed, the
    error counted (:attr:`errors`) and passed to ``on_error(message)`` (else logged); the
    other sinks keep going. Thread-safety: ``submit``/``stop`` from any thread; sinks are
    only touched by the renderer thread; counters are plain ints, read without a lock.
    """

    def __init__(self, sinks: Sequence[FrameSink], on_error: Callable[[str], None] | None = None,
                 queue_size: int = 2, name: str = "overlay-renderer") -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        self._sinks, self._on_error = list(sinks), on_error
        self._queue: deque[tuple[Picture, OverlayStatus]] = deque(maxlen=queue_size)
        self._cond, self._stop, self._deadline = threading.Condition(), threading.Event(), math.inf
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.drops = self.rendered = self.errors = 0

    @property
    def active_sinks(self) -> int:
        return len(self._sinks)

    def add_sink(self, sink: FrameSink) -> None:
        """Add a sink before :meth:`start` (the sink list is the renderer thread's after)."""
        if self._thread.ident is not None:
            raise RuntimeError("add_sink after start")
        self._sinks.append(sink)

    def start(self) -> OverlayRenderer:
        self._thread.start()
        return self

    def submit(self, image: Picture | np.ndarray, status: OverlayStatus) -> None:
        """Queue one frame: a picture, or an ``(H, W, 3)`` uint8 RGB array (not copied: do not
        modify it later). It is converted to RGB only if it is drawn: a frame dropped from
        the full queue never is."""
        with self._cond:
            stopping = self._stop.is_set()
            self.drops += stopping or len(self._queue) == self._queue.maxlen
            if not stopping:
                # a full deque(maxlen) drops the oldest
                self._queue.append((as_picture(image), status))
                self._cond.notify()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Draw what is queued, close the sinks, join; True if done within ``timeout_s``."""
        with self._cond:
            if not self._stop.is_set():
                self._deadline = time.monotonic() + timeout_s
                self._stop.set()
            self._cond.notify_all()
        if self._thread.ident is None:  # never started: start it so it drains and closes
            self._thread.start()
        self._thread.join(max(0.0, self._deadline - time.monotonic()))
        if self._thread.is_alive():
            self._report(f"overlay renderer did not stop within {timeout_s:.1f} s")
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait(timeout=0.5)
                    if not self._queue:
                        break
                    if self._stop.is_set() and time.monotonic() > self._deadline:
                        self.drops += len(self._queue)
                        self._queue.clear()
                        break
                    picture, status = self._queue.popleft()
                self._render(picture, status)
        finally:
            for sink in list(self._sinks):
                self._drop_sink(sink, None)

    def _render(self, picture: Picture, status: OverlayStatus) -> None:
        try:
            frame = draw_overlay(picture.rgb(), status)
        except Exception as exc:  # a bad frame must not kill the thread
            self.errors += 1
            self._report(f"overlay: cannot draw frame: {exc}")
            return
        for sink in list(self._sinks):
            try:
                sink.write(frame)
            except Exception as exc:
                self._drop_sink(sink, exc)
        self.rendered += 1

    def _drop_sink(self, sink: FrameSink, exc: Exception | None) -> None:
        """Close and remove ``sink``; ``exc`` is its write error (None at shutdown)."""
        self._sinks.remove(sink)
        if exc is not None:
            self.errors += 1
            self._report(f"overlay sink {type(sink).__name__} failed and was removed: {exc}")
        try:
            sink.close()
        except Exception as close_exc:
            self.errors += 1
            self._report(f"overlay sink {type(sink).__name__}: close failed: {close_exc}")

    def _report(self, message: str) -> None:
        try:
            (self._on_error or log.warning)(message)
        except Exception:
            log.exception("overlay on_error callback failed")
