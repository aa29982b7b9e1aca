"""``streamclf evaluate-stream``: how fast the live engine notices, how often it cries wolf.

Each video of a ground-truth CSV (``video,start_s,end_s,label``) is replayed through the
live engine at ``pace: fast`` (:func:`streamclf.analysis.replay.replay`) with the live
smoothing and threshold, and its ``label_start`` events are scored by their ``media_ts``
(:mod:`streamclf.analysis.detection`). ``--sweep`` also scores threshold x smoothing cells
from the same replay (:mod:`streamclf.analysis.sweep`) and recommends one.

Exit status: 0; 1 on a user error or when every video failed; 130 when interrupted (the
report of what was replayed is still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streamclf.cli import checks
from streamclf.cli.common import ExitCode
from streamclf.cli.flags import add_config_flags, add_model_flags, config_overrides
from streamclf.cli.score_events import DEFAULT_GRACE, non_negative, write_report
from streamclf.cli.timeline import replay_files
from streamclf.errors import ConfigError, DataError

__all__ = ["add_parser", "html_report", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate-stream", help="time to detection and false alarms per hour on labelled "
                                "videos",
        description="Replay labelled videos through the live engine (pace fast) and score "
                    "its label_start events against the segments: recall, delay, false "
                    "alarms per hour, precision; --sweep scores threshold x smoothing.")
    p.add_argument("segments", metavar="SEGMENTS.csv",
                   help="ground truth: video,start_s,end_s,label (one row per segment)")
    p.add_argument("--videos-dir", default=None, metavar="DIR",
                   help="where the videos are (default: the CSV's folder)")
    add_model_flags(p, ("model", "weights", "device", "backend", "precision", "classmap"))
    add_config_flags(p, only=("stride", "smooth", "threshold", "start_after", "roi",
                              "max_batch", "threads"))
    p.add_argument("--sweep", action="store_true",
                   help="also score threshold 0.1..0.9 x smooth 1,2,4,8 and recommend a cell")
    p.add_argument("--grace", type=non_negative, default=DEFAULT_GRACE, metavar="S",
                   help="seconds after a segment's end that a start still detects it "
                        "(default 2.0)")
    p.add_argument("--fa-budget", type=non_negative, default=1.0, metavar="N",
                   help="false alarms per hour the recommended cell may have (default 1.0)")
    p.add_argument("--report", required=True, metavar="R.json", help="the JSON report")
    p.add_argument("--html", default=None, metavar="R.html",
                   help="also an HTML report with the delay histogram (and the sweep curve)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _videos(args: argparse.Namespace, names: list[str]) -> list[Path]:
    base = Path(args.videos_dir) if args.videos_dir else Path(args.segments).parent
    if args.videos_dir and not base.is_dir():
        raise DataError(f"--videos-dir {base}: not a folder")
    paths = [base / name for name in names]
    for path in paths:
        problem = checks.file_problem(path)
        if problem:
            raise DataError(f"{problem} (a video of {args.segments}; --videos-dir sets "
                            "where they are)")
    return paths


def _check(args: argparse.Namespace) -> None:
    inputs = {Path(args.segments).resolve()}
    for flag, value in (("--report", args.report), ("--html", args.html)):
        if value is not None:
            checks.check_output(flag, value)
            if Path(value).resolve() in inputs:
                raise ConfigError(f"{flag} {value} is an input file")
    if args.html is not None and Path(args.html).resolve() == Path(args.report).resolve():
        raise ConfigError("--report and --html name the same file")


def run(args: argparse.Namespace) -> int:
    from streamclf.analysis import sweep as sweeping
    from streamclf.analysis.detection import VideoRun, build_report
    from streamclf.analysis.segments import read_segments
    from streamclf.config import StreamConfig

    _check(args)
    truth = read_segments(args.segments)
    names = list(dict.fromkeys(seg.video for seg in truth))
    paths = _videos(args, names)
    checks.check_model(args.model, args.weights, args.classmap, args.device)
    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    defaults = StreamConfig(source="x")
    smooth = int(overrides.get("smooth", defaults.smooth))
    threshold = float(overrides.get("threshold", defaults.threshold))
    start_after = int(overrides.get("start_after", defaults.start_after))
    timelines, interrupted = replay_files(paths, overrides, args.quiet)
    by_name = dict(zip(names, timelines, strict=True))
    failed = [n for n, t in by_name.items() if t.error and not t.windows]
    for name in failed:
        print(f"streamclf: error: {name}: {by_name[name].error}", file=sys.stderr, flush=True)
    scored = {n: t for n, t in by_name.items() if n not in failed}
    runs = [VideoRun(n, tuple(t.changes), hours_s=t.duration_s) for n, t in scored.items()]
    report = build_report([s for s in truth if s.video in scored], runs, args.grace,
                          model=args.model, weights=args.weights, smooth=smooth,
                          threshold=threshold, start_after=start_after,
                          stride=overrides.get("stride"), failed_videos=failed,
                          interrupted=interrupted)
    if args.sweep:
        cells = sweeping.sweep([s for s in truth if s.video in scored],
                               {n: (t.windows, t.duration_s) for n, t in scored.items()},
                               args.grace, start_after)
        report["fa_budget"] = args.fa_budget
        report["sweep"] = cells
        report["recommended"] = sweeping.recommend(cells, args.fa_budget)
    write_report(args.report, report)
    if args.html is not None:
        html_report(report).write(args.html)
    print(summary(report))
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.ERROR if len(failed) == len(names) else ExitCode.OK


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the live cell's scores and the recommendation."""
    o = report["overall"]
    lines = [
        f"videos {report['videos']}, {report['hours'] * 60:.1f} min; smooth "
        f"{report['smooth']}, threshold {report['threshold']}, grace {report['grace']} s",
        f"detected {o['detected']}/{o['segments']} segments (recall {_fmt(o['recall'])}); "
        f"delay median {_fmt(o['delay_median_s'], ' s')}, p90 {_fmt(o['delay_p90_s'], ' s')}",
        f"false alarms {o['false_alarms']} ({_fmt(o['false_alarms_per_hour'])}/h), repeats "
        f"{o['repeats']}, precision {_fmt(o['precision'])}",
    ]
    if "sweep" in report:
        rec = report["recommended"]
        lines.append(
            "recommended: none within the false-alarm budget" if rec is None else
            f"recommended: --threshold {rec['threshold']} --smooth {rec['smooth']} (recall "
            f"{_fmt(rec['recall'])}, {_fmt(rec['false_alarms_per_hour'])} false alarms/h, "
            f"median delay {_fmt(rec['delay_median_s'], ' s')})")
    return "\n".join(lines)


def html_report(report: dict[str, Any]) -> Any:
    """The HTML report: the summary, the overall and per-class tables, the delay histogram,
    and with a sweep its curve and table."""
    from streamclf.analysis.html_report import HtmlReport
    from streamclf.analysis.plots import delay_histogram_png, sweep_curve_png

    page = HtmlReport("How fast does it notice? (streamclf evaluate-stream)")
    for line in summary(report).splitlines():
        page.paragraph(line)
    page.heading("Overall").table([report["overall"]])
    page.heading("Per class").table([{"label": k, **v} for k, v in report["per_class"].items()])
    page.heading("Time to detection").image(delay_histogram_png(report["delays"]),
                                            alt="delay histogram")
    if "sweep" in report:
        page.heading("Threshold x smoothing")
        page.image(sweep_curve_png(report["sweep"], report["recommended"]),
                   alt="median delay against false alarms per hour")
        page.table(report["sweep"])
    return page
