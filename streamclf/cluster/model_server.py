"""The model side of a cluster run: the engine's batcher in front of one backend.

:class:`ModelActor` is what runs in a Ray actor (``ray.remote(ModelActor)``, created by
:mod:`streamclf.cluster.runner` with ``max_concurrency`` high enough that every stream's
call can wait in its own actor thread): it loads the model and backend like
``streamclf run`` does (:func:`~streamclf.engine.load.load_backend`) and serves
:meth:`ModelActor.infer`. Batching is the live engine's own
:class:`~streamclf.engine.batcher.InferenceWorker`, fed by one
:class:`~streamclf.engine.submit.SubmitSlot` per stream: no second batcher.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from streamclf.cluster.messages import ClipRequest, ClipResult
from streamclf.config import RunConfig
from streamclf.engine.backends.base import InferenceBackend
from streamclf.engine.batcher import InferenceWorker
from streamclf.engine.submit import SubmitSlot
from streamclf.errors import ModelError, StreamclfError

__all__ = ["ModelActor", "ModelServer"]

log = logging.getLogger(__name__)


class ModelServer:
    """Batches clips submitted from many threads into one backend, with the live engine's
    :class:`~streamclf.engine.batcher.InferenceWorker` (testable without Ray).

    Args:
        backend: the model runner; only the worker thread calls it.
        max_batch, max_wait_ms: the run's batching (one window per stream per batch).
        actor: this model actor's index, copied into results.

    Thread-safety: :meth:`submit`, :meth:`stop` and the counters may be used from any thread.
    """

    def __init__(self, backend: InferenceBackend, max_batch: int = 4,
                 max_wait_ms: float = 10.0, actor: int = 0) -> None:
        self.actor = actor
        self.worker = InferenceWorker(backend, on_error=self._on_error,
                                      max_batch=max_batch, max_wait_ms=max_wait_ms)
        self._slots: dict[str, SubmitSlot] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """End the worker after its current batch; waiting callers get a ModelError. True if
        it ended within ``timeout_s``."""
        with self._lock:
            self._stopped = True
            slots = list(self._slots.values())
        for slot in slots:
            slot.close("the model actor is stopping")
        return self.worker.stop(timeout_s)

    def submit(self, request: ClipRequest, timeout_s: float = 30.0) -> ClipResult:
        """Classify one clip; blocks until its batch ran.

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            ModelError: the actor is stopping.
            Exception: whatever the backend raised for this clip's batch.
        """
        answer = self._slot(request.stream).submit(request.frames, request.wall_start,
                                                   request.wall_end, timeout_s)
        return ClipResult(request.stream, request.index, answer.probs, answer.inference_ms,
                          answer.batch, self.actor)

    @property
    def clips(self) -> int:
        return self.worker.clips

    @property
    def batches(self) -> int:
        return self.worker.batches

    @property
    def errors(self) -> int:
        return self.worker.errors

    @property
    def mean_batch(self) -> float:
        return self.clips / self.batches if self.batches else 0.0

    def _slot(self, stream: str) -> SubmitSlot:
        with self._lock:
            if self._stopped:
                raise ModelError("the model actor is stopping")
            slot = self._slots.get(stream)
            if slot is None:
                slot = SubmitSlot(stream, self.worker.notify, lambda: self.worker.batch_size)
                self._slots[stream] = slot
                self.worker.add_stream(slot)
            return slot

    def _on_error(self, stream: str, exc: Exception) -> None:  # worker thread
        log.error("model actor %d: a batch failed on %s: %s", self.actor, stream, exc)
        with self._lock:
            slot = self._slots.get(stream)
        if slot is not None:
            slot.fail(exc)


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
        self.model: ModelServer | None = None
        self._info: dict[str, Any] = {"index": index}
        try:
            loaded = load_backend(config, threads=max(1, threads))
        except StreamclfError as exc:  # reported by load(), as one line
            self._info["error"] = str(exc)
            return
        backend = loaded.backend
        self.model = ModelServer(backend, max_batch, max_wait_ms, index)
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
                "busy_s": round(m.worker.busy_s, 3)}

    def stop(self) -> bool:
        return self.model.stop(1.0) if self.model is not None else True
