"""Dataset evaluation: N decoding threads feed one model; recall@k, per-class recall, confusions.

Like towhee's ``set_parallel(N)`` on a decode operator: decoding (OpenCV/FFmpeg release
the GIL while they decode and resize) runs on ``workers`` threads, a few files ahead,
while the caller's thread runs the model on the decoded clips one file at a time, in
dataset order. Each file is classified exactly as ``ActionClassifier.classify_file``
does it, so the predictions do not depend on ``workers``.

Example::

    clf = ActionClassifier("x3d_xs", weights="kinetics400", topk=5)
    items = read_dataset("videos.csv")
    run = evaluate(clf, items, workers=2)
    report = build_report(run, items, clf.labels, model="x3d_xs", weights="kinetics400")
    print(report["recall@1"], markdown_report(report))

A file that cannot be decoded or classified is recorded as failed with its reason and
the run goes on (``fail_fast=True`` stops at the first one instead).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamclf.errors import ConfigError, DataError, StreamclfError
from streamclf.offline.datasets import DatasetItem, match_labels
from streamclf.paths import input_file_problem

if TYPE_CHECKING:
    import numpy as np

    from streamclf.offline.classify import ActionClassifier

__all__ = [
    "RECALL_AT",
    "Evaluation",
    "FileResult",
    "build_report",
    "confusion_matrix",
    "evaluate",
    "markdown_report",
]

log = logging.getLogger(__name__)

#: The k of the recall@k figures in a report.
RECALL_AT = (1, 3, 5)
#: How many (true, predicted) pairs a report lists, most frequent first.
MAX_CONFUSED = 20
#: Seconds between checks of the stop event while waiting for a decoded file.
_POLL_S = 0.2


@dataclass(frozen=True)
class FileResult:
    """The outcome for one dataset item: its top-k, or why it failed.

    ``labels``/``scores``: the classifier's top-k (high to low), empty when failed.
    """

    item: DatasetItem
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` did.

    Attributes:
        results: one per processed item, in dataset order (all items unless stopped).
        elapsed_s: wall time from the first decode to the last result.
        stopped: ``None`` when every item was processed, else ``"fail-fast"`` or
            ``"interrupted"``.
    """

    results: tuple[FileResult, ...]
    elapsed_s: float
    stopped: str | None = None

    @property
    def videos_per_s(self) -> float:
        return len(self.results) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StreamclfError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _decode(
    clf: ActionClassifier, item: DatasetItem, clips: int, halt: threading.Event
) -> list[np.ndarray] | None:
    """Runs on a decode thread; ``None`` when the evaluation stopped before it began."""
    if halt.is_set():
        return None
    problem = input_file_problem(item.path)  # a FIFO would block the decoder forever
    if problem:
        raise DataError(f"{item.path} {problem}" if problem != "file not found" else
                        f"{item.path}: file not found")
    return clf.decode_file(item.path, clips=clips)


def _await(future: Future[Any], stop: threading.Event) -> bool:
    """Wait for ``future``; ``False`` if ``stop`` was set first."""
    while not wait([future], timeout=_POLL_S).done:
        if stop.is_set():
            return False
    return True


def _classify(clf: ActionClassifier, item: DatasetItem, future: Future[Any]) -> FileResult:
    exc = future.exception()
    if exc is None:
        try:
            result = clf.classify_clips(future.result())
            return FileResult(item, tuple(result.labels), tuple(result.scores))
        except Exception as err:  # exception-safe: one bad file must not end the run
            exc = err
    log.debug("%s failed", item.path, exc_info=exc)
    return FileResult(item, error=_reason(exc))


