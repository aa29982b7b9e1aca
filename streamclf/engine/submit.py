"""Clips handed to the batcher from other threads: one :class:`SubmitSlot` per stream.

A live stream gives the :class:`~streamclf.engine.batcher.InferenceWorker` its windows from
its own ring (:class:`~streamclf.engine.batcher.StreamSlot`). A cluster's model actor gets
them as calls instead, one blocking call per window, from each stream actor. A
:class:`SubmitSlot` turns those calls into a :class:`~streamclf.engine.batcher.WindowSource`,
so the model actors batch with the same worker (one window per stream per batch, the same
``max_batch``/``max_wait_ms`` rule, the same counters) instead of a second batcher.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamclf.errors import ModelError
from streamclf.types import Window

__all__ = ["Answer", "SubmitSlot"]


@dataclass(frozen=True)
class Answer:
    """The model's answer for one submitted clip.

    Attributes:
        probs: ``(K,)`` float32 probabilities.
        features: ``(D,)`` float32 embedding (``D`` may be 0).
        inference_ms: the model call that held the clip (the whole batch).
        batch: windows in that call.
    """

    probs: np.ndarray
    features: np.ndarray
    inference_ms: float
    batch: int


@dataclass
class _Pending:
    window: Window
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    error: BaseException | None = None


class SubmitSlot:
    """One stream's clips, submitted from any thread and batched by the worker.

    Args:
        stream: the stream id (one slot per stream; the worker takes at most one window per
            stream per batch).
        wake: called after each submit (the worker's ``notify``).
        batch_size: the worker's current batch size, read while publishing.
        max_pending: most clips waiting; a stream actor sends one at a time, so more means
            a caller that gave up and retried (the oldest are failed).

    Thread-safety: :meth:`submit` and :meth:`close` from any thread; :meth:`take`,
    :meth:`due`, :meth:`publish` and :meth:`fail` on the worker thread.
    """

    def __init__(self, stream: str, wake: Callable[[], None], batch_size: Callable[[], int],
                 max_pending: int = 4) -> None:
        self.stream = stream
        self.busy = False
        self.windows = 0
        self._wake, self._batch_size, self._max = wake, batch_size, max_pending
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._inflight: _Pending | None = None
        self._closed = False

    # -- any thread ------------------------------------------------------------------------
    def submit(self, frames: np.ndarray, wall_start: float, wall_end: float,
               timeout_s: float) -> Answer:
        """Queue ``(T, crop, crop, 3)`` uint8 frames and wait for the model's answer.

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            ModelError: the slot is closed (the model is stopping).
            Exception: what the backend raised for this clip's batch.
        """
        window = Window(self.stream, frames, (), (), wall_start, wall_end, wall_end)
        pending = _Pending(window)
        with self._lock:
            if self._closed:
                raise ModelError("the model is stopping")
            while len(self._queue) >= self._max:
                old = self._queue.popleft()
                old.error = ModelError("superseded by a newer clip of the same stream")
                old.done.set()
            self._queue.append(pending)
        self._wake()
        if not pending.done.wait(timeout_s):
            with self._lock:
                if pending in self._queue:
                    self._queue.remove(pending)
            raise TimeoutError(f"no answer from the model within {timeout_s:g} s")
        if pending.error is not None:
            raise pending.error
        assert pending.answer is not None
        return pending.answer

    def close(self, reason: str = "the model is stopping") -> None:
        """Fail every waiting clip (and the one in the model) and refuse new ones."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            if self._inflight is not None:
                waiting.append(self._inflight)
        for pending in waiting:
            pending.error = ModelError(reason)
            pending.done.set()

    # -- worker thread ---------------------------------------------------------------------
    def take(self) -> Window | None:
        with self._lock:
            if not self._queue:
                return None
            self._inflight = self._queue.popleft()
            return self._inflight.window

    def due(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def publish(self, window: Window, probs: np.ndarray, features: np.ndarray,
                inference_ms: float) -> None:
        pending = self._finish(window)
        if pending is not None:
            pending.answer = Answer(np.asarray(probs, np.float32),
                                    np.asarray(features, np.float32), inference_ms,
                                    self._batch_size())
            pending.done.set()

    def fail(self, exc: BaseException) -> None:
        """The batch that held this stream's window raised ``exc``."""
        with self._lock:
            pending, self._inflight = self._inflight, None
        if pending is not None:
            pending.error = exc
            pending.done.set()

    def _finish(self, window: Window) -> _Pending | None:
        with self._lock:
            pending = self._inflight
            if pending is None or pending.window is not window:
                return None
            self._inflight = None
            return pending

