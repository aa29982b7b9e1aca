"""A file's timeline as rows, stable segments, CSV, SubRip (SRT) and WebVTT.

* Rows: one per window, ``file,start_s,end_s,label,score,stable_label``. ``start_s``/
  ``end_s`` are the window's first and last sampled frame in media time (its span, to within
  one frame); ``label``/``score`` the smoothed top-1, as the live overlay shows it;
  ``stable_label`` the label after hysteresis (empty when none).
* Segments: runs of windows with the same stable label. One starts at the window whose
  update started the label (its ``media_ts``, as the ``label_start`` event) and ends at the
  window that ended it; one still open at the end of the file ends one stride after the last
  window, within the file. Its score is the label's mean smoothed score over the segment.
* Subtitles: one cue per segment, ``label (0.87)``, so any player shows the stable label.

Thread-safety: pure functions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streamclf.types import WindowScores

__all__ = ["Segment", "TimelineRow", "csv_text", "rows", "segments", "srt_text", "vtt_text"]

CSV_COLUMNS = ("file", "start_s", "end_s", "label", "score", "stable_label")


@dataclass(frozen=True)
class TimelineRow:
    """One window of a file's timeline (see module docstring)."""

    file: str
    start_s: float
    end_s: float
    label: str
    score: float
    stable_label: str | None


@dataclass(frozen=True)
class Segment:
    """A stable label from ``start_s`` to ``end_s`` (media seconds), mean ``score``."""

    label: str
    start_s: float
    end_s: float
    score: float


def rows(file: str, windows: Sequence[WindowScores]) -> list[TimelineRow]:
    """One :class:`TimelineRow` per window, in media-time order."""
    out = []
    for w in windows:
        top = int(np.argmax(w.smoothed))
        out.append(TimelineRow(file, round(w.media_start, 3), round(w.media_ts, 3),
                               w.labels[top], round(float(w.smoothed[top]), 4), w.stable_label))
    return out


def _stride(windows: Sequence[WindowScores]) -> float:
    ends = np.array([w.media_ts for w in windows], np.float64)
    steps = np.diff(ends)
    return float(np.median(steps)) if steps.size else 0.5


def segments(windows: Sequence[WindowScores], duration_s: float = 0.0) -> list[Segment]:
    """The stable-label segments of ``windows`` (see module docstring)."""
    out: list[Segment] = []
    stride = _stride(windows)
    run: list[WindowScores] = []

    def close(end: float) -> None:
        label = run[0].stable_label
        assert label is not None
        k = run[0].labels.index(label)
        score = float(np.mean([w.smoothed[k] for w in run]))
        out.append(Segment(label, round(run[0].media_ts, 3), round(end, 3), round(score, 4)))

    for w in windows:
        if run and w.stable_label != run[0].stable_label:
            close(w.media_ts)
            run = []
        if w.stable_label is not None and not run:
            run = [w]
        elif run:
            run.append(w)
    if run:
        last = run[-1].media_ts
        end = last + stride if duration_s <= last else min(duration_s, last + stride)
        close(end)
    return out


def csv_text(timeline_rows: Iterable[TimelineRow]) -> str:
    """The rows as CSV with the header :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in timeline_rows:
        writer.writerow([r.file, f"{r.start_s:.3f}", f"{r.end_s:.3f}", r.label,
                         f"{r.score:.4f}", r.stable_label or ""])
    return buf.getvalue()


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(seg: Segment) -> str:
    return f"{seg.label} ({seg.score:.2f})"


def srt_text(segs: Sequence[Segment]) -> str:
    """SubRip: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and a blank line after each."""
    blocks = [f"{i}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n"
              f"{_cue_text(s).replace(chr(10), ' ')}\n"
              for i, s in enumerate(segs, 1)]
    return "\n".join(blocks)


def vtt_text(segs: Sequence[Segment]) -> str:
    """WebVTT: the ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``; ``&``,
    ``<`` and ``>`` in labels are escaped, and ``-->`` cannot occur in a cue."""
    def escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    cues = [f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n"
            f"{escape(_cue_text(s)).replace(chr(10), ' ')}\n" for s in segs]
    return "WEBVTT\n\n" + "\n".join(cues)
