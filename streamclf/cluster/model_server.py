"""The model side of a cluster run: a batching queue in front of one backend.

:class:`BatchingModel` is plain threads (testable without Ray): callers on any thread
:meth:`~BatchingModel.submit` one clip and block; one batching thread takes the first
waiting clip, waits at most ``max_wait_s`` for up to ``max_batch - 1`` more (from any
stream), runs the backend once on the batch and hands each caller its row.

:class:`ModelActor` is what runs in a Ray actor (``ray.remote(ModelActor)``, created by
:mod:`streamclf.cluster.runner` with ``max_concurrency`` high enough that every stream's
call can wait in its own actor thread): it loads the model and backend like
``streamclf run`` does and serves :meth:`ModelActor.infer`.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamclf.cluster.messages import ClipRequest, ClipResult
from streamclf.config import RunConfig
from streamclf.errors import ModelError, StreamclfError

__all__ = ["BatchingModel", "ModelActor"]

log = logging.getLogger(__name__)

InferFn = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Pending:
    request: ClipRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: ClipResult | None = None
    error: BaseException | None = None


class BatchingModel:
    """Batches clips submitted from many threads into one backend call.

    Args:
        infer: the backend's ``infer(clips) -> (probs (B, K), features (B, D))``; called
            only on the batching thread.
        max_batch: most clips in one call (>= 1).
        max_wait_s: longest wait for more clips once the first one is there (>= 0).
        actor: this model actor's index, copied into results.

    Thread-safety: :meth:`submit`, :meth:`stop` and the counters may be used from any
    thread; the backend is only ever called from the batching thread.
    """

    def __init__(self, infer: InferFn, max_batch: int = 4, max_wait_s: float = 0.01,
                 actor: int = 0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self._infer, self.actor = infer, actor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamclf-batcher", daemon=True)
        self.clips = self.batches = self.errors = 0
        self.busy_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """End the batching thread after its current batch; waiting callers get an error.
        True if it ended within ``timeout_s``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._fail_waiting(ModelError("the model actor is stopping"))
        return not self._thread.is_alive()

    def submit(self, request: ClipRequest, timeout_s: float = 30.0) -> ClipResult:
        """Classify one clip; blocks until its batch ran.

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            ModelError: the actor is stopping.
            Exception: whatever the backend raised for this clip's batch.
        """
        if self._stop.is_set():
            raise ModelError("the model actor is stopping")
        pending = _Pending(request)
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"no answer from the model within {timeout_s:g} s")
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    @property
    def mean_batch(self) -> float:
        return self.clips / self.batches if self.batches else 0.0

    # -- batching thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        t0 = time.perf_counter()
        try:
            probs, _ = self._infer([p.request.frames for p in batch])
        except Exception as exc:  # one bad batch must not end the actor
            self.errors += 1
            log.error("model actor %d: a batch of %d failed: %s", self.actor, len(batch), exc)
            for p in batch:
                p.error = exc
                p.done.set()
            return
        elapsed = time.perf_counter() - t0
        self.busy_s += elapsed
        self.clips += len(batch)
        self.batches += 1
        for row, p in enumerate(batch):
            p.result = ClipResult(p.request.stream, p.request.index,
                                  np.asarray(probs[row], dtype=np.float32), elapsed * 1000.0,
                                  len(batch), self.actor)
            p.done.set()

    def _fail_waiting(self, exc: BaseException) -> None:
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            pending.error = exc
            pending.done.set()


class ModelActor:
    """One model replica: loads the model and backend, then batches clips from every stream.

    Loading happens in the constructor, so that Ray's restart of a dead replica (its node
    was lost, or it ran out of memory) brings it back ready to serve.

    Args:
        index: this replica's index (in results and logs).
        config: the shared settings (``model``, ``weights``, ``classmap``, ``device``,
            ``backend``, ``precision``, ``threads``, ``torch_compile``).
        max_batch, max_wait_ms: the config's batching.
        threads: inference threads when the config sets none (the actor's CPU share).
    """

    def __init__(self, index: int, config: RunConfig, max_batch: int, max_wait_ms: float,
                 threads: int = 1) -> None:
        from streamclf.engine.load import load_backend

        self.index = index
        self.model: BatchingModel | None = None
        self._info: dict[str, Any] = {"index": index}
        try:
            loaded = load_backend(config, threads=max(1, threads))
        except StreamclfError as exc:  # reported by load(), as one line
            self._info["error"] = str(exc)
            return
        backend = loaded.backend
        self.model = BatchingModel(backend.infer, max_batch, max_wait_ms / 1000.0, index)
        self.model.start()
        self._info.update(labels=list(backend.labels), backend=backend.name,
                          reason=loaded.reason, device=loaded.device, threads=loaded.threads,
                          node=socket.gethostname(), pid=os.getpid())

    def load(self) -> dict[str, Any]:
        """:meth:`info` once the replica is ready, or ``{"index", "error"}`` with a one-line
        message when the model or backend could not be built (unknown model, missing
        weights, bad device ...)."""
        return self.info()

    def info(self) -> dict[str, Any]:
        """Labels, backend and where this replica runs (JSON-able)."""
        return dict(self._info)

    def infer(self, request: ClipRequest, timeout_s: float = 30.0) -> ClipResult:
        """Classify one clip (batched with whatever else is waiting)."""
        if self.model is None:
            raise ModelError("the model actor has no model loaded")
        return self.model.submit(request, timeout_s)

    def stats(self) -> dict[str, Any]:
        """Clips, batches, mean batch size, errors and busy seconds so far."""
        m = self.model
        if m is None:
            return {"index": self.index, "clips": 0, "batches": 0}
        return {"index": self.index, "clips": m.clips, "batches": m.batches,
                "mean_batch": round(m.mean_batch, 3), "errors": m.errors,
                "busy_s": round(m.busy_s, 3)}

    def stop(self) -> bool:
        return self.model.stop(1.0) if self.model is not None else True
