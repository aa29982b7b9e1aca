"""``streamclf evaluate``: a labelled dataset in; recall@k, per-class recall and a report out
(JSON, markdown, and with ``--html`` a self-contained page with the confusion and recall plots).

Registered in :mod:`streamclf.cli.main` (``add_parser`` builds the sub-command, ``run`` is its
handler). Exit status: 0 when every file was classified and at least one counted in
the recall; 1 when a file failed (the report is still written, with the failures),
``--fail-fast`` stopped the run, nothing could be evaluated, or on a user error;
130 when interrupted (the partial report is still written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from streamclf.cli import checks
from streamclf.cli.common import Deprecated, ExitCode, add_data_argument, resolve_data
from streamclf.cli.flags import add_model_flags
from streamclf.errors import ConfigError
from streamclf.offline.datasets import DatasetItem, read_dataset
from streamclf.signals import stop_on_signals

if TYPE_CHECKING:
    from streamclf.analysis.html_report import HtmlReport
    from streamclf.offline.classify import ActionClassifier
    from streamclf.offline.evaluate import Evaluation, FileResult

__all__ = ["add_parser", "run"]

log = logging.getLogger("streamclf")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``sub`` (an ``add_subparsers()`` object)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="measure recall@k on a labelled dataset (CSV or class folders)",
        description="Classify every video of a labelled dataset and report recall@1/3/5 "
                    "(recall@1 = mean hit ratio), per-class recall, the most confused pairs, "
                    "videos/s and every file that failed.",
    )
    add_data_argument(p, "CSV with path,label columns (id optional; relative paths are "
                         "relative to the CSV) or a folder of class_name/video.ext")
    add_model_flags(p, helps={"topk": "labels kept per file in --predictions"})
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="decoding threads feeding the one model (default 2)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="inference threads (default: all cores but one)")
    p.add_argument("--num-clips", dest="clips", type=int, default=1, metavar="N",
                   help="clips per file, evenly spread, probabilities averaged (default 1)")
    p.add_argument("--clips", dest="clips", type=int, action=Deprecated, use="--num-clips N",
                   default=1)
    p.add_argument("--path-column", default=None,
                   help="CSV column of the video paths (default: path, file or video)")
    p.add_argument("--label-column", default=None,
                   help="CSV column of the labels (default: label or class)")
    p.add_argument("--report", default=None, metavar="JSON", help="write the JSON report here")
    p.add_argument("--markdown", default=None, metavar="MD",
                   help="also write the markdown report here")
    p.add_argument("--predictions", default=None, metavar="JSONL",
                   help="every file's top-k, one JSON object per line")
    p.add_argument("--html", default=None, metavar="HTML",
                   help="also write a self-contained HTML report here (summary, recall@k, "
                        "the most confused classes, per-class recall plots)")
    p.add_argument("--json", action="store_true",
                   help="print the JSON report on stdout instead of the markdown")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed file")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    from streamclf.cluster.evaluate import add_engine_options

    add_engine_options(p)  # --engine local|ray, --address
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before the dataset is read and the model loads."""
    resolve_data(args)
    for name in ("workers", "clips", "topk", "threads"):
        checks.check_min(f"--{name}", getattr(args, name), 1)
    for option in _OUTPUTS:
        target = getattr(args, option, None)
        if target:
            checks.check_output(f"--{option}", target, make_parents=False)
    checks.check_model(args.model, args.weights, args.classmap, args.device)


#: The options naming files that evaluate writes.
_OUTPUTS = ("report", "markdown", "predictions", "html")


