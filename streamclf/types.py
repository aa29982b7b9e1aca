"""Frozen data types that cross threads.

Every object here is immutable once built (numpy arrays inside are never written
after construction), so it can be handed from one thread to another without a lock.

Time conventions:
    * ``ts``: seconds on the stream's clock. For live sources and files paced in real
      time this is ``time.monotonic()`` at capture; for files read with ``pace: fast``
      it is the file's own presentation time. Windows are cut on this clock.
    * ``wall_ts``: ``time.time()`` (seconds since the epoch) at capture; used in events.
    * ``media_ts``: seconds in the source's own timeline from its first frame. Files: the
      presentation time (so it does not depend on ``pace``); live sources: the capture time
      since the first frame. Events carry it, so a file's timeline can be read from the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from streamclf.media.picture import Picture

__all__ = [
    "BufferPolicy",
    "Event",
    "EventType",
    "Frame",
    "Prediction",
    "SourceInfo",
    "StreamHealth",
    "StreamTotals",
    "Window",
    "WindowScores",
]


class BufferPolicy(Enum):
    """What the ring does when it is full.

    ``LATEST``: live sources; the oldest frame is dropped (and counted), capture never waits.
    ``LOSSLESS``: ``pace: fast`` files; capture waits for the consumer so no due window is lost.
    """

    LATEST = "latest"
    LOSSLESS = "lossless"


@dataclass(frozen=True)
class SourceInfo:
    """What a source declares. ``name`` is safe to log (credentials masked)."""

    name: str
    kind: str  # "webcam" | "rtsp" | "http" | "file" | "synthetic"
    fps: float  # declared frames per second (0.0 when unknown)
    width: int
    height: int
    is_live: bool
    sar: tuple[int, int] = (1, 1)  # sample (pixel) aspect ratio; (1, 1) also when unknown


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        seq: per-source counter, from 0, contiguous across reconnects.
        ts: seconds on the stream clock (see module docstring).
        wall_ts: ``time.time()`` at capture.
        picture: the decoded frame at the source's size, converted to ``(H, W, 3)`` uint8
            RGB only by those who call ``picture.rgb()`` (the ring converts just the frames
            a window samples; see :mod:`streamclf.media.picture`).
        media_ts: seconds from the source's first frame in its own timeline (see module
            docstring).
    """

    seq: int
    ts: float
    wall_ts: float
    picture: Picture
    media_ts: float


@dataclass(frozen=True)
class Window:
    """A clip cut from one stream's ring, ready for the model.

    Attributes:
        stream: stream id.
        frames: ``(T, crop, crop, 3)`` uint8 RGB, already resized and centre-cropped.
        seqs: the frames' sequence numbers, ``(T,)``.
        ts: the frames' stream-clock times, ``(T,)``.
        wall_start, wall_end: ``time.time()`` capture times of the first and last frame.
        due_ts: stream-clock time the window was due (its end).
        epoch: the ring's epoch (bumped on reconnect): windows never span two epochs.
        media: the frames' media times, ``(T,)`` (see :class:`Frame`); ``()`` for a clip
            handed in from elsewhere (a cluster's stream worker keeps its own).
    """

    stream: str
    frames: np.ndarray
    seqs: tuple[int, ...]
    ts: tuple[float, ...]
    wall_start: float
    wall_end: float
    due_ts: float
    epoch: int = 0
    media: tuple[float, ...] = ()

    @property
    def media_span(self) -> tuple[float, float]:
        """``(first, last)`` sampled frame's media time; ``(0.0, 0.0)`` without media."""
        return (self.media[0], self.media[-1]) if self.media else (0.0, 0.0)