def evaluate(
    clf: ActionClassifier,
    items: Sequence[DatasetItem],
    workers: int = 2,
    clips: int = 1,
    fail_fast: bool = False,
    stop: threading.Event | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> Evaluation:
    """Classify every item: ``workers`` threads decode, the calling thread infers.

    Args:
        clf: the classifier; its model runs on the calling thread only.
        workers: decoding threads (>= 1); at most ``2 * workers`` files are decoded ahead.
        clips: clips per file, as in :meth:`ActionClassifier.classify_file`.
        fail_fast: stop at the first failed file (it is still in the results).
        stop: set from another thread (e.g. a signal handler) to stop early; checked
            every 0.2 s.
        on_result: called on the calling thread with each result, in dataset order.

    Returns:
        the results in dataset order, the elapsed time, and why it stopped early if it did.

    Raises:
        ConfigError: ``workers`` below 1 (a bad ``clips`` fails each file instead).
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    stop = stop or threading.Event()
    halt = threading.Event()  # tells queued decodes to skip once the run is over
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="streamclf-decode")
    pending: deque[tuple[DatasetItem, Future[Any]]] = deque()
    todo = iter(items)
    results: list[FileResult] = []
    stopped: str | None = None
    start = time.monotonic()

    def submit_next() -> None:
        item = next(todo, None)
        if item is not None:
            pending.append((item, pool.submit(_decode, clf, item, clips, halt)))

    try:
        for _ in range(2 * workers):
            submit_next()
        while pending:
            item, future = pending.popleft()
            if not _await(future, stop):
                stopped = "interrupted"
                break
            result = _classify(clf, item, future)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if fail_fast and not result.ok:
                stopped = "fail-fast"
                break
            if stop.is_set():
                stopped = "interrupted" if pending else None
                break
            submit_next()
    finally:
        halt.set()
        # Files being decoded finish on their own (one file each); queued ones are dropped.
        pool.shutdown(wait=False, cancel_futures=True)
    return Evaluation(tuple(results), time.monotonic() - start, stopped)


def _recall(hits: int, count: int) -> float:
    return hits / count if count else 0.0


def build_report(
    run: Evaluation,
    items: Sequence[DatasetItem],
    classes: Sequence[str],
    **meta: Any,
) -> dict[str, Any]:
    """The evaluation report as a JSON-ready dict.

    Only files that were predicted and whose label matches a class (see
    :func:`streamclf.offline.datasets.match_labels`) count in the recall figures; files whose
    label matches no class are still predicted and are listed in ``unmatched_labels``.

    Args:
        run: what :func:`evaluate` returned for ``items``.
        classes: the model's class names (``clf.labels``).
        meta: extra top-level keys (``model``, ``weights``, ``backend``, ``topk``, ...),
            placed first.

    Returns:
        ``recall@1/3/5`` (floats in [0, 1], 0.0 when nothing was evaluated),
        ``per_class`` (class -> ``recall`` (top-1), ``hits``, ``count``), ``confused``
        (``true``, ``predicted``, ``count``; most frequent first), ``failed`` (``path``,
        ``label``, ``error``, and ``id`` when the dataset has ids), ``unmatched_labels``
        (``label``, ``count``, ``paths``), counts and ``videos_per_s``.
    """
    match = match_labels({it.label for it in items}, classes)
    scored = [(r, match[r.item.label]) for r in run.results if r.ok and match[r.item.label]]
    per_class: dict[str, dict[str, Any]] = {}
    confused: Counter[tuple[str, str]] = Counter()
    for result, truth in scored:
        entry = per_class.setdefault(str(truth), {"recall": 0.0, "hits": 0, "count": 0})
        entry["count"] += 1
        if result.labels[0] == truth:
            entry["hits"] += 1
        else:
            confused[(str(truth), result.labels[0])] += 1
    for entry in per_class.values():
        entry["recall"] = _recall(entry["hits"], entry["count"])
    unmatched: dict[str, list[str]] = {}
    for it in items:
        if match[it.label] is None:
            unmatched.setdefault(it.label, []).append(str(it.path))
    report: dict[str, Any] = dict(meta)
    report.update({
        "videos": len(items),
        "processed": len(run.results),
        "predicted": sum(r.ok for r in run.results),
        "evaluated": len(scored),
        "complete": run.stopped is None,
        "stopped": run.stopped,
    })
    for k in RECALL_AT:
        report[f"recall@{k}"] = _recall(sum(t in r.labels[:k] for r, t in scored), len(scored))
    report["per_class"] = {name: per_class[name] for name in sorted(per_class)}
    report["confused"] = [
        {"true": t, "predicted": p, "count": n}
        for (t, p), n in sorted(confused.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CONFUSED]
    ]
    report["failed"] = [_failure(r) for r in run.results if not r.ok]
    report["unmatched_labels"] = [
        {"label": label, "count": len(paths), "paths": paths}
        for label, paths in sorted(unmatched.items())
    ]
    report["videos_per_s"] = round(run.videos_per_s, 3)
    report["elapsed_s"] = round(run.elapsed_s, 3)
    return report


def confusion_matrix(
    run: Evaluation, items: Sequence[DatasetItem], classes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Top-1 confusion counts over the files counted in the recall (as :func:`build_report`).

    Only the classes that occur, as a true label or a top-1 prediction, get a row and a
    column (a few of Kinetics' 400 on a small set), in the model's class order.

    Returns:
        the K class names, and a (K, K) int64 array: ``[i, j]`` = files of class ``i``
        predicted as ``j`` (the diagonal: the hits).
    """
    import numpy as np

    match = match_labels({it.label for it in items}, classes)
    pairs = [(str(match[r.item.label]), r.labels[0]) for r in run.results
             if r.ok and r.labels and match[r.item.label]]
    order = {name: i for i, name in enumerate(classes)}
    names = sorted({n for pair in pairs for n in pair}, key=lambda n: (order.get(n, len(order)), n))
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for truth, predicted in pairs:
        matrix[index[truth], index[predicted]] += 1
    return names, matrix


def _failure(result: FileResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(result.item.path), "label": result.item.label,
                             "error": result.error}
    if result.item.id is not None:
        entry["id"] = result.item.id
    return entry


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The report as markdown tables: summary, per class, confusions, failures, unmatched."""
    title = f"## Evaluation: {report.get('model', '?')} ({report.get('weights', '?')})"
    summary = [
        ("videos in the dataset", report["videos"]),
        ("predicted", report["predicted"]),
        ("evaluated (label matches a class)", report["evaluated"]),
        ("failed", len(report["failed"])),
        ("label matches no class", sum(u["count"] for u in report["unmatched_labels"])),
    ]
    summary += [(f"recall@{k}" + (" (mean hit ratio)" if k == 1 else ""),
                 f"{report[f'recall@{k}']:.4f}") for k in RECALL_AT]
    summary.append(("videos/s", f"{report['videos_per_s']:.2f}"))
    if report["stopped"]:
        summary.append(("stopped early", report["stopped"]))
    lines = [title, "", *_table(["metric", "value"], summary)]
    if report["per_class"]:
        rows: list[tuple[object, ...]] = [(name, f"{c['recall']:.4f}", c["hits"], c["count"])
                                          for name, c in report["per_class"].items()]
        lines += ["", "### Per class", "", *_table(["class", "recall@1", "hits", "videos"], rows)]
    if report["confused"]:
        rows = [(c["true"], c["predicted"], c["count"]) for c in report["confused"]]
        lines += ["", "### Most confused", "", *_table(["true", "predicted", "videos"], rows)]
    if report["failed"]:
        rows = [(f["path"], f["error"].removeprefix(f"{f['path']}: ")) for f in report["failed"]]
        lines += ["", "### Failed", "", *_table(["path", "error"], rows)]
    if report["unmatched_labels"]:
        rows = [(u["label"], u["count"]) for u in report["unmatched_labels"]]
        lines += ["", "### Labels matching no class (not in recall)", "",
                  *_table(["label", "videos"], rows)]
    return "\n".join(lines) + "\n"
