"""The event clips' frame store: compact frames, the pre-roll buffer, and the inbox from the
capture thread.

* :class:`FrameInbox`: what the capture thread's frame tap hands frames to. ``offer`` only
  appends a reference (frames are immutable) and returns, or drops the frame and counts it
  when the inbox holds its byte budget (at least 2 frames): capture never waits.
* :func:`compress`: a frame as JPEG (quality 90), on the recorder's thread. Measured on the
  team's 2-core machine with 1280x720 RGB frames (real video; the synthetic test pattern in
  brackets): keeping the frame as it is costs the capture thread 1 us (2.3 us), a reference
  put in the inbox (a copy would be 0.3 ms); JPEG-encoding it there would cost 3.9 ms
  (5.1 ms), an eighth of a 30 fps frame interval. So the capture thread keeps frames as they
  are (decoded pictures, 1.38 MB at 720p in YUV 4:2:0), and they are converted and
  compressed here, at most ``clips.fps`` of them a second: kept as RGB, 720p frames take
  2.76 MB each and
  ``preroll_mb`` 64 holds 0.77 s of 30 fps, short of the default ``pre_s`` of 3 s; as JPEG
  (81 kB, 198 kB) it holds 26 s (11 s). The price is 3.9 ms of this thread per frame (12 %
  of a core for a 720p 30 fps stream) and 4 ms to decode each frame that goes into a clip.
  The snapshot is the stored JPEG itself (no second encoding).
* :class:`PreRoll`: the last ``span_s`` seconds of stored frames, and never more than
  ``max_bytes`` (the oldest go first). Separate from the model's ring, which holds small
  resized copies.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import DataError
from streamclf.types import Event, Frame

__all__ = ["JPEG_QUALITY", "FrameInbox", "PreRoll", "StoredFrame", "compress", "decompress"]

JPEG_QUALITY = 90


@dataclass(frozen=True)
class StoredFrame:
    """One source frame kept for clips: its times and its JPEG bytes.

    Attributes:
        seq, ts, wall_ts: as the :class:`~streamclf.types.Frame` it was made from.
        jpeg: the ``(height, width, 3)`` RGB image as a JPEG file.
    Thread-safety: immutable.
    """

    seq: int
    ts: float
    wall_ts: float
    jpeg: bytes
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.jpeg)


def compress(frame: Frame, quality: int = JPEG_QUALITY) -> StoredFrame:
    """``frame`` as a :class:`StoredFrame` (JPEG, 4:2:0): its picture is converted to RGB here,
    on the recorder's thread.

    Raises:
        DataError: the image is not ``(H, W, 3)`` uint8 or cannot be encoded.
    """
    image = frame.picture.rgb()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise DataError(f"clips: frames must be (H, W, 3) uint8 RGB, got "
                        f"{getattr(image, 'shape', type(image))}")
    cv2 = cv2_module()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError(f"clips: cannot JPEG-encode a {image.shape} frame")
    return StoredFrame(frame.seq, frame.ts, frame.wall_ts, buf.tobytes(), image.shape[1],
                       image.shape[0])


def decompress(stored: StoredFrame) -> np.ndarray:
    """The stored image back as ``(height, width, 3)`` uint8 RGB.

    Raises:
        DataError: the bytes are not a JPEG image.
    """
    cv2 = cv2_module()
    bgr = cv2.imdecode(np.frombuffer(stored.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError("clips: a stored frame is not a JPEG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class PreRoll:
    """The latest stored frames: at most ``span_s`` seconds (by ``ts``) and ``max_bytes``.

    Thread-safety: not thread-safe; one recorder thread owns it.
    """

    def __init__(self, span_s: float, max_bytes: int) -> None:
        self.span_s, self.max_bytes = float(span_s), int(max_bytes)
        self._frames: deque[StoredFrame] = deque()
        self.nbytes = 0
        self.evicted_for_bytes = 0  # frames that went early because of ``max_bytes``

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def newest(self) -> StoredFrame | None:
        return self._frames[-1] if self._frames else None

    @property
    def seconds(self) -> float:
        """The time span held, from the oldest frame to the newest."""
        return self._frames[-1].ts - self._frames[0].ts if self._frames else 0.0

    def push(self, frame: StoredFrame) -> None:
        """Keep ``frame`` (the newest), then drop the oldest past the span or the bytes (a
        frame alone over ``max_bytes`` is not kept)."""
        self._frames.append(frame)
        self.nbytes += frame.nbytes
        while self._frames and self._frames[-1].ts - self._frames[0].ts > self.span_s:
            self.nbytes -= self._frames.popleft().nbytes
        while self._frames and self.nbytes > self.max_bytes:
            self.nbytes -= self._frames.popleft().nbytes
            self.evicted_for_bytes += 1

    def since(self, ts: float) -> list[StoredFrame]:
        """The frames with ``ts`` at or after ``ts``, oldest first."""
        return [f for f in self._frames if f.ts >= ts]

    def at_wall(self, wall_ts: float) -> StoredFrame | None:
        """The frame captured at ``wall_ts`` (the latest one not after it, within 1 ms), or
        the oldest held when all are later; None when empty."""
        best = None
        for frame in self._frames:
            if frame.wall_ts > wall_ts + 1e-3:
                break
            best = frame
        return best if best is not None else (self._frames[0] if self._frames else None)


class FrameInbox:
    """Frames from the capture thread and events from the bus, for one recorder thread.

    ``offer`` never blocks: a frame that would take the held frames past ``max_bytes``
    (unless fewer than 2 are held) is dropped and counted in :attr:`drops`. Events are never
    dropped (a few per second at most).

    Thread-safety: ``offer``/``offer_event``/``close`` from any thread; ``take`` from the
    one consumer thread.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._frames: deque[Frame] = deque()
        self._events: deque[Event] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.drops = 0
        self.closed = False

    def offer(self, frame: Frame) -> bool:
        """Hand a frame over (capture thread); False when it was dropped."""
        size = frame.picture.nbytes
        with self._cond:
            if self.closed or (len(self._frames) >= 2 and self._bytes + size > self.max_bytes):
                self.drops += 1
                return False
            self._frames.append(frame)
            self._bytes += size
            self._cond.notify()
        return True

    @property
    def held(self) -> int:
        """Frames and events waiting for the consumer."""
        with self._cond:
            return len(self._frames) + len(self._events)

    def offer_event(self, event: Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def close(self) -> None:
        """Wake the consumer; later frames are dropped (events still arrive)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, timeout_s: float) -> tuple[list[Frame], list[Event]]:
        """Everything held (frames, then events), waiting up to ``timeout_s`` for some."""
        with self._cond:
            if not self._frames and not self._events and not self.closed:
                self._cond.wait(timeout_s)
            frames, events = list(self._frames), list(self._events)
            self._frames.clear()
            self._events.clear()
            self._bytes = 0
        return frames, events
