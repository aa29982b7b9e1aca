"""The frame watchdog: a live source that delivers no frame for ``timeout_s`` is lost.

Why a wrapper: FFmpeg's read timeout fires per packet read, and OpenCV retries and drains the
H.264 decoder before a blocked ``cv2.VideoCapture.read`` gives up, so a stalled RTSP server
(connection open, no packets) is only noticed after 2-3 read timeouts. Such a read cannot be
interrupted from another thread. :class:`WatchdogSource` therefore reads the wrapped source on
a helper thread and hands the results over through a small queue: its ``read(timeout_s)``
waits at most ``timeout_s`` and then raises :class:`~streamclf.errors.SourceError`, so the
capture thread declares the source lost and reconnects at once, while the stuck read waits
out FFmpeg's own timeout on the helper thread (which then ends by itself).

Example::

    src = WatchdogSource(open_source("rtsp://cam/stream", read_timeout_ms=3000))
    picture, ts = src.read(timeout_s=3.0)   # SourceError after 3 s without a frame
    src.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from streamclf.errors import ConfigError, SourceError
from streamclf.masking import mask_credentials
from streamclf.media.picture import Picture
from streamclf.media.sources import FrameSource

__all__ = ["WatchdogSource"]

log = logging.getLogger(__name__)

# What the helper thread hands over: a frame, None (clean end of stream) or the error.
_Item = tuple[Picture, float] | SourceError | None


class WatchdogSource:
    """Wraps a :class:`~streamclf.media.sources.FrameSource` so that ``read`` never blocks for
    longer than its ``timeout_s``.

    The helper thread reads up to ``depth`` frames ahead of the consumer (no frame is lost:
    it waits while the queue is full) and ends after the source's end of stream, its first
    error, or ``close()``. Frames are ``((H, W, 3) uint8 RGB, media_ts)`` as the wrapped
    source gives them.

    Args:
        inner: the source to read; it is closed by :meth:`close`.
        depth: frames buffered between the helper thread and ``read`` (>= 1).

    Thread-safety: ``read`` from one consumer thread; ``close`` from any thread, at any
    time (it wakes a waiting ``read`` and returns at once, without waiting for a read that
    is stuck in the driver).
    """

    def __init__(self, inner: FrameSource, depth: int = 2) -> None:
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        self.info = inner.info
        self.open_s = float(getattr(inner, "open_s", 0.0))
        self._inner, self._depth = inner, depth
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._closed = False
        self._last: _Item | None = None  # the end item once consumed (None = not ended yet)
        self._ended = False
        self._read_timeout_s = 5.0  # passed on to inner.read (the latest read's timeout)
        self._thread = threading.Thread(target=self._pump, name=f"reader-{self.info.name}",
                                        daemon=True)
        self._thread.start()

    def read(self, timeout_s: float = 5.0) -> tuple[Picture, float] | None:
        """The next frame, or None at the end of stream.

        Raises:
            SourceError: no frame within ``timeout_s`` (the watchdog), the source failed,
                or it was closed.
        """
        with self._cond:
            self._read_timeout_s = timeout_s
            if self._ended:
                self._raise_end()
                return None
            deadline = time.monotonic() + timeout_s
            while not self._items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(
                        f"{self.info.kind} stream lost: {self.info.name}: no frame for "
                        f"{timeout_s:.1f} s (frame watchdog)")
                self._cond.wait(left)
            if self._closed:
                raise SourceError(f"{self.info.name}: source is closed")
            item = self._items.popleft()
            self._cond.notify_all()  # room in the queue for the helper thread
            if item is None or isinstance(item, SourceError):
                self._ended, self._last = True, item
                self._raise_end()
                return None
            return item

    def _raise_end(self) -> None:
        """Re-raise the source's error once the stream has ended with one."""
        if isinstance(self._last, SourceError):
            raise self._last

    def close(self) -> None:
        """Stop the helper thread and close the wrapped source; idempotent, never blocks."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._inner.close()  # FrameSource.close wakes or abandons a blocked read promptly

    # ------------------------------------------------------------------ helper thread
    def _pump(self) -> None:
        while True:
            with self._cond:
                while len(self._items) >= self._depth and not self._closed:
                    self._cond.wait(0.5)
                if self._closed:
                    return
                timeout_s = self._read_timeout_s
            item: _Item
            try:
                item = self._inner.read(timeout_s)
            except SourceError as exc:
                item = exc
            except Exception as exc:  # a driver bug: the consumer sees a SourceError
                log.debug("reader of %s failed", self.info.name, exc_info=True)
                item = SourceError(mask_credentials(
                    f"{self.info.name}: read failed: {type(exc).__name__}: {exc}"))
            with self._cond:
                if self._closed:
                    return
                self._items.append(item)
                self._cond.notify_all()
            if item is None or isinstance(item, SourceError):
                return
