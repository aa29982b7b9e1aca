"""Ground-truth action segments: a CSV with ``video,start_s,end_s,label`` columns.

The ActivityNet/THUMOS layout: one row per labelled segment, times in seconds from the
video's first frame (its own timeline, as the event log's ``media_ts``). Column names are
matched without regard to case or surrounding spaces, in any order; extra columns are
ignored. Every problem is a :class:`~streamclf.errors.DataError` in one line naming the
file (and the line, for a bad row).

Example::

    video,start_s,end_s,label
    cam_kitchen.mp4,12.0,19.5,washing dishes
    cam_kitchen.mp4,40.2,55.0,drinking

    read_segments("truth.csv")  # -> [TruthSegment("cam_kitchen.mp4", 12.0, 19.5, ...), ...]
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from streamclf.errors import DataError
from streamclf.paths import input_file_problem

__all__ = ["COLUMNS", "MAX_BYTES", "MAX_ROWS", "TruthSegment", "read_segments"]

#: The columns a segments CSV must have (in any order).
COLUMNS = ("video", "start_s", "end_s", "label")
#: The largest segments file read (64 MB): a bigger one is surely not a segment list.
MAX_BYTES = 64 * 1024 * 1024
#: The most segment rows read.
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class TruthSegment:
    """One labelled action: ``label`` happens in ``video`` from ``start_s`` to ``end_s``
    (seconds in the video's own timeline; ``0 <= start_s <= end_s``)."""

    video: str
    start_s: float
    end_s: float
    label: str


def _time(path: Path, line: int, column: str, text: str | None) -> float:
    """The finite number in ``text`` (a cell of ``column``), else DataError."""
    value = (text or "").strip()
    try:
        number = float(value)
    except ValueError:
        shown = f"{value!r}" if value else "empty"
        raise DataError(f"{path}: line {line}: {column} is not a number ({shown})") from None
    if not math.isfinite(number):
        raise DataError(f"{path}: line {line}: {column} must be a finite number, got {value}")
    return number


def _header(path: Path, fields: list[str] | None) -> dict[str, int]:
    """Where each of :data:`COLUMNS` is in the header row ``fields``."""
    if not fields:
        raise DataError(f"{path}: empty file; expected a header row with columns "
                        f"{','.join(COLUMNS)}")
    names = [f.strip().lower().lstrip("\ufeff") for f in fields]
    where: dict[str, int] = {}
    for column in COLUMNS:
        hits = [i for i, n in enumerate(names) if n == column]
        if len(hits) > 1:
            raise DataError(f"{path}: line 1: column {column!r} appears {len(hits)} times")
        if hits:
            where[column] = hits[0]
    missing = [c for c in COLUMNS if c not in where]
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)} (the header "
                        f"needs {','.join(COLUMNS)}; found {','.join(names)})")
    return where


def _text(path: Path) -> str:
    """The file's text, after the checks on its kind, size and encoding."""
    problem = input_file_problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise DataError(f"{path}: {size / 1e6:.0f} MB is too large for a segments file "
                            f"(at most {MAX_BYTES // (1024 * 1024)} MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {exc.start})") from None


def read_segments(path: str | Path) -> list[TruthSegment]:
    """The segments of the CSV ``path``, in file order (blank lines skipped).

    Raises:
        DataError: the file is missing, not a regular file, over :data:`MAX_BYTES`, not
            UTF-8, has no header or lacks a column of :data:`COLUMNS`, has more than
            :data:`MAX_ROWS` rows or none; a row has an empty ``video`` or ``label``, a
            time that is not a finite number, ``start_s < 0`` or ``end_s < start_s``.
            The message names the file and the line.
    """
    p = Path(path)
    reader = csv.reader(io.StringIO(_text(p), newline=""))
    out: list[TruthSegment] = []
    try:
        where = _header(p, next(reader, None))
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(out) >= MAX_ROWS:
                raise DataError(f"{p}: more than {MAX_ROWS:,} segment rows")
            cells = {c: row[i] if i < len(row) else None for c, i in where.items()}
            video, label = (cells["video"] or "").strip(), (cells["label"] or "").strip()
            if not video:
                raise DataError(f"{p}: line {line}: empty video")
            if not label:
                raise DataError(f"{p}: line {line}: empty label")
            start = _time(p, line, "start_s", cells["start_s"])
            end = _time(p, line, "end_s", cells["end_s"])
            if start < 0:
                raise DataError(f"{p}: line {line}: start_s must be >= 0, got {start:g}")
            if end < start:
                raise DataError(f"{p}: line {line}: end_s {end:g} is before start_s {start:g}")
            out.append(TruthSegment(video, start, end, label))
    except csv.Error as exc:
        raise DataError(f"{p}: line {reader.line_num}: bad CSV ({exc})") from None
    if not out:
        raise DataError(f"{p}: no segments (only a header row)")
    return out
