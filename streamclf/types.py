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

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = [
    "BufferPolicy",
    "Event",
    "Frame",
    "Prediction",
    "SourceInfo",
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


@dataclass(frozen=True)
class Event:
    """One event-log record: ``type``, ``stream``, ``ts`` (wall seconds) and extra fields.

    The log adds ``seq`` (its own counter) when it writes the event.
    """

    type: str
    stream: str
    ts: float
    fields: Mapping[str, Any] = field(default_factory=dict)
