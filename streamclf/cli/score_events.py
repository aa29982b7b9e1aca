"""``streamclf score-events``: score a run's event log against labelled segments.

``streamclf score-events EVENTS.jsonl SEGMENTS.csv [--grace 2.0] [--report R.json]``
reads the stable-label changes of the JSON Lines event log (``run --events``), matches
each stream to a video of the segments CSV (``video,start_s,end_s,label``) and scores
them by the detection rule (:mod:`streamclf.analysis.detection`): recall, detection
delay, false alarms per hour, precision, overall and per class.

Exit status: 0 when scored (a log with no label event scores every segment missed); 1
for a missing, unreadable or corrupt log or CSV, two streams on one video, or a report
that cannot be written (one line on stderr); 2 for a bad command line (``--grace -1``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from streamclf.cli.common import ExitCode, with_default
from streamclf.errors import ConfigError, DataError
from streamclf.files import write_atomic

__all__ = ["add_parser", "run"]

log = logging.getLogger("streamclf")

#: The default grace (seconds after a segment's end a start still detects it).
DEFAULT_GRACE = 2.0


def non_negative(text: str) -> float:
    """``--grace``: a finite number of seconds >= 0 (else a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``score-events`` sub-command to ``sub`` (an ``add_subparsers()`` object)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "score-events", help="score a run's event log against labelled segments (recall, "
                             "delay, false alarms/hour, precision)",
        description="Match each stream of an event log to a video of a segments CSV and "
                    "score its label_start events: a segment is detected by a start of its "
                    "label between its start and its end + grace (or by its label already "
                    "stable at its start); a start in no such window is a false alarm.",
    )
    p.add_argument("events", metavar="EVENTS",
                   help="the JSON Lines event log of a run (run --events EVENTS)")
    p.add_argument("segments", metavar="SEGMENTS",
                   help="CSV of the true segments, columns video,start_s,end_s,label "
                        "(times in seconds of the video's own timeline)")
    p.add_argument("--grace", type=non_negative, default=DEFAULT_GRACE, metavar="S",
                   help=with_default("seconds after a segment's end that a start still "
                                     "detects it", DEFAULT_GRACE))
    p.add_argument("--rotated", action="store_true",
                   help="also read the rotated files EVENTS.N ... EVENTS.1 first (oldest "
                        "first)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="write the JSON report here (replaced atomically)")
    p.add_argument("--json", action="store_true",
                   help="print the JSON report on stdout instead of the summary")
    return p


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` atomically (a temporary file in the same
    folder, then ``os.replace``).

    Raises:
        ConfigError: the file cannot be written.
    """
    write_atomic(path, json.dumps(report, indent=2) + "\n")


def _fmt(value: float | None, unit: str = "", pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.2f}{unit}"


def summary(report: dict[str, Any]) -> str:
    """The human summary of a report: the overall figures one per line, then a table of
    the classes."""
    o = report["overall"]
    lines = [
        f"videos: {report['videos']} ({report['hours']:.3f} h), grace {report['grace']:g} s",
        f"segments: {o['segments']}",
        f"detected: {o['detected']}",
        f"recall: {_fmt(o['recall'], pct=True)}",
        f"delay median: {_fmt(o['delay_median_s'], ' s')}",
        f"delay p90: {_fmt(o['delay_p90_s'], ' s')}",
        f"false alarms/hour: {_fmt(o['false_alarms_per_hour'])} ({o['false_alarms']} false "
        f"alarms, {o['repeats']} repeats)",
        f"precision: {_fmt(o['precision'], pct=True)}",
    ]
    per_class = report["per_class"]
    if per_class:
        width = max(5, *(len(c) for c in per_class))
        lines += ["", f"{'class':<{width}}  {'segs':>5}  {'det':>5}  {'recall':>7}  "
                      f"{'median':>8}  {'FA':>5}  {'prec':>7}"]
        for label, m in per_class.items():
            lines.append(f"{label:<{width}}  {m['segments']:>5}  {m['detected']:>5}  "
                         f"{_fmt(m['recall'], pct=True):>7}  "
                         f"{_fmt(m['delay_median_s'], ' s'):>8}  {m['false_alarms']:>5}  "
                         f"{_fmt(m['precision'], pct=True):>7}")
    return "\n".join(lines) + "\n"


def _read_log(path: str, rotated: bool) -> list[dict[str, Any]]:
    from streamclf.live.events import read_events
    from streamclf.paths import input_file_problem

    problem = input_file_problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return read_events(path, rotated=rotated)


def run(args: argparse.Namespace) -> int:
    """Handle ``streamclf score-events``; returns the exit status (see the module doc)."""
    from streamclf.analysis.detection import build_report
    from streamclf.analysis.event_runs import runs_from_events
    from streamclf.analysis.segments import read_segments
    from streamclf.cli.checks import check_output

    if args.report:
        check_output("--report", args.report, make_parents=False)
        for given in (args.events, args.segments):
            if os.path.exists(given) and os.path.exists(args.report) \
                    and os.path.samefile(given, args.report):
                raise ConfigError(f"--report {args.report} is an input file; give another name")
    truth = read_segments(args.segments)
    records = _read_log(args.events, args.rotated)
    runs, missing, unscored = runs_from_events(records, truth)
    if unscored:
        log.warning("%d label event(s) have no media_ts (a log of an older version?) and "
                    "are not scored (see unscored_events)", unscored)
    if missing:
        log.warning("%d of %d truth videos are not in the log (e.g. %s); their segments are "
                    "not scored (see missing_videos)", len(missing),
                    len({s.video for s in truth}), missing[0])
    report = build_report(truth, runs, args.grace, events=str(args.events),
                          segments_file=str(args.segments), unscored_events=unscored)
    if args.report:
        write_report(args.report, report)
    out = json.dumps(report, indent=2) + "\n" if args.json else summary(report)
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return ExitCode.OK
