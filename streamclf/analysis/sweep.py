"""Threshold x smoothing sweep from one replay per video.

The replay keeps every window's raw probabilities (:class:`~streamclf.types.WindowScores`);
each cell smooths them offline with the live :class:`~streamclf.live.smoothing.Smoother`
(the same class, fed the same vectors in the same order, so a cell equal to the live
settings gives exactly the live run's ``label_start``/``label_end`` events), and is scored by
the one rule (:mod:`streamclf.analysis.detection`).

Recommendation: among the cells whose false alarms per hour are within the budget, the one
with the highest recall; ties go to the smaller median delay, then the higher threshold,
then the smaller smoothing window. None when no cell is within the budget.

Thread-safety: pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from streamclf.analysis.detection import LabelChange, VideoRun, build_report
from streamclf.analysis.segments import TruthSegment
from streamclf.live.smoothing import Smoother
from streamclf.types import WindowScores

__all__ = ["SMOOTHS", "THRESHOLDS", "offline_changes", "recommend", "sweep"]

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SMOOTHS = (1, 2, 4, 8)


def offline_changes(windows: Sequence[WindowScores], smooth: int, threshold: float,
                    start_after: int) -> tuple[LabelChange, ...]:
    """The label changes a live run with these settings publishes for ``windows`` (a file's,
    in media order): each update's changes at its window's ``media_ts``, and the end of a
    label still open after the last window (the live ``stopped``) at the last one's."""
    if not windows:
        return ()
    sm = Smoother(windows[0].labels, window=smooth, threshold=threshold,
                  start_after=start_after, topk=1)
    out: list[LabelChange] = []
    for w in windows:
        for change in sm.update(w.probs).changes:
            out.append(LabelChange(change.kind, change.label, round(w.media_ts, 3)))
    out += [LabelChange(c.kind, c.label, round(windows[-1].media_ts, 3)) for c in sm.reset()]
    return tuple(out)


def sweep(truth: Sequence[TruthSegment], videos: Mapping[str, tuple[Sequence[WindowScores],
                                                                    float]],
          grace: float, start_after: int) -> list[dict[str, Any]]:
    """Score every cell of :data:`THRESHOLDS` x :data:`SMOOTHS`.

    Args:
        truth: the labelled segments.
        videos: video name (as in ``truth``) -> (its windows in media order, its duration s).
        grace: seconds after a segment's end a start still detects it.
        start_after: the live setting (consecutive wins before a label starts).

    Returns:
        36 cells, each ``{"threshold", "smooth", **overall metrics}``.
    """
    cells = []
    for smooth in SMOOTHS:
        for threshold in THRESHOLDS:
            runs = [VideoRun(name, offline_changes(windows, smooth, threshold, start_after),
                             hours_s=duration)
                    for name, (windows, duration) in videos.items()]
            overall = build_report(truth, runs, grace)["overall"]
            cells.append({"threshold": threshold, "smooth": smooth, **overall})
    return cells


def _num(value: Any, missing: float) -> float:
    return missing if value is None or not math.isfinite(float(value)) else float(value)


def recommend(cells: Sequence[Mapping[str, Any]], fa_budget: float) -> dict[str, Any] | None:
    """The recommended cell (see module docstring), or None. A cell with no hours of video
    (``false_alarms_per_hour`` None) is within any budget only without false alarms."""
    within = [c for c in cells
              if (c["false_alarms_per_hour"] is not None
                  and c["false_alarms_per_hour"] <= fa_budget + 1e-12)
              or (c["false_alarms_per_hour"] is None and c["false_alarms"] == 0)]
    if not within:
        return None
    best = min(within, key=lambda c: (-_num(c["recall"], -1.0),
                                      _num(c["delay_median_s"], math.inf),
                                      -c["threshold"], c["smooth"]))
    return dict(best)
