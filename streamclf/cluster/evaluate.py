"""``streamclf evaluate --engine ray``: the dataset spread over a pool of Ray actors.

Each actor builds the same :class:`~streamclf.offline.classify.ActionClassifier` as the local engine
and classifies chunks of the dataset with :func:`streamclf.offline.evaluate.evaluate` itself, so
decoding, clip choice, classification and failure messages are the local engine's and the
report is equal (up to its timing fields). Results are handed to ``on_result`` and returned
in dataset order; ``fail_fast`` and the stop event behave as in the local engine.

Actors: one per ``threads`` CPUs of the cluster (each reserves ``threads`` CPUs and uses
that many inference threads), or one per GPU when the cluster has GPUs and the device is
not ``cpu``. Each actor works in the driver's folder, so relative paths mean the same; on
a multi-node cluster the videos must be at the same paths on every node (shared storage).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamclf.offline.datasets import DatasetItem
from streamclf.offline.evaluate import Evaluation, FileResult
from streamclf.signals import keep_handlers

__all__ = ["EvalActor", "add_engine_options", "evaluate_from_args", "evaluate_on_ray"]

log = logging.getLogger(__name__)

#: Most files per actor call: enough to overlap decoding with inference inside the actor,
#: few enough to stop quickly (a small dataset gets smaller chunks, to reach every actor).
CHUNK = 4
_IN_FLIGHT = 2  # chunks queued per actor, so it never waits for the driver


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine local|ray`` and ``--address`` for ``streamclf evaluate``."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local (this machine, default) or ray (a pool of actors on a "
                             "Ray cluster; same report)")
    parser.add_argument("--address", default=None,
                        help="with --engine ray: auto, HOST:PORT or ray://HOST:PORT "
                             "(default: a local Ray instance on 127.0.0.1)")


class EvalActor:
    """One classifier in a Ray actor (create with ``ray.remote``).

    Args:
        classifier: keyword arguments of :class:`~streamclf.offline.classify.ActionClassifier`.
        threads: torch's inference threads in this actor.
        cwd: the driver's folder (entered when it exists here, for relative paths).
    """

    def __init__(self, classifier: dict[str, Any], threads: int, cwd: str) -> None:
        self._kwargs, self._threads = classifier, threads
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self._clf: Any = None

    def load(self) -> str | None:
        """Build the classifier; the one-line error when it cannot be built."""
        import torch

        from streamclf.errors import StreamclfError
        from streamclf.offline.classify import ActionClassifier

        torch.set_num_threads(self._threads)
        try:
            self._clf = ActionClassifier(**self._kwargs)
        except StreamclfError as exc:
            return str(exc)
        return None

    def run(self, items: Sequence[DatasetItem], clips: int, workers: int) -> list[FileResult]:
        """Classify ``items`` exactly as the local engine does (same function)."""
        from streamclf.offline.evaluate import evaluate

        return list(evaluate(self._clf, items, workers=workers, clips=clips).results)


def _plan(resources: dict[str, float], device: str, threads: int, chunks: int
          ) -> tuple[int, float]:
    """``(actors, gpus per actor)`` for this cluster."""
    gpus = resources.get("GPU", 0.0)
    if device != "cpu" and gpus >= 1:
        return max(1, min(int(gpus), chunks)), 1.0
    return max(1, min(int(resources.get("CPU", 1.0) // threads), chunks)), 0.0


def evaluate_on_ray(
    classifier: dict[str, Any],
    items: Sequence[DatasetItem],
    threads: int = 1,
    workers: int = 2,
    clips: int = 1,
    fail_fast: bool = False,
    stop: threading.Event | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    start_timeout_s: float = 300.0,
) -> Evaluation:
    """Classify ``items`` on the connected Ray cluster (see the module doc).

    Args:
        classifier: :class:`~streamclf.offline.classify.ActionClassifier` keyword arguments.
        threads: CPUs reserved by, and inference threads of, each actor.
        workers: decoding threads inside each actor.
        clips, fail_fast, stop, on_result: as :func:`streamclf.offline.evaluate.evaluate`.

    Raises:
        ModelError: an actor could not build the classifier (the first message).
        ConfigError: the actors were not placed within ``start_timeout_s``.
    """
    import ray

    from streamclf.cluster.connect import cluster_resources
    from streamclf.errors import ConfigError, ModelError

    stop = stop or threading.Event()
    device = str(classifier.get("device", "auto"))
    most, _ = _plan(cluster_resources(), device, threads, max(1, len(items)))
    size = max(1, min(CHUNK, -(-len(items) // (_IN_FLIGHT * most))))  # every actor gets work
    chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
    n, gpus = _plan(cluster_resources(), device, threads, len(chunks))
    remote: Any = ray.remote(EvalActor)  # Ray's stubs do not type actor classes
    actor_cls = remote.options(num_cpus=threads, num_gpus=gpus, scheduling_strategy="SPREAD")
    actors: list[Any] = [actor_cls.remote(classifier, threads, os.getcwd()) for _ in range(n)]
    results: list[FileResult] = []
    stopped: str | None = None
    try:
        loads = [a.load.remote() for a in actors]
        ready, _ = ray.wait(loads, num_returns=len(loads), timeout=start_timeout_s)
        if len(ready) < len(loads):
            raise ConfigError(f"the evaluation actors did not start within {start_timeout_s:g} "
                              "s (busy cluster, or no node with the resources asked for)")
        errors = [e for e in ray.get(loads) if e]
        if errors:
            raise ModelError(errors[0])
        log.info("evaluating %d videos on %d Ray actor(s)", len(items), n)
        start = time.monotonic()
        stopped = _schedule(actors, chunks, clips, workers, fail_fast, stop, results, on_result)
        elapsed = time.monotonic() - start
    finally:
        for actor in actors:
            ray.kill(actor)
    return Evaluation(tuple(results), elapsed, stopped)


def _schedule(actors: list[Any], chunks: list[list[DatasetItem]], clips: int, workers: int,
              fail_fast: bool, stop: threading.Event, results: list[FileResult],
              on_result: Callable[[FileResult], None] | None) -> str | None:
    """Keep every actor busy; hand results on in dataset order. Returns why it stopped."""
    import ray

    outstanding: dict[Any, tuple[int, int]] = {}  # ref -> (chunk index, actor index)
    load = [0] * len(actors)
    done: dict[int, list[FileResult]] = {}
    next_chunk = next_emit = 0
    while next_emit < len(chunks):
        while next_chunk < len(chunks) and min(load) < _IN_FLIGHT and not stop.is_set():
            a = load.index(min(load))
            ref = actors[a].run.remote(chunks[next_chunk], clips, workers)
            outstanding[ref] = (next_chunk, a)
            load[a] += 1
            next_chunk += 1
        ready, _ = ray.wait(list(outstanding), num_returns=1, timeout=0.2)
        for ref in ready:
            index, a = outstanding.pop(ref)
            load[a] -= 1
            try:
                done[index] = list(ray.get(ref))
            except ray.exceptions.RayError as exc:  # the actor (or its node) was lost
                reason = f"evaluation actor lost: {type(exc).__name__}"
                done[index] = [FileResult(item, error=reason) for item in chunks[index]]
        while next_emit in done:
            for result in done.pop(next_emit):
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if fail_fast and not result.ok:
                    return "fail-fast"
            next_emit += 1
        if stop.is_set() and next_emit < len(chunks):
            return "interrupted"
    return None


def evaluate_from_args(args: argparse.Namespace, items: Sequence[DatasetItem], threads: int,
                       topk: int, stop: threading.Event,
                       on_result: Callable[[FileResult], None]) -> Evaluation:
    """``streamclf evaluate --engine ray``: connect (``--address``), evaluate, disconnect."""
    from streamclf.cluster.connect import connect, disconnect

    classifier = {"model_name": args.model, "weights": args.weights, "classmap": args.classmap,
                  "topk": topk, "device": args.device, "backend": args.backend,
                  "precision": args.precision, "threads": threads}
    for key in ("weights", "classmap"):  # actors run elsewhere: make local paths absolute
        value = classifier[key]
        if value and os.path.exists(value):
            classifier[key] = os.path.abspath(value)
    with keep_handlers(signal.SIGTERM):  # ray.init sets its own; keep the caller's
        connection = connect(args.address)
    try:
        return evaluate_on_ray(classifier, items, threads=threads, workers=args.workers,
                               clips=args.clips, fail_fast=args.fail_fast, stop=stop,
                               on_result=on_result)
    finally:
        disconnect(connection)