def _check_html(path: str) -> None:
    """An existing, non-empty ``--html`` file is replaced only when it is an HTML page."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"--html {path}: cannot check it ({exc.strerror})") from None
    if head and not head.startswith((b"<!doctype html", b"<html")):
        raise ConfigError(f"--html {path} exists and is not an HTML page; refusing to "
                          "overwrite it")


def _check_outputs_apart(args: argparse.Namespace, items: Sequence[DatasetItem]) -> None:
    """No output is an input (the dataset file, a video, the weights, the class map) or
    another output; ``--html`` replaces only an HTML page. Runs once the dataset is read."""
    def key(path: object) -> str:
        return os.path.realpath(str(path))

    inputs = {key(it.path): f"the video {it.path} of the dataset" for it in items}
    for name in ("data", "weights", "classmap"):
        value = getattr(args, name, None)
        if value and os.path.isfile(str(value)):
            inputs[key(value)] = f"the {name} file"
    seen: dict[str, str] = {}
    for option in _OUTPUTS:
        target = getattr(args, option, None)
        if not target:
            continue
        if key(target) in inputs:
            raise ConfigError(f"--{option} {target} is {inputs[key(target)]}; refusing to "
                              "overwrite an input of the run")
        if key(target) in seen:
            raise ConfigError(f"--{option} {target} is also the --{seen[key(target)]} file; "
                              "give each its own file")
        seen[key(target)] = option
    if getattr(args, "html", None):
        _check_html(args.html)


def _prediction_line(result: FileResult, topk: int) -> str:
    obj: dict[str, Any] = {} if result.item.id is None else {"id": result.item.id}
    obj.update({"path": str(result.item.path), "label": result.item.label,
                "labels": list(result.labels[:topk]),
                "scores": [round(s, 6) for s in result.scores[:topk]]})
    return json.dumps(obj) + "\n"


def _open_output(path: str | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")  # closed by the caller
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Handle ``streamclf evaluate``; returns the exit status (see the module doc)."""
    _check_args(args)
    items = read_dataset(args.data, args.path_column, args.label_column)  # before the model
    _check_outputs_apart(args, items)
    from streamclf._lazy import require
    from streamclf.engine.runtime import default_inference_threads
    from streamclf.offline.classify import ActionClassifier
    from streamclf.offline.datasets import match_labels
    from streamclf.offline.evaluate import RECALL_AT, build_report, markdown_report
    from streamclf.progress import Progress

    threads = args.threads or default_inference_threads()
    require("torch").set_num_threads(threads)
    clf = ActionClassifier(
        args.model, args.weights, classmap=args.classmap, topk=max(args.topk, max(RECALL_AT)),
        device=args.device, backend=args.backend, precision=args.precision, threads=threads,
    )
    match = match_labels({it.label for it in items}, clf.labels)
    unmatched = [it for it in items if match[it.label] is None]
    if unmatched:
        log.warning("%d of %d videos have a label that matches no class of %s (e.g. %r); they "
                    "are predicted but not counted in the recall (see unmatched_labels)",
                    len(unmatched), len(items), clf.spec.name, unmatched[0].label)
    progress = Progress(len(items), None if args.quiet else sys.stderr, prefix="evaluate: ")
    predictions = _open_output(args.predictions)
    counts = {"done": 0, "failed": 0}

    def on_result(result: FileResult) -> None:
        counts["done"] += 1
        counts["failed"] += not result.ok
        if predictions is not None and result.ok:
            predictions.write(_prediction_line(result, args.topk))
            predictions.flush()
        progress.update(counts["done"], counts["failed"])

    try:
        with stop_on_signals() as stop:
            outcome = _evaluate(args, clf, items, threads, stop, on_result)
    finally:
        if predictions is not None:
            predictions.close()
        progress.close()
    report = build_report(
        outcome, items, clf.labels, model=clf.spec.name, weights=str(args.weights),
        backend=clf.backend.name, device=clf.model.device, data=str(args.data),
        num_classes=len(clf.labels), topk=args.topk, clips=args.clips, workers=args.workers,
        threads=threads,
    )
    markdown = markdown_report(report)
    if args.report:
        _write(args.report, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, markdown)
    if getattr(args, "html", None):
        from streamclf.offline.evaluate import confusion_matrix

        _html_report(report, *confusion_matrix(outcome, items, clf.labels)).write(args.html)
    print(json.dumps(report, indent=2) if args.json else markdown, end="\n" if args.json else "",
          flush=True)
    return _status(report)


