"""``streamclf events``: what a run's event store (``--db``) holds, filtered, as a table,
JSON Lines or CSV.

Reads with :mod:`streamclf.sinks.store_query` (read-only; a run may be writing the file
meanwhile). A missing file, a file that is not a streamclf event store and a bad
``--since``/``--until`` are each one error line and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import datetime
from typing import Any

from streamclf.cli.common import ExitCode
from streamclf.errors import ConfigError

__all__ = ["add_parser", "run"]

#: The CSV columns, in order (``time`` is ``ts`` as a local ISO time).
CSV_COLUMNS = ("time", "ts", "seq", "stream", "type", "label", "score", "alert_id", "phase",
               "max_score", "clip", "snapshot", "message")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser("events", help="list the labels, alerts and errors of an event "
                                           "store (--db)")
    parser.add_argument("--db", required=True, metavar="DB",
                        help="the SQLite event store a run wrote (run --db DB)")
    parser.add_argument("--stream", default=None, metavar="ID",
                        help="only this stream (default: every stream)")
    parser.add_argument("--label", default=None, metavar="L",
                        help="only events of this label (default: every label)")
    parser.add_argument("--since", default=None, metavar="WHEN",
                        help="from this time: back from now (30m, 1h, 2d) or ISO "
                             "(2026-12-02T10:30); default: the first event")
    parser.add_argument("--until", default=None, metavar="WHEN",
                        help="up to this time, as --since (default: the last event)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="one JSON object per line, as the event log writes them")
    form.add_argument("--csv", action="store_true",
                      help=f"CSV with a header row ({', '.join(CSV_COLUMNS)})")
    return parser


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _detail(ev: dict[str, Any]) -> str:
    """The table's last column: what happened."""
    parts = []
    if ev.get("phase"):
        parts.append(str(ev["phase"]))
    if ev.get("label") is not None:
        parts.append(str(ev["label"]))
    if isinstance(ev.get("score"), (int, float)):
        parts.append(f"{ev['score']:.2f}")
    if isinstance(ev.get("max_score"), (int, float)) and ev.get("phase") == "end":
        parts.append(f"(max {ev['max_score']:.2f})")
    for key in ("alert_id", "clip", "reason", "error", "message"):
        if ev.get(key):
            parts.append(f"{key}={ev[key]}" if key in ("alert_id", "clip") else str(ev[key]))
    return " ".join(parts)


def _print(events: list[dict[str, Any]], args: argparse.Namespace) -> None:
    out = sys.stdout
    if args.json:
        for ev in events:
            out.write(json.dumps(ev, separators=(",", ":")) + "\n")
    elif args.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for ev in events:
            row = {**ev, "time": _when(ev["ts"])}
            writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    else:
        width = max((len(str(ev["stream"])) for ev in events), default=6)
        for ev in events:
            out.write(f"{_when(ev['ts'])}  {ev['stream']:<{width}}  {ev['type']:<15}  "
                      f"{_detail(ev)}".rstrip() + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    """Print the stored events matching the filters, oldest first."""
    from streamclf.sinks.store_query import StoreQuery, parse_time, read_events

    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    if since is not None and until is not None and until < since:
        raise ConfigError(f"--until {args.until!r} is before --since {args.since!r}")
    events = read_events(args.db, StoreQuery(stream=args.stream, label=args.label,
                                             since=since, until=until))
    try:
        _print(events, args)
    except BrokenPipeError:  # `streamclf events ... | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if not events and not (args.json or args.csv):
        print("streamclf: no events match", file=sys.stderr, flush=True)
    return ExitCode.OK
