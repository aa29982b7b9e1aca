"""``MjpegSink``: overlay frames -> JPEG -> :class:`~streamclf.web.hub.WebHub`.

A :class:`~streamclf.live.overlay.FrameSink` for the web view's ``/stream.mjpg``. It runs on the
overlay renderer's thread (never on capture or inference), encodes only while someone is
watching, and at most ``max_fps`` frames a second (a 720p JPEG costs ~5 ms here).
"""

from __future__ import annotations

import time

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.web.hub import WebHub

__all__ = ["MjpegSink"]


class MjpegSink:
    """Publishes annotated ``(H, W, 3)`` uint8 RGB frames as JPEG for one stream.

    Not thread-safe: one renderer thread calls :meth:`write`.
    """

    def __init__(self, hub: WebHub, stream: str, max_fps: float = 15.0, quality: int = 80) -> None:
        self.hub = hub
        self.stream = stream
        self.quality = int(quality)
        self._interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._last = -float("inf")
        self.encoded = 0

    def write(self, image: np.ndarray) -> None:
        if not self.hub.has_viewers(self.stream):
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        cv2 = cv2_module()
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.encoded += 1
            self.hub.publish_frame(self.stream, buf.tobytes())

    def close(self) -> None:
        """The stream ended (or was removed): it leaves the hub, unless a newer stream has
        taken its id meanwhile."""
        self.hub.remove_stream(self.stream, owner=self)
