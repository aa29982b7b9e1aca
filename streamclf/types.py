"""Frozen data types that cross threads.

Every object here is immutable once built (numpy arrays inside are never written
after construction), so it can be handed from one thread to another without a lock.

Time conventions:
    * ``ts``: seconds on the stream's clock. For live sources and files paced in real
      time this is ``time.monotonic()`` at capture; for files read with ``pace: fast``
      it is the file's own presentation time. Windows are cut on this clock.
    * ``wall_ts``: ``time.time()`` (seconds since the epoch) at capture; used in events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

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
        image: ``(H, W, 3)`` uint8 RGB as decoded (full size; the ring stores a resized copy).
    """

    seq: int
    ts: float
    wall_ts: float
    image: np.ndarray


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
    """

    stream: str
    frames: np.ndarray
    seqs: tuple[int, ...]
    ts: tuple[float, ...]
    wall_start: float
    wall_end: float
    due_ts: float
    epoch: int = 0


@dataclass(frozen=True)
class Prediction:
    """One classified window, after smoothing.

    ``labels``/``scores``: top-k of the smoothed probabilities; ``raw_*``: this clip alone.
    ``features``: ``(D,)`` float32 clip embedding. Times in seconds; ``latency_ms`` is
    ``published - window_end`` in wall-clock time.
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

    @property
    def latency_ms(self) -> float:
        return (self.published - self.window_end) * 1000.0


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
