"""The window rule: a span of time -> the frames in it -> the model's samples.

Every path that turns video into model input (``classify``, ``evaluate``, int8
calibration, training and validation, and the live ring) takes these three steps here,
and nothing else decides any of them:

1. **A span of time** ``(start, end)``, in seconds on the video's (or the stream's) own
   clock, half-open ``[start, end)``; ``end`` may be ``math.inf`` ("to the end").

   * Files (:func:`centered_spans`): one clip of ``clip_s`` seconds is centred in the
     video; ``n`` clips are spread evenly, the first starting at 0 and the last ending at
     the video's end. A video no longer than one clip, or of unknown length, gives one
     span over all of it: ``(0, inf)``.
   * Training (:func:`train_span`): a clip's start is drawn uniformly from
     ``[0, duration - clip_s]``; validation takes the centred clip (same fallback).
   * Live (:func:`live_span`): the ``duration`` seconds that end on ``end_ts``,
     *including* a frame stamped exactly ``end_ts``: ``(end_ts - duration, end_ts]``,
     written in the one half-open form as ``[end_ts - duration + EPS, end_ts + EPS)``
     with ``EPS = 1e-6`` s.

2. **The frames in it**: a frame is in a span iff ``start <= ts < end`` (:func:`in_span`),
   ``ts`` being its presentation timestamp (a frame folder's frame ``i`` is at
   ``i / fps``, :func:`frame_times`). :func:`span_frames` gives their positions in order.

3. **The model's samples**: ``num_samples`` of those ``n`` frames, in order, at
   :func:`uniform_indices` ``(n, num_samples)`` - pytorchvideo's
   ``UniformTemporalSubsample``, bit-exact; indices repeat when ``n < num_samples``.
   :func:`span_indices` is steps 2 and 3 on an array of timestamps. SlowFast's slow
   pathway keeps :func:`slow_indices` ``(T, alpha)`` = ``uniform_indices(T, T // alpha)``
   of the ``T`` frames fed to the fast one.

Decoding is elsewhere and only applies the rule: :func:`streamclf.media.video.read_windows`
(a file's frames of given spans, by :func:`in_span`; ``read_clips`` = ``classify``'s clips),
``train.dataset.read_clip`` (:func:`train_span`) and :meth:`streamclf.media.ring.FrameRing.window`
(:func:`live_span` then :func:`span_indices`). When each live window is due is the
scheduler's business (:mod:`streamclf.media.scheduler`), not this module's.

Every function here is pure and thread-safe (no state, inputs never modified).
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

from streamclf.errors import ConfigError, DataError

__all__ = [
    "LIVE_EPS",
    "Span",
    "centered_spans",
    "frame_times",
    "in_span",
    "live_span",
    "slow_indices",
    "span_frames",
    "span_indices",
    "train_span",
    "uniform_indices",
]

#: ``(start, end)`` seconds, meaning ``[start, end)``; ``end`` may be ``math.inf``.
Span = tuple[float, float]

#: Tolerance of the live span: a window ending exactly on a frame's timestamp includes
#: that frame, one starting exactly on a frame's timestamp does not.
LIVE_EPS = 1e-6

_WHOLE: Span = (0.0, math.inf)


# -- 1. spans of time ---------------------------------------------------------------------


def centered_spans(duration_s: float, clip_s: float, num_clips: int = 1) -> list[Span]:
    """``num_clips`` spans of ``clip_s`` seconds in a video of ``duration_s`` seconds.

    One clip is centred; several are spread evenly from the start to the end (the first
    starts at 0, the last ends at ``duration_s``). A video no longer than ``clip_s``, or
    of unknown length (``duration_s <= 0``), gives one span over all of it,
    ``[(0.0, inf)]``, whatever ``num_clips``.

    Returns:
        a list of ``num_clips`` (or 1) ``(start, end)`` spans, in order.

    Raises:
        ConfigError: ``num_clips`` is not an integer >= 1, or ``clip_s`` is not > 0.
    """
    if isinstance(num_clips, bool) or not isinstance(num_clips, (int, np.integer)) or (
            num_clips < 1):
        raise ConfigError(f"num_clips must be >= 1, got {num_clips!r}")
    if not clip_s > 0:
        raise ConfigError(f"clip_s must be > 0 seconds, got {clip_s!r}")
    if duration_s <= 0 or duration_s <= clip_s:
        return [_WHOLE]
    slack = duration_s - clip_s
    if num_clips == 1:
        starts = [slack / 2.0]
    else:
        starts = [slack * i / (num_clips - 1) for i in range(int(num_clips))]
    return [(s, s + clip_s) for s in starts]


def train_span(duration_s: float, clip_s: float, rng: np.random.Generator | None) -> Span:
    """The span of one training clip: a random start drawn from ``rng`` (training), or
    the centred clip, ``centered_spans(duration_s, clip_s)[0]``, when ``rng`` is None
    (validation: the clip ``classify`` takes).

    The start is ``rng.uniform(0, duration_s - clip_s)`` (one draw). A video no longer than
    the clip, or of unknown length, gives ``(0.0, inf)`` and draws nothing.

    Raises:
        ConfigError: ``clip_s`` is not > 0.
    """
    centred = centered_spans(duration_s, clip_s)[0]  # also checks clip_s
    if rng is None or duration_s <= clip_s:
        return centred
    start = float(rng.uniform(0.0, duration_s - clip_s))
    return start, start + clip_s


def live_span(end_ts: float, duration_s: float) -> Span:
    """The live window ``(end_ts - duration_s, end_ts]`` as a half-open span.

    Returns ``(end_ts - duration_s + LIVE_EPS, end_ts + LIVE_EPS)``: a frame stamped
    exactly ``end_ts`` is in it, one stamped exactly ``end_ts - duration_s`` is not (so
    consecutive windows ``stride = duration`` apart never share a frame).
    """
    return end_ts - duration_s + LIVE_EPS, end_ts + LIVE_EPS


# -- 2. frames in a span ------------------------------------------------------------------


def frame_times(count: int, fps: float) -> np.ndarray:
    """Timestamps of a frame folder's ``count`` frames at ``fps``: frame ``i`` at ``i / fps``.

    Returns:
        ``(count,)`` float64 seconds.

    Raises:
        ConfigError: ``fps`` is not > 0.
    """
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps!r}")
    return np.arange(count, dtype=np.float64) / fps


@overload
def in_span(ts: float, span: Span) -> bool: ...
@overload
def in_span(ts: np.ndarray, span: Span) -> np.ndarray: ...


def in_span(ts: float | np.ndarray, span: Span) -> bool | np.ndarray:
    """Whether a frame stamped ``ts`` is in ``span``: ``start <= ts < end``.

    THE membership rule; ``ts`` may be one timestamp (returns a ``bool``) or an array of
    them (returns a bool array of the same shape).
    """
    start, end = span
    if isinstance(ts, np.ndarray):
        return (ts >= start) & (ts < end)
    return bool(start <= ts < end)


def span_frames(ts: np.ndarray, span: Span) -> np.ndarray:
    """Positions in ``ts`` (a 1-D array of timestamps) of the frames in ``span``.

    Returns:
        ``(n,)`` int64 positions, ascending (contiguous when ``ts`` is sorted); empty when
        the span holds no frame.
    """
    return np.flatnonzero(in_span(np.asarray(ts, dtype=np.float64), span)).astype(np.int64)


# -- 3. the model's samples ---------------------------------------------------------------


def uniform_indices(num_available: int, num_samples: int) -> np.ndarray:
    """Indices of ``num_samples`` evenly spaced frames out of ``num_available``.

    Bit-for-bit the rule of pytorchvideo's ``uniform_temporal_subsample``
    (``torch.linspace(0, n - 1, k).clamp(0, n - 1).long()``): float32 linspace
    computed the way torch does (forward from the start for the first half,
    backward from the end for the second), then truncation. Indices repeat when
    ``num_samples > num_available``.

    Returns:
        ``(num_samples,)`` int64 array of indices in ``[0, num_available - 1]``.

    Raises:
        DataError: ``num_available`` is not positive (no frames).
        ConfigError: ``num_samples`` is not positive.
    """
    if num_available <= 0:
        raise DataError("uniform_indices needs at least one frame")
    if num_samples <= 0:
        raise ConfigError("num_samples must be positive")
    start = np.float32(0.0)
    end = np.float32(num_available - 1)
    if num_samples == 1:
        values = np.array([start], dtype=np.float32)
    else:
        step = np.float32((end - start) / np.float32(num_samples - 1))
        i = np.arange(num_samples)
        half = num_samples // 2
        values = np.where(
            i < half,
            start + step * i.astype(np.float32),
            end - step * (num_samples - 1 - i).astype(np.float32),
        ).astype(np.float32)
    values = np.clip(values, start, end)
    return values.astype(np.int64)


def span_indices(ts: np.ndarray, span: Span, num_samples: int) -> np.ndarray | None:
    """Positions in ``ts`` of the ``num_samples`` frames the model gets from ``span``.

    ``span_frames(ts, span)[uniform_indices(n, num_samples)]`` with ``n`` the frames in
    the span: the offline reference's ``get_clip(start, end)`` then
    ``UniformTemporalSubsample(num_samples)``.

    Args:
        ts: ``(N,)`` timestamps in seconds, in the frames' order.

    Returns:
        ``(num_samples,)`` int64 positions in ``ts`` (non-decreasing), or ``None`` when the
        span holds no frame.

    Raises:
        ConfigError: ``num_samples`` is not positive.
    """
    inside = span_frames(ts, span)
    if not len(inside):
        return None
    return inside[uniform_indices(len(inside), num_samples)]


def slow_indices(num_frames: int, alpha: int) -> np.ndarray:
    """Which of the fast pathway's ``num_frames`` frames SlowFast's slow pathway keeps:
    ``uniform_indices(num_frames, num_frames // alpha)``, like pytorchvideo's ``PackPathway``.

    Returns:
        ``(num_frames // alpha,)`` int64 indices into the fast pathway's frames.

    Raises:
        ConfigError: ``alpha`` is below 1, or leaves the slow pathway no frame
            (``num_frames < alpha``).
    """
    if alpha < 1:
        raise ConfigError(f"slowfast alpha must be >= 1, got {alpha}")
    if num_frames // alpha < 1:
        raise ConfigError(f"a SlowFast clip needs at least alpha = {alpha} frames, got "
                          f"{num_frames}")
    return uniform_indices(num_frames, num_frames // alpha)
