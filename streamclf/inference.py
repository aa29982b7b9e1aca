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

from streamclf.backends.base import InferenceBackend
from streamclf.ring_buffer import FrameRing
from streamclf.scheduler import WindowScheduler
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


class InferenceWorker:
    """Runs ``backend`` over the streams' due windows on one thread.

    Args:
        backend: the model runner (see :class:`InferenceBackend`).
        on_error: called as ``on_error(stream, exc)`` when inference of one window raises;
            the worker carries on with the next window.
        idle_wait_s: longest wait for new frames when no window is due.

    Thread-safety: ``add_stream``, ``remove_stream``, ``notify``, ``stop`` and the counters
    may be used from any thread.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        on_error: Callable[[str, Exception], None] | None = None,
        idle_wait_s: float = 0.05,
    ) -> None:
        self.backend = backend
        self._on_error = on_error or (lambda s, e: log.error("inference failed on %s: %s", s, e))
        self._idle_wait_s = idle_wait_s
        self._slots: dict[str, StreamSlot] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamclf-inference", daemon=True)
        self.clips = 0
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

    def idle(self) -> bool:
        """True when no stream has a due window right now (used to drain at end of file)."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            span = slot.ring.span()
            if span is None:
                continue
            if slot.scheduler.peek(*span):
                return False
        return True

    # -- loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            with self._lock:
                slots = list(self._slots.values())
            did_work = False
            if slots:
                # Rotate the starting stream so that no stream starves.
                turn = (turn + 1) % len(slots)
                for slot in slots[turn:] + slots[:turn]:
                    if self._stop.is_set():
                        break
                    did_work |= self._serve(slot)
            if not did_work:
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()

    def _serve(self, slot: StreamSlot) -> bool:
        if slot.ring.epoch != slot.epoch:
            slot.epoch = slot.ring.epoch
            slot.scheduler.reset()
            slot.on_reset()
        span = slot.ring.span()
        if span is None:
            return False
        due = slot.scheduler.poll(*span)
        if due is None:
            return False
        window = slot.ring.window(due, slot.scheduler.duration, slot.num_frames)
        keep_from = slot.scheduler.next_window_start()
        if keep_from is not None:
            slot.ring.release_before(keep_from)
        if window is None or window.epoch != slot.epoch:
            return True
        t0 = time.perf_counter()
        try:
            probs, feats = self.backend.infer([window.frames])
        except Exception as exc:  # one bad window must not end the stream
            self.errors += 1
            self._on_error(slot.stream, exc)
            return True
        elapsed = time.perf_counter() - t0
        self.busy_s += elapsed
        self.clips += 1
        slot.windows += 1
        now = time.monotonic()
        if self._last_done is not None:
            gap = max(now - self._last_done, 1e-6)
            self._rate = 1.0 / gap if self._rate == 0 else 0.8 * self._rate + 0.2 / gap
        self._last_done = now
        slot.publish(window, probs[0], feats[0], elapsed * 1000.0)
        return True
