"""``InferenceWorker``: the one batcher, the thread that runs the model for every stream.

It asks each of its :class:`WindowSource` s for a due window, batches them, runs the backend
and hands each result back through the source's ``publish``. Two kinds of source exist:

* :class:`StreamSlot` (a live stream: its ring and scheduler). Nothing waits on the worker:
  capture keeps filling the rings, and a slow model simply sees fewer, fresher windows
  (the scheduler counts the skipped ones).
* :class:`~streamclf.engine.submit.SubmitSlot` (clips handed in from other threads: the
  cluster's model actors), so that a cluster batches with this same code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamclf.engine.backends.base import InferenceBackend
from streamclf.errors import ConfigError
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.types import Window

__all__ = ["InferenceWorker", "StreamSlot", "WindowSource"]

log = logging.getLogger(__name__)

Publish = Callable[[Window, np.ndarray, np.ndarray, float], None]


class WindowSource(Protocol):
    """What the worker batches from. ``take``, ``due`` and ``publish`` are called on the
    worker thread only; ``busy`` is set by the worker from just before it takes a window
    until that window is published (or failed)."""

    stream: str
    busy: bool
    windows: int

    def take(self) -> Window | None:
        """The next due window, or None."""
        ...

    def due(self) -> bool:
        """A window is due now (without taking it)."""
        ...

    def publish(self, window: Window, probs: np.ndarray, features: np.ndarray,
                inference_ms: float) -> None:
        """The model's ``(K,)`` probabilities and ``(D,)`` features for ``window``."""
        ...


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

    def take(self) -> Window | None:
        """The due window (gathered from the ring), or None; releases the frames no later
        window needs."""
        if self.ring.epoch != self.epoch:
            self.epoch = self.ring.epoch
            self.scheduler.reset()
            self.on_reset()
        span = self.ring.span()
        if span is None:
            return None
        due = self.scheduler.poll(*span)
        if due is None:
            return None
        try:  # cutting converts the sampled frames, which may fail: release all the same
            window = self.ring.window(due, self.scheduler.duration, self.num_frames)
        finally:  # (a LOSSLESS ring never released would hold up capture for ever)
            keep_from = self.scheduler.next_window_start()
            if keep_from is not None:
                self.ring.release_before(keep_from)
        if window is None or window.epoch != self.epoch:
            return None
        return window

    def due(self) -> bool:
        span = self.ring.span()
        return span is not None and self.scheduler.peek(*span)


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
        self._slots: dict[str, WindowSource] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamclf-inference", daemon=True)
        self.clips = 0
        #: Windows in the batch being published (read it from ``publish``).
        self.batch_size = 0
        self.batches = 0
        self.errors = 0
        self.busy_s = 0.0
        self._rate = 0.0
        self._last_done: float | None = None

    # -- control ---------------------------------------------------------------------------
    def add_stream(self, slot: WindowSource) -> None:
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
            if slot.due():
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
            batch: list[tuple[WindowSource, Window]] = []
            if slots:
                # Rotate the starting stream so that no stream starves.
                turn = (turn + 1) % len(slots)
                batch = self._collect(slots[turn:] + slots[:turn])
            if batch:
                self._infer(batch)
            else:
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()

    def _collect(self, slots: list[WindowSource]) -> list[tuple[WindowSource, Window]]:
        """One due window from each of up to ``max_batch`` streams, waiting at most
        ``max_wait_s`` for more streams to become due."""
        want = min(self.max_batch, len(slots))
        batch: list[tuple[WindowSource, Window]] = []
        pending = list(slots)
        deadline: float | None = None
        while pending and not self._stop.is_set():
            for slot in list(pending):
                slot.busy = True
                window = None
                try:
                    window = slot.take()  # converts the frames it samples (media/ring.py)
                except Exception as exc:  # e.g. a frame that cannot be converted: skip it
                    self.errors += 1
                    self._on_error(slot.stream, exc)
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

    def _infer(self, batch: list[tuple[WindowSource, Window]]) -> None:
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
        self.batch_size = len(batch)
        for i, (slot, window) in enumerate(batch):
            slot.windows += 1
            try:
                slot.publish(window, probs[i], feats[i], elapsed * 1000.0)
            finally:
                slot.busy = False
