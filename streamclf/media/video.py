"""Reading video files with timestamps: the frames of time spans, and towhee-style sampling.

Which frames a span holds, and which of them a model gets, is the window rule of
:mod:`streamclf.media.clips`; this module only decodes.

Frames come out RGB, with OpenCV's FFmpeg backend honouring rotation metadata
(a phone video tagged 90 degrees comes out portrait). Timestamps are the
container's presentation times in seconds.

Functions here are thread-safe (each call opens its own capture).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import ConfigError, DataError
from streamclf.media.clips import Span, centered_spans, in_span, uniform_indices
from streamclf.paths import input_file_problem

if TYPE_CHECKING:
    from streamclf.media.preprocess import ClipTransform

__all__ = [
    "MAX_CLIPS",
    "MAX_SAMPLES",
    "VideoInfo",
    "check_end",
    "check_samples",
    "iter_frames",
    "read_clips",
    "read_windows",
    "sample_frames",
]

FrameFn = Callable[[np.ndarray], np.ndarray]
#: Decoding that stops before this share of the declared length counts as truncation.
_COMPLETE_SHARE = 0.9


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares. ``frame_count``/``duration_s`` may be 0 if unknown."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 and self.frame_count > 0 else 0.0


def _open(path: str | Path) -> tuple[Any, VideoInfo]:
    """An opened ``cv2.VideoCapture`` (``Any``: cv2 is imported lazily, untyped here) and
    the file's declared properties."""
    cv2 = cv2_module()
    p = Path(path)
    problem = input_file_problem(p)  # before OpenCV: a FIFO would block it
    if problem:
        raise DataError(f"{p}: file not found" if problem == "file not found" else
                        f"{p} {problem}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{p}: not a readable video (unknown format or damaged header)")
    info = VideoInfo(
        path=str(p),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        frame_count=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
    )
    return cap, info


