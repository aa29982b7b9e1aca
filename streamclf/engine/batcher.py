"""``InferenceWorker``: the one thread that runs the model for every stream.

It polls each stream's scheduler, gathers the due window from the stream's ring,
runs the backend and hands the result to the stream's ``publish`` callback.
Nothing waits on it: capture keeps filling the rings, and a slow model simply
sees fewer, fresher windows (the scheduler counts the skipped ones).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamclf.engine.backends.base import InferenceBackend
from streamclf.errors import ConfigError
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.types import Window

__all__ = ["InferenceWorker", "StreamSlot"]

log = logging.getLogger(__name__)

Publish = Callable[[Window, np.ndarray, np.ndarray, float], None]


@dataclass
class StreamSlot:
    """One stream as the worker sees it.

    ``publish(window, probs (K,), features (D,), inference_ms)`` is called on the
    worker thread; ``on_reset()`` too, when the ring started a new epoch (reconnect).
    The scheduler is touched only by the worker thread.
    """

    stream: str
    ring: FrameRing
    scheduler: WindowScheduler
    num_frames: int
    publish: Publish
    on_reset: Callable[[], None] = lambda: None
    epoch: int = field(default=0, init=False)
    windows: int = field(default=0, init=False)
    # Set by the worker from just before it takes a window until that window is published
    # (or failed), so that "nothing due" at end of file does not miss one still in the model.
    busy: bool = field(default=False, init=False)


class InferenceWorker:
    """Runs ``backend`` over the streams' due windows on one thread.

    Args:
        backend: the model runner (see :class:`InferenceBackend`).
        on_error: called as ``on_error(stream, exc)`` when inference of one window raises
            (for each stream of a failed batch); the worker carries on with the next window.
        idle_wait_s: longest wait for new frames when no window is due.
        max_batch: most windows per backend call; each stream gives at most one window to
            a batch, and the stream that starts the collection rotates, so no stream
            starves.
        max_wait_ms: with fewer due windows than ``min(max_batch, streams)``, how long to
            wait for more before running what is there. 0: never wait.

    Raises:
        ConfigError: ``max_batch`` < 1 or ``max_wait_ms`` < 0.

    Thread-safety: ``add_stream``, ``remove_stream``, ``notify``, ``stop`` and the counters
    may be used from any thread.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        on_error: Callable[[str, Exception], None] | None = None,
        idle_wait_s: float = 0.05,
        max_batch: int = 1,
        max_wait_ms: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if not max_wait_ms >= 0:  # also rejects NaN
            raise ConfigError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.backend = backend
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._on_error = on_error or (lambda s, e: log.error("inference failed on %s: %s", s, e))
        self._idle_wait_s = idle_wait_s
        self._slots: dict[str, StreamSlot] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamclf-inference", daemon=True)
        self.clips = 0
        self.batches = 0
        self.errors = 0
        self.busy_s = 0.0
        self._rate = 0.0
        self._last_done: float | None = None

    # -- control ---------------------------------------------------------------------------
    def add_stream(self, slot: StreamSlot) -> None:
        with self._lock:
            self._slots[slot.stream] = slot
        self._wake.set()

    def remove_stream(self, stream: str) -> None:
        with self._lock:
            self._slots.pop(stream, None)

    def notify(self) -> None:
        """A new frame arrived somewhere: re-check the schedulers now."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to end after the current window; True if it joined in time."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def inference_fps(self) -> float:
        """Clips per second over recent windows (exponential average)."""
        return self._rate

    def idle(self, stream: str | None = None) -> bool:
        """True when no stream (or just ``stream``) has a due window right now (used to
        drain at end of file)."""
        with self._lock:
            slots = [s for s in self._slots.values() if stream is None or s.stream == stream]
        for slot in slots:
            span = slot.ring.span()
            if span is not None and slot.scheduler.peek(*span):
                return False
            # Read after the scheduler: a window it no longer shows as due was taken with
            # ``busy`` already set, which stays set until that window is published.
            if slot.busy:
                return False
        return True

    # -- loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            with self._lock:
                slots = list(self._slots.values())
            batch: list[tuple[StreamSlot, Window]] = []
            if slots:
                # Rotate the starting stream so that no stream starves.
                turn = (turn + 1) % len(slots)
                batch = self._collect(slots[turn:] + slots[:turn])
            if batch:
                self._infer(batch)
            else:
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()

    def _collect(self, slots: list[StreamSlot]) -> list[tuple[StreamSlot, Window]]:
        """One due window from each of up to ``max_batch`` streams, waiting at most
        ``max_wait_s`` for more streams to become due."""
        want = min(self.max_batch, len(slots))
        batch: list[tuple[StreamSlot, Window]] = []
        pending = list(slots)
        deadline: float | None = None
        while pending and not self._stop.is_set():
            for slot in list(pending):
                slot.busy = True
                window = None
                try:
                    window = self._take(slot)
                finally:
                    slot.busy = window is not None
                if window is not None:
                    batch.append((slot, window))
                    pending.remove(slot)
                    if len(batch) == want:
                        return batch
            if not batch or self.max_wait_s <= 0:
                return batch
            now = time.monotonic()
            deadline = now + self.max_wait_s if deadline is None else deadline
            if now >= deadline:
                return batch
            self._wake.wait(min(deadline - now, self._idle_wait_s))
            self._wake.clear()
        return batch

    def _take(self, slot: StreamSlot) -> Window | None:
        """The slot's due window (gathered from its ring), or None."""
        if slot.ring.epoch != slot.epoch:
            slot.epoch = slot.ring.epoch
            slot.scheduler.reset()
            slot.on_reset()
        span = slot.ring.span()
        if span is None:
            return None
        due = slot.scheduler.poll(*span)
        if due is None:
            return None
        window = slot.ring.window(due, slot.scheduler.duration, slot.num_frames)
        keep_from = slot.scheduler.next_window_start()
        if keep_from is not None:
            slot.ring.release_before(keep_from)
        if window is None or window.epoch != slot.epoch:
            return None
        return window

    def _infer(self, batch: list[tuple[StreamSlot, Window]]) -> None:
        t0 = time.perf_counter()
        try:
            probs, feats = self.backend.infer([window.frames for _, window in batch])
        except Exception as exc:  # one bad batch must not end the streams
            for slot, _ in batch:
                self.errors += 1
                self._on_error(slot.stream, exc)
                slot.busy = False
            return
        elapsed = time.perf_counter() - t0
        self.busy_s += elapsed
        self.clips += len(batch)
        self.batches += 1
        now = time.monotonic()
        if self._last_done is not None:
            gap = max(now - self._last_done, 1e-6) / len(batch)
            self._rate = 1.0 / gap if self._rate == 0 else 0.8 * self._rate + 0.2 / gap
        self._last_done = now
        for i, (slot, window) in enumerate(batch):
            slot.windows += 1
            try:
                slot.publish(window, probs[i], feats[i], elapsed * 1000.0)
            finally:
                slot.busy = False
