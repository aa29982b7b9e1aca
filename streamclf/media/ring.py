"""``FrameRing``: a preallocated, thread-safe ring of preprocessed frames for one stream.

The capture thread pushes; the inference thread gathers windows. Each frame is
resized and centre-cropped once, on entry (outside the lock), and stored in a
preallocated ``(capacity, crop, crop, 3)`` uint8 array; a window is then one index
gather, never a re-decode or re-resize.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from streamclf.errors import ConfigError
from streamclf.media.clips import live_span, span_indices
from streamclf.types import BufferPolicy, Frame, Window

__all__ = ["FrameRing"]

log = logging.getLogger(__name__)


class FrameRing:
    """Newest-frames ring buffer for one stream.

    Args:
        capacity: frames kept; size it to hold at least one window plus one stride.
        frame_shape: ``(crop, crop, 3)`` of the stored frames.
        transform: ``(H, W, 3) uint8 -> frame_shape uint8`` applied once per frame on push
            (the model's short-side resize + centre crop).
        policy: ``LATEST`` overwrites the oldest frame when full; ``LOSSLESS`` refuses
            the push (``push`` returns False) while the oldest frame is still needed.
        stream: stream id copied into windows.
        window_s: the longest span of video one window needs (duration plus a frame or
            two); a full LOSSLESS ring holding less grows (see below). 0: never grows.
        max_bytes: the most a LOSSLESS ring may grow to, in frame bytes.

    LOSSLESS (``pace: fast``) contract: no frame is evicted before :meth:`release_before` has
    released it, and nothing is released before the consumer's scheduler has anchored its
    grid and cut the windows that need it (the inference worker releases up to
    :meth:`~streamclf.media.scheduler.WindowScheduler.next_window_start` after each window).
    So at the first poll the ring still holds the stream's first frame, and the scheduler
    anchors its grid there, however many frames an instant source pushed before. The run
    progresses only if one window fits: ``capacity`` must be at least ``duration * fps + 2``
    frames at the source's real frame rate. A file whose header understates its rate (or a
    variable-rate one) would fill the ring with frames still needed while no window is due,
    and the producer would wait forever; so a LOSSLESS ring that is full while it holds less
    than ``window_s`` of video doubles, up to ``max_bytes`` of frames; past that it drops the
    oldest frame (counted) rather than hang.

    Counters: ``pushed``, ``drops`` (frames evicted before every window that could use
    them was cut: frames lost to a slow consumer).

    Thread-safety: ``push`` from one producer thread and ``window``/``release_before``/
    ``reset`` from any thread are safe; all state changes happen under one lock.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int, int],
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        policy: BufferPolicy = BufferPolicy.LATEST,
        stream: str = "0",
        window_s: float = 0.0,
        max_bytes: int = 512 << 20,
    ) -> None:
        if capacity < 2:
            raise ConfigError("capacity must be >= 2")
        self._window_s, self._frame_bytes = window_s, int(np.prod(frame_shape))
        self._max_capacity = max(capacity, max_bytes // max(1, self._frame_bytes))
        self.capacity = capacity
        self.policy = policy
        self.stream = stream
        self._transform = transform
        self._images = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._wall = np.zeros(capacity, dtype=np.float64)
        self._media = np.zeros(capacity, dtype=np.float64)
        self._seq = np.zeros(capacity, dtype=np.int64)
        self._lock = threading.Lock()
        self._start = 0  # slot of the oldest frame
        self._count = 0
        self._released_ts = -np.inf
        self.epoch = 0
        self.pushed = 0
        self.drops = 0

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def push(self, frame: Frame) -> bool:
        """Store ``frame`` (resized on the way in). Returns False only when a LOSSLESS
        ring is full of frames still needed: the caller should wait and retry."""
        image = self._transform(frame.image) if self._transform else frame.image
        with self._lock:
            newest = (self._start + self._count - 1) % self.capacity
            if self._count and frame.ts <= self._ts[newest]:
                return True  # not newer than the newest: a duplicate or clock glitch, skip
            if self._count == self.capacity:
                oldest_needed = self._ts[self._start] >= self._released_ts
                if oldest_needed and self.policy is BufferPolicy.LOSSLESS:
                    held = float(self._ts[newest] - self._ts[self._start])
                    if held >= self._window_s:
                        return False  # back-pressure: a window is due, the consumer frees it
                    if self.capacity < self._max_capacity:
                        self._grow()
                        oldest_needed = False  # room now: nothing is evicted
                if self._count == self.capacity:
                    self.drops += int(oldest_needed)
                    self._start = (self._start + 1) % self.capacity
                    self._count -= 1
            slot = (self._start + self._count) % self.capacity
            self._images[slot] = image
            self._ts[slot] = frame.ts
            self._wall[slot] = frame.wall_ts
            self._media[slot] = frame.media_ts
            self._seq[slot] = frame.seq
            self._count += 1
            self.pushed += 1
        return True

    def _grow(self) -> None:
        """Double the capacity (at most ``max_bytes`` of frames), oldest frame first (lock
        held)."""
        order = self._ordered()
        size = min(2 * self.capacity, self._max_capacity)
        for name in ("_images", "_ts", "_wall", "_media", "_seq"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: self._count] = old[order]
            setattr(self, name, new)
        self.capacity, self._start = size, 0
        log.info("stream %s: frame ring grown to %d frames (the source's real rate is above "
                 "its declared one)", self.stream, size)

    def _ordered(self) -> np.ndarray:
        return (self._start + np.arange(self._count)) % self.capacity

    def span(self) -> tuple[float, float] | None:
        """``(oldest_ts, newest_ts)`` held, or None when empty."""
        with self._lock:
            if not self._count:
                return None
            newest = (self._start + self._count - 1) % self.capacity
            return float(self._ts[self._start]), float(self._ts[newest])

    def window(self, end_ts: float, duration: float, num_samples: int) -> Window | None:
        """Gather ``num_samples`` frames uniformly from ``(end_ts - duration, end_ts]``.

        The window rule of :mod:`streamclf.media.clips`: the frames in
        ``live_span(end_ts, duration)`` (one stamped exactly ``end_ts`` included), sampled
        by ``span_indices``. Returns None if the span holds no frame. The only copy is the
        one gather into the returned ``(num_samples, crop, crop, 3)`` array.
        """
        with self._lock:
            order = self._ordered()
            ts = self._ts[order]
            picks = span_indices(ts, live_span(end_ts, duration), num_samples)
            if picks is None:
                return None
            slots = order[picks]
            frames = self._images[slots]
            seqs = tuple(int(s) for s in self._seq[slots])
            stamps = tuple(float(t) for t in self._ts[slots])
            media = tuple(float(t) for t in self._media[slots])
            wall_start, wall_end = float(self._wall[slots[0]]), float(self._wall[slots[-1]])
            epoch = self.epoch
        return Window(
            stream=self.stream, frames=frames, seqs=seqs, ts=stamps, wall_start=wall_start,
            wall_end=wall_end, due_ts=end_ts, epoch=epoch, media=media,
        )

    def release_before(self, ts: float) -> None:
        """Frames older than ``ts`` will not be needed again (they may be overwritten
        without counting as drops, and a LOSSLESS ring may reuse their slots)."""
        with self._lock:
            self._released_ts = max(self._released_ts, ts)

    def reset(self) -> None:
        """Forget every frame (after a reconnect) and start a new epoch, so that no
        window spans the gap."""
        with self._lock:
            self._start = 0
            self._count = 0
            self._released_ts = -np.inf
            self.epoch += 1
