"""Reading video files with timestamps: clip windows and towhee-style sampling.

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
from typing import Any

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import ConfigError, DataError
from streamclf.media.preprocess import uniform_indices

__all__ = [
    "VideoInfo",
    "centered_windows",
    "iter_frames",
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
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
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


def centered_windows(
    duration_s: float, clip_s: float, num_clips: int = 1
) -> list[tuple[float, float]]:
    """``num_clips`` windows ``[start, end)`` of ``clip_s`` seconds, evenly spread.

    One clip is centred; several are spread from the start to the end. A video no
    longer than ``clip_s`` (or of unknown length) gives one window over all of it.

    Raises:
        ConfigError: ``num_clips`` is below 1.
    """
    if num_clips < 1:
        raise ConfigError("num_clips must be >= 1")
    if duration_s <= 0 or duration_s <= clip_s:
        return [(0.0, math.inf)]
    slack = duration_s - clip_s
    if num_clips == 1:
        starts = [slack / 2.0]
    else:
        starts = [slack * i / (num_clips - 1) for i in range(num_clips)]
    return [(s, s + clip_s) for s in starts]


def read_windows(
    path: str | Path,
    windows: list[tuple[float, float]],
    frame_fn: FrameFn | None = None,
) -> list[tuple[list[np.ndarray], list[float]]]:
    """Frames with ``start <= ts < end`` for each window, in one decoding pass.

    Args:
        frame_fn: applied to each kept ``(H, W, 3)`` uint8 RGB frame once, on decode
            (e.g. the model's resize + crop), so that only small frames are held.

    Returns:
        per window, its frames and their timestamps (seconds).

    Raises:
        DataError: unreadable file, or a window left empty.
    """
    until = max(end for _, end in windows)

    def wanted(_index: int, ts: float) -> bool:
        return any(start <= ts < end for start, end in windows)

    out: list[tuple[list[np.ndarray], list[float]]] = [([], []) for _ in windows]
    for _, ts, frame in iter_frames(path, until_s=until, want=wanted):
        if frame is None:
            continue
        kept = frame_fn(frame) if frame_fn else frame
        for (start, end), (frames, stamps) in zip(windows, out, strict=True):
            if start <= ts < end:
                frames.append(kept)
                stamps.append(ts)
    if any(not frames for frames, _ in out):
        raise DataError(f"{path}: no frames in the requested time span (video too short?)")
    return out


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
        return frames, stamps
    if sample_type != "uniform_temporal_subsample":
        raise ConfigError(
            f"unknown sample_type {sample_type!r}; use uniform_temporal_subsample or "
            "time_step_sample"
        )
    if not num_samples or num_samples <= 0:
        raise ConfigError("uniform_temporal_subsample needs num_samples > 0")
    # Plan the picks from the declared frame count; if the file holds a different
    # number of frames, decode again keeping every frame (rare: bad metadata).
    declared = probe(path).frame_count
    for picks in (set(uniform_indices(declared, num_samples).tolist()) if declared else None, None):
        kept = _decode_picks(path, picks)
        final = uniform_indices(len(kept.stamps), num_samples)
        if all(int(i) in kept.frames for i in final):
            return [kept.frames[int(i)] for i in final], [kept.stamps[int(i)] for i in final]
    raise DataError(f"{path}: could not sample {num_samples} frames")  # pragma: no cover


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
