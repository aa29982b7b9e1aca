"""``FrameRing``: a preallocated, thread-safe ring of preprocessed frames for one stream.

The capture thread pushes; the inference thread gathers windows. Each frame is
resized and centre-cropped once, on entry (outside the lock), and stored in a
preallocated ``(capacity, crop, crop, 3)`` uint8 array; a window is then one index
gather, never a re-decode or re-resize.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from streamclf.errors import ConfigError
from streamclf.media.preprocess import uniform_indices
from streamclf.types import BufferPolicy, Frame, Window

__all__ = ["FrameRing", "span_indices"]

#: Tolerance so that a window ending exactly on a frame's timestamp includes that frame.
_EPS = 1e-6


def span_indices(ts: np.ndarray, start: float, end: float, num_samples: int) -> np.ndarray | None:
    """Positions in ``ts`` (sorted ascending) of ``num_samples`` frames sampled from the span.

    The frames with ``start <= ts < end`` are taken, then ``num_samples`` of them are
    picked with :func:`~streamclf.media.preprocess.uniform_indices`: the same rule as the
    offline reference (``get_clip(start, end)`` then ``UniformTemporalSubsample``).
    Returns ``None`` when the span holds no frame.
    """
    lo = int(np.searchsorted(ts, start, side="left"))
    hi = int(np.searchsorted(ts, end, side="left"))
    if hi <= lo:
        return None
    return lo + uniform_indices(hi - lo, num_samples)


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

    LOSSLESS (``pace: fast``) contract: no frame is evicted before :meth:`release_before` has
    released it, and nothing is released before the consumer's scheduler has anchored its
    grid and cut the windows that need it (the inference worker releases up to
    :meth:`~streamclf.media.scheduler.WindowScheduler.next_window_start` after each window).
    So at the first poll the ring still holds the stream's first frame, and the scheduler
    anchors its grid there, however many frames an instant source pushed before. The run
    progresses only if one window fits: ``capacity`` must be at least ``duration * fps + 2``
    frames at the source's real frame rate, else the ring fills with frames still needed
    while no window is due, and the producer waits forever.

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
    ) -> None:
        if capacity < 2:
            raise ConfigError("capacity must be >= 2")
        self.capacity = capacity
        self.policy = policy
        self.stream = stream
        self._transform = transform
        self._images = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._wall = np.zeros(capacity, dtype=np.float64)
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
                    return False
                self.drops += int(oldest_needed)
                self._start = (self._start + 1) % self.capacity
                self._count -= 1
            slot = (self._start + self._count) % self.capacity
            self._images[slot] = image
            self._ts[slot] = frame.ts
            self._wall[slot] = frame.wall_ts
            self._seq[slot] = frame.seq
            self._count += 1
            self.pushed += 1
        return True

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

        Returns None if the span holds no frame. The only copy is the one gather into
        the returned ``(num_samples, crop, crop, 3)`` array.
        """
        with self._lock:
            order = self._ordered()
            ts = self._ts[order]
            picks = span_indices(ts, end_ts - duration + _EPS, end_ts + _EPS, num_samples)
            if picks is None:
                return None
            slots = order[picks]
            frames = self._images[slots]
            seqs = tuple(int(s) for s in self._seq[slots])
            stamps = tuple(float(t) for t in self._ts[slots])
            wall_start, wall_end = float(self._wall[slots[0]]), float(self._wall[slots[-1]])
            epoch = self.epoch
        return Window(
            stream=self.stream, frames=frames, seqs=seqs, ts=stamps, wall_start=wall_start,
            wall_end=wall_end, due_ts=end_ts, epoch=epoch,
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
