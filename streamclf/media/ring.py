"""``FrameRing``: one stream's recent frames, kept as decoded, converted when a window samples
them.

The capture thread pushes :class:`~streamclf.types.Frame` objects whose pictures are not
converted (YUV straight from the decoder, :mod:`streamclf.media.picture`); the inference
thread cuts windows. A window converts only the frames it samples, each once, with the
stream's spatial step (``transform``: the model's short-side resize and centre crop, or the
region of interest), outside the lock, and keeps the ``(crop, crop, 3)`` result in a
preallocated cache for the overlapping windows that sample the frame again; the decoded
picture is let go once converted, or once no later window can sample it, so the ring holds
pictures only for the frames the next windows may still use. Frames no window samples are
never converted (x3d_xs takes 4 frames of the ~48 in its 1.6 s).

Memory is bounded twice: by time (``capacity`` slots, sized by the runner from the clip
duration, stride and frame rate) and by bytes (``max_bytes``: pictures held plus the cache).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from streamclf.errors import ConfigError
from streamclf.media.clips import live_span, span_indices
from streamclf.media.picture import Picture
from streamclf.types import BufferPolicy, Frame, Window

__all__ = ["FrameRing"]

log = logging.getLogger(__name__)


class FrameRing:
    """Newest-frames ring buffer for one stream.

    Args:
        capacity: frames kept; size it to hold at least one window plus one stride.
        frame_shape: ``(crop, crop, 3)`` of the converted frames.
        transform: ``(H, W, 3) uint8 RGB -> frame_shape uint8``, applied once to each frame
            a window samples (on the thread that cuts the window); None: the pictures are
            ``frame_shape`` already.
        policy: ``LATEST`` overwrites the oldest frame when full; ``LOSSLESS`` refuses
            the push (``push`` returns False) while the oldest frame is still needed.
        stream: stream id copied into windows.
        window_s: the longest span of video one window needs (duration plus a frame or
            two); a full LOSSLESS ring holding less grows (see below). 0: never grows.
        max_bytes: the most the ring holds: decoded pictures plus the converted cache. A
            push that would pass it evicts the oldest frames first (drops, when still
            needed; a LOSSLESS ring holding a full window waits for the consumer instead),
            and a LOSSLESS ring grows its cache only within it.
        check: called as ``check(height, width)`` on the capture thread when a frame of a
            new size arrives; raises for frames the transform cannot take (a pixel region of
            interest outside the frame), so that the error ends capture at once.

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
    than ``window_s`` of video doubles, up to ``max_bytes``; past that it drops the oldest
    frame (counted) rather than hang.

    Counters: ``pushed``, ``drops`` (frames evicted before every window that could use
    them was cut: frames lost to a slow consumer or to ``max_bytes``), ``converted``
    (frames converted for windows), ``nbytes`` and ``peak_bytes`` (held now, and at most).

    Thread-safety: ``push`` from one producer thread and ``window``/``release_before``/
    ``reset`` from any thread are safe; all state changes happen under one lock, and
    conversion happens outside it.
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
        check: Callable[[int, int], object] | None = None,
    ) -> None:
        if capacity < 2:
            raise ConfigError("capacity must be >= 2")
        self._window_s, self._frame_bytes = window_s, int(np.prod(frame_shape))
        if max_bytes < 2 * self._frame_bytes:
            raise ConfigError(f"the frame ring's byte cap ({max_bytes} B) holds less than two "
                              "converted frames")
        self.max_bytes = int(max_bytes)
        self._max_capacity = max(capacity, max_bytes // 2 // max(1, self._frame_bytes))
        self.capacity = capacity
        self.policy = policy
        self.stream = stream
        self._transform, self._check = transform, check
        self._checked: tuple[int, int] | None = None
        self._images = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self._ready = np.zeros(capacity, dtype=bool)
        self._pictures: list[Picture | None] = [None] * capacity
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._wall = np.zeros(capacity, dtype=np.float64)
        self._media = np.zeros(capacity, dtype=np.float64)
        self._seq = np.zeros(capacity, dtype=np.int64)
        self._lock = threading.Lock()
        self._start = 0  # slot of the oldest frame
        self._count = 0
        self._freed = 0  # the oldest frames whose pictures were let go (released)
        self._held = 0  # bytes of the pictures held
        self._released_ts = -np.inf
        self.epoch = 0
        self.pushed = 0
        self.drops = 0
        self.converted = 0
        self.peak_bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held now: the decoded pictures plus the converted cache."""
        return self._held + self._images.nbytes

    def push(self, frame: Frame) -> bool:
        """Store ``frame`` (its picture as it is). Returns False only when a LOSSLESS ring is
        full of frames still needed: the caller should wait and retry."""
        picture = frame.picture
        if self._check is not None and self._checked != (picture.height, picture.width):
            self._check(picture.height, picture.width)
            self._checked = (picture.height, picture.width)
        size = picture.nbytes
        with self._lock:
            newest = (self._start + self._count - 1) % self.capacity
            if self._count and frame.ts <= self._ts[newest]:
                return True  # not newer than the newest: a duplicate or clock glitch, skip
            self._free_released()
            while self._count and (self._count == self.capacity
                                   or self._held + size + self._images.nbytes > self.max_bytes):
                oldest_needed = self._ts[self._start] >= self._released_ts
                if oldest_needed and self.policy is BufferPolicy.LOSSLESS:
                    held = float(self._ts[newest] - self._ts[self._start])
                    if held >= self._window_s:
                        return False  # back-pressure: a window is due, the consumer frees it
                    if self._count == self.capacity and self._grow():
                        continue  # room now: nothing is evicted
                self.drops += int(oldest_needed)
                self._evict_oldest()
            slot = (self._start + self._count) % self.capacity
            self._pictures[slot] = picture
            self._held += size
            self._ready[slot] = False
            self._ts[slot] = frame.ts
            self._wall[slot] = frame.wall_ts
            self._media[slot] = frame.media_ts
            self._seq[slot] = frame.seq
            self._count += 1
            self.pushed += 1
            self.peak_bytes = max(self.peak_bytes, self.nbytes)
        return True

    def _evict_oldest(self) -> None:
        """Forget the oldest frame (lock held)."""
        self._let_go(self._start)
        self._start = (self._start + 1) % self.capacity
        self._count -= 1
        self._freed = max(0, self._freed - 1)

    def _let_go(self, slot: int) -> None:
        """Drop the picture of ``slot`` (lock held)."""
        picture, self._pictures[slot] = self._pictures[slot], None
        if picture is not None:
            self._held -= picture.nbytes

    def _free_released(self) -> None:
        """Let go of the pictures no later window can sample (lock held)."""
        while self._freed < self._count:
            slot = (self._start + self._freed) % self.capacity
            if not self._ts[slot] < self._released_ts:
                break
            self._let_go(slot)
            self._freed += 1

    def _grow(self) -> bool:
        """Double the capacity within ``max_bytes``, oldest frame first (lock held); False
        when it cannot grow."""
        size = min(2 * self.capacity, self._max_capacity,
                   max(self.capacity, (self.max_bytes - self._held) // self._frame_bytes))
        if size <= self.capacity:
            return False
        order = self._ordered()
        for name in ("_images", "_ready", "_ts", "_wall", "_media", "_seq"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: self._count] = old[order]
            setattr(self, name, new)
        pictures = [self._pictures[int(i)] for i in order]
        self._pictures = pictures + [None] * (size - len(pictures))
        self.capacity, self._start = size, 0
        log.info("stream %s: frame ring grown to %d frames (the source's real rate is above "
                 "its declared one)", self.stream, size)
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

        The window rule of :mod:`streamclf.media.clips`: the frames in
        ``live_span(end_ts, duration)`` (one stamped exactly ``end_ts`` included), sampled
        by ``span_indices``. The sampled frames not converted yet are converted here (on
        the caller's thread, outside the lock) and cached. Returns None if the span holds
        no frame. ``frames`` of the window is a new ``(num_samples, crop, crop, 3)`` array.
        """
        with self._lock:
            order = self._ordered()
            picks = span_indices(self._ts[order], live_span(end_ts, duration), num_samples)
            if picks is None:
                return None
            slots = order[picks]
            frames = np.empty((len(slots), *self._images.shape[1:]), dtype=np.uint8)
            todo: dict[int, tuple[int, Picture, list[int]]] = {}
            for i, slot in enumerate(slots.tolist()):
                if self._ready[slot]:
                    frames[i] = self._images[slot]
                    continue
                picture = self._pictures[slot]
                if picture is None:  # let go already: cannot happen by the release rule
                    log.warning("stream %s: a window sampled a released frame", self.stream)
                    return None
                todo.setdefault(slot, (int(self._seq[slot]), picture, []))[2].append(i)
            seqs = tuple(int(s) for s in self._seq[slots])
            stamps = tuple(float(t) for t in self._ts[slots])
            media = tuple(float(t) for t in self._media[slots])
            wall_start, wall_end = float(self._wall[slots[0]]), float(self._wall[slots[-1]])
            epoch = self.epoch
        done = []
        for slot, (seq, picture, rows) in todo.items():
            image = picture.rgb()
            image = self._transform(image) if self._transform is not None else image
            frames[rows] = image
            done.append((slot, seq, rows[0]))
        if done:
            with self._lock:
                for slot, seq, row in done:
                    self.converted += 1
                    if self.epoch == epoch and self._seq[slot] == seq \
                            and self._pictures[slot] is not None:  # still that frame
                        self._images[slot] = frames[row]
                        self._ready[slot] = True
                        self._let_go(slot)
        return Window(
            stream=self.stream, frames=frames, seqs=seqs, ts=stamps, wall_start=wall_start,
            wall_end=wall_end, due_ts=end_ts, epoch=epoch, media=media,
        )

    def release_before(self, ts: float) -> None:
        """Frames older than ``ts`` will not be needed again (they may be overwritten
        without counting as drops, a LOSSLESS ring may reuse their slots, and their
        pictures are let go)."""
        with self._lock:
            self._released_ts = max(self._released_ts, ts)
            self._free_released()

    def reset(self) -> None:
        """Forget every frame (after a reconnect) and start a new epoch, so that no
        window spans the gap."""
        with self._lock:
            for slot in range(self.capacity):
                self._let_go(slot)
            self._ready[:] = False
            self._start = 0
            self._count = 0
            self._freed = 0
            self._released_ts = -np.inf
            self.epoch += 1
