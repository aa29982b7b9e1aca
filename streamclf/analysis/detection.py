"""The detection scoring rule: a run's stable-label changes against labelled segments.

Pure functions over simple inputs (no I/O), shared by ``streamclf score-events`` (which
reads an event log), ``evaluate-stream`` (which replays files) and the threshold sweep
(which scores many cells: :func:`score_runs` sorts once and sweeps, ``O(n log n)``).

The rule, exactly (``grace`` >= 0 seconds; every time is a ``media_ts``, in seconds
from the video's first frame):

* A segment ``(video, s, e, c)`` is **detected** when a ``label_start`` of ``c`` on that
  video has ``s <= media_ts <= e + grace`` (its *extended window*), or when ``c`` is
  already the stable label at ``s``. Its **delay** is ``media_ts - s`` of the first such
  start, or 0 when ``c`` was stable at ``s``.
* ``c`` is **stable at s** when a ``label_start`` of ``c`` has ``media_ts < s`` and the
  next change after it in log order (a ``label_end`` of ``c``, or a ``label_start`` of
  any label: a new start ends the old label) has ``media_ts > s``, or there is none. A
  ``label_end`` exactly at ``s`` means *not* stable at ``s`` (the label is gone at ``s``);
  a ``label_start`` exactly at ``s`` is a detection by the first point, delay 0.
  A change whose ``media_ts`` is earlier than the one before it starts a new timeline (a
  second run of the same video appended to the log): the label stable then stays stable
  to the end of the video, like a label never ended at the end of the log.
* Each video's ``label_start`` events are taken in ``media_ts`` order (ties: log order).
  A start of ``c`` in no extended window of a segment of ``c`` on its video is a **false
  alarm** -- this includes a start *before* ``s`` that keeps ``c`` stable into the
  segment: the segment is detected (delay 0) and that early start is still a false alarm.
  A start in the window of at least one segment not yet detected is a **detecting
  start**: it detects every such segment (two overlapping segments of ``c`` at once). A
  start whose windows hold only segments already detected is a **repeat**, counted apart.
* ``precision = detecting starts / (detecting starts + false alarms)``;
  ``false_alarms_per_hour = false alarms / hours``, hours being the summed ``hours_s``
  of the scored videos / 3600. Delay percentiles use numpy's default (linear).
* The upper bound ``e + grace`` is compared with a 1e-9 s tolerance (logs round
  ``media_ts`` to milliseconds, and ``10.1 + 0.2`` is ``10.299999999999999``).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streamclf.analysis.segments import TruthSegment
from streamclf.errors import ConfigError, DataError

__all__ = ["METRIC_KEYS", "REPORT_KEYS", "LabelChange", "Scoring", "SegmentResult",
           "StartResult", "VideoRun", "build_report", "report_from_scoring", "score_runs"]

ChangeKind = Literal["label_start", "label_end"]
StartOutcome = Literal["detecting", "false_alarm", "repeat"]

#: The keys of ``overall`` and of each ``per_class`` entry, in order.
METRIC_KEYS = ("segments", "detected", "recall", "delay_median_s", "delay_p90_s",
               "delay_max_s", "false_alarms", "false_alarms_per_hour", "repeats", "precision")
#: The top-level keys of :func:`build_report` (plus any extra ``meta`` key), in order.
REPORT_KEYS = ("model", "weights", "smooth", "threshold", "grace", "videos", "hours",
               "missing_videos", "overall", "per_class", "delays", "segments_detail")
_META = ("model", "weights", "smooth", "threshold")
#: Tolerance on the ``e + grace`` bound (seconds).
_EPS = 1e-9


@dataclass(frozen=True)
class LabelChange:
    """A stable-label change of a run: ``kind`` (``label_start``/``label_end``) of
    ``label`` at ``media_ts`` (seconds in the video's timeline)."""

    kind: ChangeKind
    label: str
    media_ts: float


@dataclass(frozen=True)
class VideoRun:
    """One scored video: its name (as in the truth), its changes in log order, and its
    duration in seconds (``hours_s``; summed over videos for the false alarms per hour)."""

    video: str
    changes: tuple[LabelChange, ...]
    hours_s: float


@dataclass(frozen=True)
class SegmentResult:
    """A scored truth segment: detected or not, and its delay (None when missed)."""

    video: str
    label: str
    start_s: float
    end_s: float
    detected: bool
    delay_s: float | None


@dataclass(frozen=True)
class StartResult:
    """A ``label_start`` as scored: ``detecting``, ``false_alarm`` or ``repeat``."""

    video: str
    label: str
    media_ts: float
    outcome: StartOutcome


@dataclass(frozen=True)
class Scoring:
    """What :func:`score_runs` found.

    Attributes:
        segments: the truth segments of the scored videos, in truth order.
        starts: every ``label_start``, by video (run order), then ``media_ts``.
        videos: the scored videos, in run order.
        hours_s: their summed duration (seconds).
        grace: the grace used (seconds).
        missing_videos: truth videos with no run (sorted); their segments are not scored.
        labels: every class of the truth or of a start (sorted).
    """

    segments: tuple[SegmentResult, ...]
    starts: tuple[StartResult, ...]
    videos: tuple[str, ...]
    hours_s: float
    grace: float
    missing_videos: tuple[str, ...]
    labels: tuple[str, ...]


def _check_grace(grace: float) -> float:
    try:
        value = float(grace)
    except (TypeError, ValueError):
        raise ConfigError(f"grace must be a number >= 0, got {grace!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"grace must be a finite number >= 0, got {grace!r}")
    return value


def _check_run(run: VideoRun) -> None:
    if not (isinstance(run.hours_s, (int, float)) and math.isfinite(run.hours_s)
            and run.hours_s >= 0):
        raise DataError(f"video {run.video}: duration must be a finite number >= 0 seconds, "
                        f"got {run.hours_s!r}")
    for ch in run.changes:
        if ch.kind not in ("label_start", "label_end"):
            raise DataError(f"video {run.video}: unknown label change {ch.kind!r}")
        if not (isinstance(ch.media_ts, (int, float)) and math.isfinite(ch.media_ts)):
            raise DataError(f"video {run.video}: {ch.kind} of {ch.label!r} has no finite "
                            f"media_ts ({ch.media_ts!r})")


def _stable_intervals(changes: Sequence[LabelChange]) -> dict[str, list[tuple[float, float]]]:
    """Per label, the ``(from, to)`` media times it was the stable label (``to`` may be
    inf), from the changes in log order (see the module doc)."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    open_label: str | None = None
    open_t = prev = 0.0
    for i, ch in enumerate(changes):
        t = float(ch.media_ts)
        if i and t < prev and open_label is not None:  # a new timeline: a second run
            out[open_label].append((open_t, math.inf))
            open_label = None
        prev = t
        if ch.kind == "label_start":
            if open_label is not None:
                out[open_label].append((open_t, t))
            open_label, open_t = ch.label, t
        elif ch.label == open_label:
            out[open_label].append((open_t, t))
            open_label = None
    if open_label is not None:
        out[open_label].append((open_t, math.inf))
    return out


class _Stable:
    """Answers "is the label stable at s" for one label's intervals in ``O(log n)``."""

    def __init__(self, intervals: Iterable[tuple[float, float]]) -> None:
        ordered = sorted(intervals)
        self.starts = [a for a, _ in ordered]
        self.reach: list[float] = []  # prefix max of the ends
        best = -math.inf
        for _, b in ordered:
            best = max(best, b)
            self.reach.append(best)

    def at(self, s: float) -> bool:
        n = bisect_left(self.starts, s)  # intervals that began strictly before s
        return n > 0 and self.reach[n - 1] > s


def _score_label(segs: list[int], truth: Sequence[TruthSegment], starts: list[float],
                 stable: _Stable | None, grace: float, delays: list[float | None]
                 ) -> list[StartOutcome]:
    """Score one (video, label): fill ``delays`` of the segments ``segs`` (indices into
    ``truth``, sorted by start) and return each start's outcome (``starts`` sorted)."""
    for k in segs:
        if stable is not None and stable.at(truth[k].start_s):
            delays[k] = 0.0
    outcomes: list[StartOutcome] = []
    heap: list[tuple[float, int]] = []  # (end of the extended window, segment)
    pending: set[int] = set()  # in the window now and not yet detected
    j = 0
    for t in starts:
        while j < len(segs) and truth[segs[j]].start_s <= t:
            k = segs[j]
            heapq.heappush(heap, (truth[k].end_s + grace + _EPS, k))
            if delays[k] is None:
                pending.add(k)
            j += 1
        while heap and heap[0][0] < t:
            pending.discard(heapq.heappop(heap)[1])
        if pending:
            for k in pending:
                delays[k] = t - truth[k].start_s
            pending.clear()
            outcomes.append("detecting")
        else:
            outcomes.append("repeat" if heap else "false_alarm")
    return outcomes


def score_runs(truth: Sequence[TruthSegment], runs: Sequence[VideoRun],
               grace: float) -> Scoring:
    """Score ``runs`` against ``truth`` by the rule of the module doc.

    Only the segments of videos that have a run are scored; the other truth videos are
    listed in ``missing_videos``. A run of a video with no truth rows is scored too
    (every start there is a false alarm).

    Raises:
        ConfigError: ``grace`` is not a finite number >= 0.
        DataError: two runs name the same video; a run's ``hours_s`` is not a finite
            number >= 0; a change has an unknown kind or a non-finite ``media_ts``.
    """
    grace = _check_grace(grace)
    by_video: dict[str, VideoRun] = {}
    for run in runs:
        if run.video in by_video:
            raise DataError(f"two runs of the same video {run.video!r}")
        _check_run(run)
        by_video[run.video] = run
    segs_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    truth_labels: dict[str, set[str]] = defaultdict(set)
    for i, seg in enumerate(truth):
        if seg.video in by_video:
            segs_of[(seg.video, seg.label)].append(i)
            truth_labels[seg.video].add(seg.label)
    delays: list[float | None] = [None] * len(truth)
    starts_out: list[StartResult] = []
    for run in runs:
        stable = {c: _Stable(iv) for c, iv in _stable_intervals(run.changes).items()}
        starts: dict[str, list[float]] = defaultdict(list)
        for ch in sorted((c for c in run.changes if c.kind == "label_start"),
                         key=lambda c: c.media_ts):
            starts[ch.label].append(float(ch.media_ts))
        run_starts: list[StartResult] = []
        for label in sorted(set(starts) | truth_labels[run.video]):
            segs = sorted(segs_of.get((run.video, label), ()), key=lambda k: truth[k].start_s)
            times = starts.get(label, [])
            outcomes = _score_label(segs, truth, times, stable.get(label), grace, delays)
            run_starts += [StartResult(run.video, label, t, o)
                           for t, o in zip(times, outcomes, strict=True)]
        run_starts.sort(key=lambda r: r.media_ts)
        starts_out += run_starts
    results = tuple(
        SegmentResult(seg.video, seg.label, seg.start_s, seg.end_s, delays[i] is not None,
                      delays[i])
        for i, seg in enumerate(truth) if seg.video in by_video)
    missing = tuple(sorted({seg.video for seg in truth} - set(by_video)))
    labels = tuple(sorted({seg.label for seg in truth} | {s.label for s in starts_out}))
    return Scoring(results, tuple(starts_out), tuple(by_video),
                   float(sum(r.hours_s for r in runs)), grace, missing, labels)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _metrics(segments: Sequence[SegmentResult], starts: Sequence[StartResult],
             hours: float) -> dict[str, Any]:
    delays = [s.delay_s for s in segments if s.delay_s is not None]
    outcomes = [s.outcome for s in starts]
    detecting, false_alarms = outcomes.count("detecting"), outcomes.count("false_alarm")
    arr = np.asarray(delays, dtype=np.float64)
    return {
        "segments": len(segments),
        "detected": len(delays),
        "recall": _r(len(delays) / len(segments)) if segments else None,
        "delay_median_s": _r(float(np.percentile(arr, 50))) if delays else None,
        "delay_p90_s": _r(float(np.percentile(arr, 90))) if delays else None,
        "delay_max_s": _r(max(delays)) if delays else None,
        "false_alarms": false_alarms,
        "false_alarms_per_hour": _r(false_alarms / hours) if hours > 0 else None,
        "repeats": outcomes.count("repeat"),
        "precision": (_r(detecting / (detecting + false_alarms))
                      if detecting + false_alarms else None),
    }


def report_from_scoring(scoring: Scoring, **meta: Any) -> dict[str, Any]:
    """The JSON-able report of ``scoring`` (keys: :data:`REPORT_KEYS`, then any extra
    ``meta`` key). ``meta``'s ``model``, ``weights``, ``smooth`` and ``threshold`` are
    copied to the top level (None when absent); other ``meta`` keys are added after.

    ``overall`` and each ``per_class`` entry have the keys :data:`METRIC_KEYS`; floats
    are rounded to 6 decimals. ``delays`` lists the detected segments' delays (in
    ``segments_detail`` order), for a histogram.

    Raises:
        ConfigError: a ``meta`` key is one of the computed keys (``overall``, ...).
    """
    clash = sorted(set(meta) & (set(REPORT_KEYS) - set(_META)))
    if clash:
        raise ConfigError(f"report meta key(s) {', '.join(clash)} are computed; rename them")
    hours = scoring.hours_s / 3600.0
    seg_by: dict[str, list[SegmentResult]] = defaultdict(list)
    start_by: dict[str, list[StartResult]] = defaultdict(list)
    for seg in scoring.segments:
        seg_by[seg.label].append(seg)
    for start in scoring.starts:
        start_by[start.label].append(start)
    report: dict[str, Any] = {key: meta.get(key) for key in _META}
    report.update({
        "grace": scoring.grace,
        "videos": len(scoring.videos),
        "hours": _r(hours),
        "missing_videos": list(scoring.missing_videos),
        "overall": _metrics(scoring.segments, scoring.starts, hours),
        "per_class": {c: _metrics(seg_by[c], start_by[c], hours) for c in scoring.labels},
        "delays": [_r(s.delay_s) for s in scoring.segments if s.delay_s is not None],
        "segments_detail": [
            {"video": s.video, "label": s.label, "start_s": s.start_s, "end_s": s.end_s,
             "detected": s.detected, "delay_s": _r(s.delay_s)}
            for s in scoring.segments],
    })
    report.update({k: v for k, v in meta.items() if k not in _META})
    return report


def build_report(truth: Sequence[TruthSegment], runs: Sequence[VideoRun], grace: float,
                 **meta: Any) -> dict[str, Any]:
    """:func:`score_runs` then :func:`report_from_scoring`: the JSON-able report.

    Example::

        runs = [VideoRun("a.mp4", (LabelChange("label_start", "run", 3.2),), hours_s=60.0)]
        build_report([TruthSegment("a.mp4", 3.0, 9.0, "run")], runs, grace=2.0, model="x3d_xs")
        # -> {"model": "x3d_xs", ..., "overall": {"segments": 1, "detected": 1, ...}, ...}

    Raises:
        ConfigError, DataError: as :func:`score_runs` and :func:`report_from_scoring`.
    """
    return report_from_scoring(score_runs(truth, runs, grace), **meta)
