"""From an event log's records to the :class:`~streamclf.analysis.detection.VideoRun` of each
video, matched to the videos of the truth segments.

A stream's video is found, first match wins:

1. its stream id is a truth ``video`` as written, or the basename of one, or its stem
   (basename without extension);
2. the ``source`` of its (first) ``source_opened`` event is a truth ``video`` as written,
   or has the basename of one.

A stream that matches no truth video is still scored, under the basename of its source
(or its stream id when no ``source_opened`` was logged). A second ``source_opened`` of the
same stream id (a reconnect, or a second run appended to the log) continues that stream.

Only streams that were opened or published something (``source_opened``, ``prediction``,
``label_start``/``label_end``, ``alert``) are scored; a stream whose only events are
errors never ran. The hours of a video are the largest ``media_ts`` of any of its events.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamclf.analysis.detection import LabelChange, VideoRun
from streamclf.analysis.segments import TruthSegment
from streamclf.errors import DataError

__all__ = ["runs_from_events", "video_basename", "video_stem"]

_LABEL_TYPES = ("label_start", "label_end")
_RAN_TYPES = frozenset({"source_opened", "prediction", "alert", *_LABEL_TYPES})


def video_basename(name: str) -> str:
    """The last path component of a file path or URL (a URL's query and fragment dropped;
    ``/`` and ``\\`` both separate)."""
    text = name
    if "://" in text:
        text = text.split("?", 1)[0].split("#", 1)[0]
    text = text.replace("\\", "/").rstrip("/")
    return text.rsplit("/", 1)[-1] or name


def video_stem(name: str) -> str:
    """:func:`video_basename` without its extension (``a/b.mp4`` -> ``b``)."""
    base = video_basename(name)
    stem = os.path.splitext(base)[0]
    return stem or base


def _media_ts(record: Mapping[str, Any]) -> float | None:
    value = record.get("media_ts")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class _Stream:
    """What the log says of one stream id."""

    source: str | None = None
    ran: bool = False
    changes: list[LabelChange] = field(default_factory=list)
    last_media_ts: float = 0.0


class _TruthIndex:
    """Truth videos by name, basename and stem."""

    def __init__(self, videos: Iterable[str]) -> None:
        self.exact: dict[str, set[str]] = defaultdict(set)
        self.base: dict[str, set[str]] = defaultdict(set)
        self.stem: dict[str, set[str]] = defaultdict(set)
        for video in videos:
            self.exact[video].add(video)
            self.base[video_basename(video)].add(video)
            self.stem[video_stem(video)].add(video)

    def match(self, stream: str, source: str | None) -> str | None:
        """The truth video of ``stream`` (see the module doc), or None.

        Raises:
            DataError: the first name that matches at all matches two truth videos.
        """
        steps = [(stream, self.exact), (stream, self.base), (stream, self.stem)]
        if source is not None:
            steps += [(source, self.exact), (video_basename(source), self.base)]
        for key, table in steps:
            found = table.get(key)
            if not found:
                continue
            if len(found) > 1:
                shown = " and ".join(sorted(found))
                raise DataError(f"stream {stream!r} matches several truth videos ({shown}); "
                                "give the videos distinct file names")
            return next(iter(found))
        return None


def _read(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, _Stream], int]:
    """The streams of ``records`` (in order of first appearance) and the label events
    that cannot be scored (no finite ``media_ts``, no label, no stream)."""
    streams: dict[str, _Stream] = {}
    unscored = 0
    for record in records:
        if not isinstance(record, Mapping):
            continue
        kind, stream = record.get("type"), record.get("stream")
        if not isinstance(stream, str) or not stream:
            unscored += kind in _LABEL_TYPES
            continue
        info = streams.setdefault(stream, _Stream())
        ts = _media_ts(record)
        if ts is not None:
            info.last_media_ts = max(info.last_media_ts, ts)
        if kind in _RAN_TYPES:
            info.ran = True
        if kind == "source_opened" and info.source is None:
            source = record.get("source")
            info.source = source if isinstance(source, str) and source else None
        elif kind in _LABEL_TYPES:
            label = record.get("label")
            if ts is None or not isinstance(label, str) or not label:
                unscored += 1
            else:
                info.changes.append(LabelChange(kind, label, ts))
    return {k: v for k, v in streams.items() if v.ran}, unscored


def runs_from_events(records: Iterable[Mapping[str, Any]], truth: Sequence[TruthSegment]
                     ) -> tuple[list[VideoRun], list[str], int]:
    """The runs of the streams in an event log's ``records`` (as
    :func:`~streamclf.live.events.read_events` returns them), named after their truth video.

    Returns:
        ``(runs, missing_videos, unscored_events)``: one :class:`VideoRun` per stream that
        ran, in order of first appearance (``hours_s``: its largest ``media_ts``); the truth
        videos no stream matched (sorted: they are not scored); and the ``label_start`` /
        ``label_end`` events skipped for lack of a finite ``media_ts`` (logs of older
        versions), a label or a stream.

    Raises:
        DataError: two stream ids match the same truth video, or one stream matches two
            truth videos (the message names them).
    """
    streams, unscored = _read(records)
    index = _TruthIndex(dict.fromkeys(seg.video for seg in truth))
    owner: dict[str, str] = {}  # video -> stream id
    names: dict[str, str] = {}  # stream id -> video
    unmatched: list[str] = []
    for stream, info in streams.items():
        video = index.match(stream, info.source)
        if video is None:
            unmatched.append(stream)
            continue
        if video in owner:
            raise DataError(f"streams {owner[video]!r} and {stream!r} both match the truth "
                            f"video {video!r}; score one run of a video at a time")
        owner[video], names[stream] = stream, video
    for stream in unmatched:
        source = streams[stream].source
        name = video_basename(source) if source is not None else stream
        if name in owner:
            name = stream if stream not in owner else f"{name} [stream {stream}]"
        owner[name], names[stream] = stream, name
    runs = [VideoRun(names[s], tuple(info.changes), info.last_media_ts)
            for s, info in streams.items()]
    missing = sorted({seg.video for seg in truth} - set(names.values()))
    return runs, missing, unscored