def check_end(path: str | Path) -> None:
    """Raise if the file's data stops before its declared length: seek to the frame at 95 %
    of the declared count and decode it (one seek, ~40 ms; not the last frame: MKV and AVI
    counts are estimates, often one frame long). A clip sampled from the middle of a file
    cut after it would otherwise classify fine.

    Raises:
        DataError: the last frame decodes at well under the declared length (truncated).
    """
    cap, info = _open(path)
    try:
        if info.frame_count < 2 or info.fps <= 0:
            return  # nothing declared to compare with
        cv2 = cv2_module()
        target = max(1, int(0.95 * info.frame_count) - 1)
        cap.set(cv2.CAP_PROP_POS_FRAMES, target)
        reached = cap.get(cv2.CAP_PROP_POS_FRAMES) if cap.grab() else 0.0
    finally:
        cap.release()
    if reached < target:
        raise DataError(
            f"{path}: corrupt or truncated video: its data ends near {reached / info.fps:.2f} s of "
            f"the {info.duration_s:.2f} s it declares (use --allow-truncated to classify what "
            "is there)")


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its declared properties (no decoding)."""
    cap, info = _open(path)
    cap.release()
    return info


def _to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    cv2 = cv2_module()
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def iter_frames(
    path: str | Path,
    until_s: float = math.inf,
    want: Callable[[int, float], bool] | None = None,
) -> Iterator[tuple[int, float, np.ndarray | None]]:
    """Decode ``path`` in order, yielding ``(index, timestamp_s, frame)``.

    ``frame`` is an ``(H, W, 3)`` uint8 RGB array, or ``None`` when ``want(index, ts)``
    says the frame is not needed (it is then decoded but never converted).
    Stops after the first frame at or past ``until_s``.

    Raises:
        DataError: the file cannot be opened, yields no frame, or stops well before its
            declared length (corrupt or truncated) while frames up to ``until_s`` were
            still wanted.
    """
    cap, info = _open(path)
    fps = info.fps if info.fps > 0 else 30.0
    index, last_ts = 0, -math.inf
    try:
        while True:
            if not cap.grab():
                break
            ts = cap.get(cv2_module().CAP_PROP_POS_MSEC) / 1000.0
            if not math.isfinite(ts) or ts <= last_ts:
                ts = last_ts + 1.0 / fps if math.isfinite(last_ts) else 0.0
            last_ts = ts
            frame = None
            if want is None or want(index, ts):
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                frame = _to_rgb(bgr)
            yield index, ts, frame
            index += 1
            if ts >= until_s:
                return
    finally:
        cap.release()
    if index == 0:
        raise DataError(f"{path}: no frame could be decoded (corrupt or not a video)")
    declared = info.duration_s
    reached = last_ts + 1.0 / fps
    if declared > 0 and reached < _COMPLETE_SHARE * min(declared, until_s):
        raise DataError(
            f"{path}: corrupt or truncated video: decoding stopped at {reached:.2f} s of "
            f"{declared:.2f} s ({index} of {info.frame_count} frames)"
        )


def read_windows(
    path: str | Path,
    windows: list[Span],
    frame_fn: FrameFn | None = None,
) -> list[tuple[list[np.ndarray], list[float]]]:
    """The frames of each span ``[start, end)`` (:func:`~streamclf.media.clips.in_span`),
    in one decoding pass.

    Args:
        windows: the spans, e.g. from :func:`~streamclf.media.clips.centered_spans`.
        frame_fn: applied to each kept ``(H, W, 3)`` uint8 RGB frame once, on decode
            (e.g. the model's resize + crop), so that only small frames are held.

    Returns:
        per span, its frames in order and their timestamps (seconds).

    Raises:
        ConfigError: no span given.
        DataError: unreadable file, or a span left empty.
    """
    if not windows:
        raise ConfigError("read_windows needs at least one time span")
    until = max(end for _, end in windows)

    def wanted(_index: int, ts: float) -> bool:
        return any(in_span(ts, span) for span in windows)

    out: list[tuple[list[np.ndarray], list[float]]] = [([], []) for _ in windows]
    for _, ts, frame in iter_frames(path, until_s=until, want=wanted):
        if frame is None:
            continue
        kept = frame_fn(frame) if frame_fn else frame
        for span, (frames, stamps) in zip(windows, out, strict=True):
            if in_span(ts, span):
                frames.append(kept)
                stamps.append(ts)
    if any(not frames for frames, _ in out):
        raise DataError(f"{path}: no frames in the requested time span (video too short?)")
    return out


def read_clips(path: str | Path, transform: ClipTransform, num_clips: int = 1) -> list[np.ndarray]:
    """The clips ``classify`` feeds a model from a file, by the window rule.

    ``num_clips`` spans of the model's duration (:func:`~streamclf.media.clips.centered_spans`:
    one centred, several spread; a short video whole), their frames resized and cropped on
    decode, then ``transform.prepare`` picks the model's frames.

    Returns:
        one ``(T, crop, crop, 3)`` uint8 RGB array per span (``T``: the model's frame count).

    Raises:
        ConfigError: ``num_clips`` below 1 or above :data:`MAX_CLIPS`.
        DataError: missing, unreadable, corrupt or truncated file.

    Thread-safe (``transform`` holds no mutable state).
    """
    check_samples("clips", num_clips, MAX_CLIPS)
    spans = centered_spans(probe(path).duration_s, transform.spec.clip_duration_s, num_clips)
    found = read_windows(path, spans, frame_fn=transform.spatial)
    return [transform.prepare(frames) for frames, _ in found]


def sample_frames(
    path: str | Path,
    sample_type: str = "uniform_temporal_subsample",
    num_samples: int | None = None,
    time_step: float | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Decode a file with towhee's sampling modes; returns RGB frames and timestamps.

    * ``uniform_temporal_subsample``: ``num_samples`` frames evenly spread over the
      whole video (the same index rule as the models' temporal subsampling).
    * ``time_step_sample``: one frame every ``time_step`` seconds.

    Raises:
        DataError: unreadable or corrupt file.
        ConfigError: a bad ``sample_type``, ``num_samples`` or ``time_step``.
    """
    if sample_type == "time_step_sample":
        if not time_step or time_step <= 0:
            raise ConfigError("time_step_sample needs time_step > 0 (seconds)")
        frames: list[np.ndarray] = []
        stamps: list[float] = []

        def due(_index: int, ts: float) -> bool:
            return not stamps or ts >= stamps[0] + len(stamps) * time_step

        for _, ts, frame in iter_frames(path, want=due):
            if frame is not None:
                frames.append(frame)
                stamps.append(ts)
                if len(frames) > MAX_SAMPLES:
                    raise DataError(f"{path}: time_step {time_step:g} s keeps more than "
                                    f"{MAX_SAMPLES} frames of this video; use a larger one")
        return frames, stamps
    if sample_type != "uniform_temporal_subsample":
        raise ConfigError(
            f"unknown sample_type {sample_type!r}; use uniform_temporal_subsample or "
            "time_step_sample"
        )
    if not num_samples or num_samples <= 0:
        raise ConfigError("uniform_temporal_subsample needs num_samples > 0")
    # Plan the picks from the declared frame count; if the file holds a different
    # number of frames, decode again with the picks planned from the count now known (never
    # keeping every frame: memory stays num_samples frames, whatever the video's length).
    check_samples("num_samples", num_samples)
    count = probe(path).frame_count
    for _attempt in range(2):
        kept = _decode_picks(path, set(uniform_indices(count, num_samples).tolist())
                             if count else set())
        final = uniform_indices(len(kept.stamps), num_samples)
        if all(int(i) in kept.frames for i in final):
            return [kept.frames[int(i)] for i in final], [kept.stamps[int(i)] for i in final]
        count = len(kept.stamps)
    raise DataError(f"{path}: could not sample {num_samples} frames")  # pragma: no cover


#: Most frames ``sample_frames`` keeps (full resolution) and clips ``read_clips`` reads.
MAX_SAMPLES = 512
MAX_CLIPS = 64


def check_samples(what: str, count: int, limit: int = MAX_SAMPLES) -> None:
    """Refuse a request for more than ``limit`` frames or clips (memory: each is a decoded
    frame or a clip's worth of them).

    Raises:
        ConfigError: ``count`` above ``limit``.
    """
    if count > limit:
        raise ConfigError(f"{what} must be at most {limit} (each one is held in memory), got "
                          f"{count}")


@dataclass
class _Decoded:
    frames: dict[int, np.ndarray]
    stamps: list[float]


def _decode_picks(path: str | Path, picks: set[int] | None) -> _Decoded:
    """Decode all of ``path``; keep the frames whose index is in ``picks`` (all if None)."""
    out = _Decoded({}, [])
    for index, ts, frame in iter_frames(path, want=lambda i, _t: picks is None or i in picks):
        out.stamps.append(ts)
        if frame is not None:
            out.frames[index] = frame
    return out
