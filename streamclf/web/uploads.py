"""``POST /api/classify``: classify uploaded videos off the live path.

:class:`ClassifyService` runs :meth:`ActionClassifier.classify_file` on a saved upload
(:mod:`streamclf.web.formdata` writes it) in one worker, one upload at a time, the
classifier built on the first upload. Where that worker runs is a named policy,
:class:`Isolation`:

* ``PROCESS`` (default): a spawned process (never a fork of this multi-threaded one) at
  low CPU priority (``nice`` +10) with one torch thread. Why: torch's thread settings and
  the GIL are per process, so a classifier on a thread of the server takes both from the
  live streams, while the kernel gives a niced process only the CPU the live pipeline
  leaves. Measured on the team's 2-core machine (x3d_xs on torch, one live 30 fps stream,
  uploads of a real clip classified back to back for 20 s, three runs each): live latency
  p50/p95 rose by 13-65/97-131 ms with the worker process (22-29 uploads classified) and
  by 286-318/394-463 ms with a thread (20-28 classified), from baselines of 160-312/186-392
  ms. The first upload waits for the worker to start (~10 s: it imports torch and builds
  the model).
* ``THREAD``: a thread of this process; for a ``make_classifier`` that cannot be pickled
  (a closure), chosen automatically with a warning.

The process needs ``make_classifier`` to pickle: pass a :class:`ClassifierFactory`.

Thread-safety: every public method may be called from any thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import enum
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.errors import DataError

if TYPE_CHECKING:
    from streamclf.offline.classify import ActionClassifier

__all__ = ["ClassifierFactory", "ClassifyService", "Isolation"]

log = logging.getLogger(__name__)
#: How much lower the worker process's CPU priority is than the server's.
WORKER_NICE = 10
#: The worker process's classifiers, by pickled recipe (one in practice).
_BUILT: dict[bytes, ActionClassifier] = {}


class Isolation(enum.Enum):
    """Where uploads are classified (see the module docstring)."""

    PROCESS = "process"
    THREAD = "thread"


@dataclass(frozen=True)
class ClassifierFactory:
    """A picklable recipe for the upload classifier (built where it runs).

    Args are those of :class:`~streamclf.offline.classify.ActionClassifier` (``threads``:
    onnxruntime/openvino threads; the worker process runs torch on one thread).
    """

    model: str = "x3d_xs"
    weights: str = "kinetics400"
    classmap: str | None = None
    device: str = "auto"
    backend: str = "torch"
    threads: int | None = None

    def __call__(self) -> ActionClassifier:
        from streamclf.offline.classify import ActionClassifier

        return ActionClassifier(self.model, self.weights, classmap=self.classmap,
                                device=self.device, backend=self.backend,
                                threads=self.threads)


def _worker_init(nice: int) -> None:
    """Runs first in the worker process (before torch loads): lower its priority, and one
    OpenMP thread, so torch takes one core at most."""
    os.environ["OMP_NUM_THREADS"] = "1"
    with contextlib.suppress(AttributeError, OSError):  # Windows, not permitted: normal
        os.nice(nice)


def _classify_in_worker(recipe: bytes, clips: int, path: str,
                        filename: str) -> dict[str, Any]:
    """In the worker process: build the pickled ``recipe``'s classifier once, then
    :func:`_classify`. (One task at a time runs here, so no lock.)"""
    clf = _BUILT.get(recipe)
    if clf is None:
        clf = _BUILT[recipe] = pickle.loads(recipe)()
    return _classify(clf, clips, path, filename)


def _classify(clf: ActionClassifier, clips: int, path: str, filename: str) -> dict[str, Any]:
    """Classify the file at ``path`` (named ``filename`` in messages). Raises DataError for
    a bad video."""
    name = Path(filename).name or "upload"
    t0 = time.perf_counter()
    try:
        result = clf.classify_file(path, clips=clips)
    except DataError as exc:  # the message names the temporary file; name the upload
        raise DataError(str(exc).replace(path, name)) from None
    seconds = time.perf_counter() - t0
    return {"file": name, "model": clf.spec.name, "labels": list(result.labels),
            "scores": [round(float(s), 4) for s in result.scores],
            "seconds": round(seconds, 3)}


def _pickled(obj: object) -> bytes | None:
    try:
        return pickle.dumps(obj)
    except Exception:  # any pickling failure (closures, locks, ...)
        return None


class ClassifyService:
    """Classify uploaded videos, one at a time, off the live path.

    Args:
        make_classifier: builds the :class:`ActionClassifier` on the first upload (so a run
            without uploads loads nothing); a :class:`ClassifierFactory` for ``PROCESS``.
        clips: windows per video, averaged (as ``streamclf classify --clips``).
        isolation: where the classifier runs; ``PROCESS`` falls back to ``THREAD`` with a
            warning (at the first upload) when ``make_classifier`` cannot be pickled.

    ``PROCESS`` starts its worker with ``spawn``, which imports the main module again: a
    script that builds a service at import time needs the usual
    ``if __name__ == "__main__":`` guard (the ``streamclf`` commands have it).
    """

    def __init__(self, make_classifier: Callable[[], ActionClassifier], clips: int = 1,
                 isolation: Isolation = Isolation.PROCESS) -> None:
        self._recipe = _pickled(make_classifier) if isolation is Isolation.PROCESS else None
        #: Fell back to THREAD (said once, at the first upload, not at every start).
        self._fallback = isolation is Isolation.PROCESS and self._recipe is None
        self._make = make_classifier
        self.clips = clips
        self.isolation = Isolation.THREAD if self._fallback else isolation
        self._lock = threading.Lock()
        self._pool: cf.Executor | None = None
        self._clf: ActionClassifier | None = None  # THREAD: built here, on the worker thread

    def _executor(self) -> cf.Executor:
        with self._lock:
            if self._pool is None:
                if self.isolation is Isolation.PROCESS:
                    self._pool = cf.ProcessPoolExecutor(
                        1, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_worker_init, initargs=(WORKER_NICE,))
                else:
                    if self._fallback:
                        self._fallback = False
                        log.warning("upload classifier %r cannot be pickled, so uploads are "
                                    "classified on a thread of the server (live streams may "
                                    "slow down meanwhile); pass a "
                                    "streamclf.web.uploads.ClassifierFactory", self._make)
                    self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="streamclf-upload")
            return self._pool

    def submit(self, path: str | os.PathLike[str], filename: str) -> cf.Future[dict[str, Any]]:
        """Queue the saved upload at ``path``; the future's result is the JSON answer
        (``file``, ``model``, ``labels``, ``scores``, ``seconds``) or a DataError for a bad
        video. The caller deletes ``path`` once the future is done."""
        if self._recipe is not None:
            return self._executor().submit(_classify_in_worker, self._recipe, self.clips,
                                           str(path), filename)
        return self._executor().submit(self._classify_here, str(path), filename)

    def _classify_here(self, path: str, filename: str) -> dict[str, Any]:
        if self._clf is None:  # only the one worker thread gets here
            self._clf = self._make()
        return _classify(self._clf, self.clips, path, filename)

    def classify(self, path: str | os.PathLike[str], filename: str,
                 timeout_s: float = 300.0) -> dict[str, Any]:
        """:meth:`submit` and wait (raises what the future raises, or TimeoutError)."""
        return self.submit(path, filename).result(timeout_s)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the worker process (empty for ``THREAD`` or before the first
        upload)."""
        with self._lock:
            processes = getattr(self._pool, "_processes", None) or {}
            return list(processes)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the worker (a classification under way is abandoned: its process is
        terminated); the next :meth:`submit` starts a fresh one."""
        with self._lock:
            pool, self._pool = self._pool, None
        self._clf = None  # a THREAD classifier lives in this process: let it go
        if pool is None:
            return
        # ProcessPoolExecutor has no public terminate before Python 3.14.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in processes:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
