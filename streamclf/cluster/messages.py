"""Frozen data that crosses Ray actor boundaries (pickled by Ray, never mutated).

A clip travels as its ``(T, crop, crop, 3)`` uint8 frames (about 400 KB for x3d_xs), already
resized and cropped on the stream's node, so the model actor only normalises and batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamclf.types import Event, StreamTotals

__all__ = ["ClipRequest", "ClipResult", "Drained", "StreamTotals"]


@dataclass(frozen=True)
class ClipRequest:
    """One window of one stream, sent to a model actor.

    Attributes:
        stream: stream id.
        frames: ``(T, crop, crop, 3)`` uint8 RGB, ``T`` = the model's ``num_frames``.
        wall_start, wall_end: ``time.time()`` capture times of the first and last frame.
        index: the stream's window counter (from 0), for logs and tests.
    """

    stream: str
    frames: np.ndarray = field(repr=False)
    wall_start: float
    wall_end: float
    index: int = 0


@dataclass(frozen=True)
class ClipResult:
    """The model's answer for one :class:`ClipRequest`.

    Attributes:
        probs: ``(K,)`` float32 class probabilities.
        inference_ms: time of the model call that held this clip (the whole batch).
        batch: clips in that model call (1 when nothing else was waiting).
        actor: index of the model actor that ran it.
    """

    stream: str
    index: int
    probs: np.ndarray = field(repr=False)
    inference_ms: float
    batch: int = 1
    actor: int = 0


@dataclass(frozen=True)
class Drained:
    """What a stream actor hands the driver on each poll.

    Attributes:
        stream: stream id.
        events: the events since the last poll, oldest first (``seq`` is given by the
            driver's log).
        totals: counters at the time of the poll.
        finished: the stream has ended (end of file, or its source gave up) and has
            nothing more to classify; its ``stopped`` event comes with the stop call.
        lost_events: events dropped because the driver did not poll for a long time.
    """

    stream: str
    events: tuple[Event, ...]
    totals: StreamTotals
    finished: bool = False
    lost_events: int = 0