@dataclass(frozen=True)
class Prediction:
    """One classified window, after smoothing.

    ``labels``/``scores``: top-k of the smoothed probabilities; ``raw_*``: this clip alone.
    ``features``: ``(D,)`` float32 clip embedding. Times in seconds; ``latency_ms`` is
    ``published - window_end`` in wall-clock time. ``media_start``/``media_ts``: the first and
    last sampled frame's media time (see :class:`Frame`).
    """

    stream: str
    window_start: float
    window_end: float
    published: float
    inference_ms: float
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    raw_labels: tuple[str, ...]
    raw_scores: tuple[float, ...]
    features: np.ndarray = field(repr=False)
    stable_label: str | None = None
    media_start: float = 0.0
    media_ts: float = 0.0

    @property
    def latency_ms(self) -> float:
        return (self.published - self.window_end) * 1000.0


@dataclass(frozen=True)
class WindowScores:
    """One classified window's full scores, for score taps (timelines, threshold sweeps).

    Attributes:
        stream: stream id.
        media_start, media_ts: the window's first and last sampled frame, in media time.
        probs: ``(K,)`` float32 this clip's probabilities (raw, before smoothing).
        smoothed: ``(K,)`` float32 the smoothed probabilities the live run published.
        stable_label: the stable label after this window, or None.
        labels: the ``K`` class names (the same tuple for every window of a run).

    Thread-safety: immutable; the arrays are private copies, never written after build.
    """

    stream: str
    media_start: float
    media_ts: float
    probs: np.ndarray = field(repr=False)
    smoothed: np.ndarray = field(repr=False)
    stable_label: str | None
    labels: tuple[str, ...] = field(repr=False)


class EventType(str, Enum):
    """What an :class:`Event` reports. A ``str`` enum: ``EventType.PREDICTION == "prediction"``,
    and it is written to JSON as its value."""

    PREDICTION = "prediction"
    LABEL_START = "label_start"
    LABEL_END = "label_end"
    SOURCE_OPENED = "source_opened"
    SOURCE_LOST = "source_lost"
    RECONNECT_FAILED = "reconnect_failed"
    SOURCE_RESTORED = "source_restored"
    ERROR = "error"
    ALERT = "alert"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Event:
    """One event of a live run: ``type``, ``stream``, ``ts`` (wall seconds) and extra fields.

    ``seq`` is the run's counter (contiguous from 0 over every stream), given by the
    :class:`~streamclf.live.sinks.EventBus` that publishes the event; -1 before that.
    Thread-safety: immutable (``fields`` is never written after construction).
    """

    type: EventType
    stream: str
    ts: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    seq: int = -1

    def as_dict(self) -> dict[str, Any]:
        """The JSON Lines record: ``type``, ``stream``, ``ts``, ``seq``, then the extra fields
        (a field named like one of those four is ignored)."""
        extra = {k: v for k, v in self.fields.items() if k not in _CORE_KEYS}
        return {"type": self.type.value, "stream": self.stream, "ts": self.ts, "seq": self.seq,
                **extra}


_CORE_KEYS = frozenset({"type", "stream", "ts", "seq"})


@dataclass(frozen=True)
class StreamTotals:
    """How far a stream got: frames read, windows classified, frames dropped by the ring,
    windows skipped by the scheduler, and the error that ended it (None: a clean end)."""

    frames: int = 0
    windows: int = 0
    drops: int = 0
    skipped_windows: int = 0
    error: str | None = None
    latency_ms_p50: float | None = None  # over the latest predictions; in final totals only
    latency_ms_p95: float | None = None


@dataclass(frozen=True)
class StreamHealth:
    """A snapshot of one running stream (``/api/status``, the status line, ``health()``).

    ``source_state``: ``opening``, ``live``, ``lost``, ``reconnecting``, ``ended`` or
    ``stopped``. Rates are recent averages; ``latency_ms`` is the last prediction's.
    """

    stream: str
    source: str
    model: str
    backend: str
    source_state: str
    input_fps: float
    inference_fps: float
    clips_per_s: float
    latency_ms: float | None
    frames: int
    windows: int
    drops: int
    skipped_windows: int
    reconnects: int
    stable_label: str | None
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: tuples as lists."""
        out = dataclasses.asdict(self)
        out["labels"], out["scores"] = list(self.labels), list(self.scores)
        return out
