"""``streamclf timeline``: a file's labels over time, as CSV, subtitles, a plot or JSON.

The files run through the live engine at ``pace: fast`` (:func:`streamclf.analysis.replay.
replay`), so the rows are the windows a live ``run`` on the same file gives. Outputs:
``--csv`` one row per window; ``--srt``/``--vtt`` the stable label as subtitles; ``--plot`` the
top labels' smoothed scores over time with the stable segments shaded; ``--json`` one JSON
object per file on stdout. With none of them, the stable segments are printed. With several
files, ``--srt``, ``--vtt`` and ``--plot`` need ``{stem}`` in their path (one file each).

Exit status: 0; 1 on a user error or when every file failed (each failure is one line);
130 when interrupted (what was done is still written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.cli import checks
from streamclf.cli.common import ExitCode
from streamclf.cli.flags import add_config_flags, add_model_flags, config_overrides
from streamclf.errors import ConfigError, DataError
from streamclf.files import write_atomic
from streamclf.signals import stop_on_signals

if TYPE_CHECKING:
    from streamclf.analysis.replay import FileTimeline

__all__ = ["add_parser", "replay_files", "run"]

_PER_FILE = ("srt", "vtt", "plot")
_TOP_LABELS = 5


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "timeline", help="labels over time for video files: CSV, subtitles, plot",
        description="Run files through the live engine at pace fast and write each window's "
                    "label over media time: CSV rows, SRT/WebVTT subtitles of the stable "
                    "label, a PNG plot of the top scores, or JSON.")
    p.add_argument("files", nargs="+", metavar="FILE", help="video files")
    add_model_flags(p, ("model", "weights", "device", "backend", "precision", "classmap"))
    add_config_flags(p, only=("stride", "smooth", "threshold", "start_after", "roi",
                              "max_batch", "threads"))
    p.add_argument("--csv", default=None, metavar="OUT.csv",
                   help="one row per window: file,start_s,end_s,label,score,stable_label")
    p.add_argument("--srt", default=None, metavar="OUT.srt",
                   help="the stable label as SubRip subtitles ({stem}: one per file)")
    p.add_argument("--vtt", default=None, metavar="OUT.vtt",
                   help="the stable label as WebVTT subtitles ({stem}: one per file)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="top labels' scores over time, stable segments shaded ({stem}: one "
                        "per file)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per file (windows and segments) on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _outputs(args: argparse.Namespace, files: list[Path]) -> dict[str, list[Path]]:
    """Each output flag's paths (one per file for the per-file ones), checked."""
    inputs = {f.resolve() for f in files}
    out: dict[str, list[Path]] = {}
    for name in ("csv", *_PER_FILE):
        value = getattr(args, name)
        if value is None:
            continue
        if name in _PER_FILE and len(files) > 1 and "{stem}" not in value:
            raise ConfigError(f"--{name} with {len(files)} files needs {{stem}} in its path "
                              "(one output per file), e.g. out/{stem}." + name.replace(
                                  "plot", "png"))
        paths = ([Path(value.replace("{stem}", f.stem)) for f in files]
                 if name in _PER_FILE else [Path(value)])
        for path in paths:
            checks.check_output(f"--{name}", path)
            if path.resolve() in inputs:
                raise ConfigError(f"--{name} {path} is one of the input files")
        out[name] = paths
    every = [p.resolve() for paths in out.values() for p in paths]
    if len(set(every)) != len(every):
        raise ConfigError("two outputs name the same file")
    return out


def _plot(item: FileTimeline, segs: list[Any]) -> bytes:
    import numpy as np

    from streamclf.analysis.plots import timeline_png

    times = np.array([w.media_ts for w in item.windows], np.float64)
    scores = {}
    if item.windows:  # the labels that score highest anywhere in the file
        smoothed = np.stack([w.smoothed for w in item.windows])
        top = np.argsort(-smoothed.max(axis=0), kind="stable")[:_TOP_LABELS]
        scores = {item.labels[k]: smoothed[:, k] for k in top}
    stable = [(s.start_s, s.end_s, s.label) for s in segs]
    return timeline_png(times, scores, stable, title=item.path.name)


def replay_files(paths: list[Path], overrides: dict[str, Any], quiet: bool
                 ) -> tuple[list[FileTimeline], bool]:
    """:func:`~streamclf.analysis.replay.replay` with a line per finished file on stderr
    (unless ``quiet``) and Ctrl-C/SIGTERM ending it early; returns the timelines and
    whether it was interrupted."""
    from streamclf.analysis.replay import replay

    def done(item: FileTimeline) -> None:
        if not quiet:
            state = f"failed: {item.error}" if item.error else f"{len(item.windows)} windows"
            print(f"streamclf: {item.path}: {state}", file=sys.stderr, flush=True)

    with stop_on_signals() as stop:
        timelines = replay(paths, overrides, stop=stop, on_done=done)
    return timelines, stop.is_set()


def run(args: argparse.Namespace) -> int:
    from streamclf.analysis import exports

    files = [Path(f) for f in args.files]
    for f in files:
        problem = checks.file_problem(f)
        if problem:
            raise DataError(problem)
    outputs = _outputs(args, files)
    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    checks.check_model(args.model, args.weights, args.classmap, args.device)
    timelines, interrupted = replay_files(files, overrides, args.quiet)
    all_rows, failed = [], 0
    for i, item in enumerate(timelines):
        if item.error and not item.windows:
            failed += 1
            print(f"streamclf: error: {item.path}: {item.error}", file=sys.stderr, flush=True)
        elif item.error:
            print(f"streamclf: warning: {item.path}: {item.error} (timeline up to there)",
                  file=sys.stderr, flush=True)
        rows = exports.rows(str(item.path), item.windows)
        segs = exports.segments(item.windows, item.duration_s)
        all_rows.extend(rows)
        if "srt" in outputs:
            write_atomic(outputs["srt"][i], exports.srt_text(segs))
        if "vtt" in outputs:
            write_atomic(outputs["vtt"][i], exports.vtt_text(segs))
        if "plot" in outputs:
            write_atomic(outputs["plot"][i], _plot(item, segs))
        if args.json:
            print(json.dumps({
                "file": str(item.path), "duration_s": round(item.duration_s, 3),
                "error": item.error,
                "windows": [{"start_s": r.start_s, "end_s": r.end_s, "label": r.label,
                             "score": r.score, "stable_label": r.stable_label} for r in rows],
                "segments": [dataclasses.asdict(s) for s in segs]}), flush=True)
        elif not outputs:
            for s in segs:
                print(f"{item.path}\t{s.start_s:8.2f}\t{s.end_s:8.2f}\t{s.label}\t{s.score:.2f}")
    if "csv" in outputs:
        write_atomic(outputs["csv"][0], exports.csv_text(all_rows))
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.ERROR if failed == len(timelines) else ExitCode.OK