def _evaluate(args: argparse.Namespace, clf: ActionClassifier, items: Sequence[DatasetItem],
              threads: int, stop: threading.Event,
              on_result: Callable[[FileResult], None]) -> Evaluation:
    if args.engine == "ray":  # the same classification, on a pool of Ray actors
        from streamclf.cluster.evaluate import evaluate_from_args

        return evaluate_from_args(args, items, threads, clf.topk, stop, on_result)
    from streamclf.offline.evaluate import evaluate

    return evaluate(clf, items, workers=args.workers, clips=args.clips,
                    fail_fast=args.fail_fast, stop=stop, on_result=on_result)


def _html_report(report: dict[str, Any], names: list[str], matrix: Any) -> HtmlReport:
    """The ``--html`` page: ``report`` (:func:`~streamclf.offline.evaluate.build_report`)
    and the (K, K) top-1 confusion counts over the K class ``names`` that occur."""
    from streamclf.analysis.html_report import HtmlReport
    from streamclf.analysis.plots import confusion_png, recall_bars_png
    from streamclf.offline.evaluate import RECALL_AT

    page = HtmlReport(f"Evaluation: {report.get('model', '?')} ({report.get('weights', '?')})")
    meta = [(k, report[k]) for k in ("model", "weights", "backend", "device", "data")
            if k in report]
    page.heading("Summary").table([*meta, *[
        ("videos in the dataset", report["videos"]), ("predicted", report["predicted"]),
        ("evaluated (label matches a class)", report["evaluated"]),
        ("failed", len(report["failed"])), ("videos/s", f"{report['videos_per_s']:.2f}"),
        *[(f"recall@{k}", f"{report[f'recall@{k}']:.4f}") for k in RECALL_AT],
        *([("stopped early", report["stopped"])] if report["stopped"] else []),
    ]], header=("metric", "value"))
    evaluated = report["evaluated"]
    page.heading("Recall@k").table(
        [(f"recall@{k}", f"{report[f'recall@{k}']:.4f}",
          round(report[f"recall@{k}"] * evaluated), evaluated) for k in RECALL_AT],
        header=("k", "recall", "true class in the top k", "videos evaluated"))
    page.heading("Most confused classes").image(
        confusion_png(matrix, names), alt="confusion matrix of the most confused classes",
        caption="Counts of videos by true class (rows) and top-1 prediction (columns); "
                "colours: share of the true class's videos.")
    if report["confused"]:
        page.table(report["confused"], caption="most frequent confusions")
    per_class = report["per_class"]
    page.heading("Recall per class").image(
        recall_bars_png({name: c["recall"] for name, c in per_class.items()}),
        alt="per-class recall@1, worst first")
    page.table([{"class": name, "recall@1": f"{c['recall']:.4f}", "hits": c["hits"],
                 "videos": c["count"]} for name, c in per_class.items()])
    if report["failed"]:
        page.heading("Failed files").table(
            [{"path": f["path"], "error": f["error"]} for f in report["failed"]])
    if report["unmatched_labels"]:
        page.heading("Labels matching no class (not in the recall)").table(
            [{"label": u["label"], "videos": u["count"]} for u in report["unmatched_labels"]])
    return page


def _status(report: dict[str, Any]) -> int:
    if report["stopped"] == "interrupted":
        print("streamclf: interrupted (the report covers the files done so far)",
              file=sys.stderr, flush=True)
        return ExitCode.INTERRUPTED
    failed = report["failed"]
    if report["stopped"] == "fail-fast":
        first = failed[-1]
        message = f"stopped at the first failed file (--fail-fast): {first['error']}"
    elif failed:
        message = f"{len(failed)} of {report['videos']} files failed (listed in the report)"
    elif report["evaluated"] == 0:
        message = (f"no video could be evaluated: no dataset label matches a class of "
                   f"{report['model']} (see unmatched_labels; --classmap sets the class names)")
    else:
        return ExitCode.OK
    print(f"streamclf: error: {message}", file=sys.stderr, flush=True)
    return ExitCode.ERROR
