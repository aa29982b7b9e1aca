"""Reading video files with timestamps: the frames of time spans, and towhee-style sampling.

Which frames a span holds, and which of them a model gets, is the window rule of
:mod:`streamclf.media.clips`; this module only decodes, with PyAV
(:class:`~streamclf.media.av_source.AVDecoder`, the reader the live engine uses for files):
it decodes only reference frames before the first span, stops after the last one, keeps the frames
in a span as the decoder gave them (YUV) and converts only those a clip samples
(``read_clips``: 4 of the ~48 frames of an x3d_xs clip). The pixels, timestamps and
rotation are exactly those OpenCV's FFmpeg backend gave (checked on every file of
``../shared/data``): the same swscale conversion, presentation times (AVI: decoding
times), display rotation applied (a phone video tagged 90 degrees comes out portrait).

Functions here are thread-safe (each call opens its own decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamclf.errors import ConfigError, DataError, SourceError
from streamclf.media.clips import Span, centered_spans, in_span, uniform_indices
from streamclf.media.picture import AVPicture

if TYPE_CHECKING:
    from streamclf.media.av_source import AVDecoder
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
#: Decoded frames a span reader keeps unconverted before it converts on arrival instead
#: (a long span of a 4K file would otherwise hold gigabytes): 512 MB.
_HELD_BYTES = 512 << 20


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


def _open(path: str | Path, prime: bool = True) -> tuple[AVDecoder, VideoInfo]:
    """An opened decoder and the file's declared properties (the frame count as OpenCV's
    ``CAP_PROP_FRAME_COUNT`` gives it: the container's count, else its duration times the
    rate, rounded)."""
    from streamclf.media.av_source import AVDecoder

    try:
        decoder = AVDecoder(str(path), "file", threads=1, prime=prime)  # (files in parallel)
    except SourceError as exc:
        raise DataError(str(exc).replace("cannot open file source ", "")) from None
    count = decoder.frame_count
    info = VideoInfo(path=str(path), width=decoder.width, height=decoder.height,
                     fps=decoder.fps, frame_count=count)
    return decoder, info


def check_end(path: str | Path) -> None:
    """Raise if the file's data stops before its declared length: its packets must reach
    the frame at 95 % of the declared count (not the last frame: MKV and AVI counts are
    estimates, often one frame long). Read without decoding
    (:meth:`~streamclf.media.av_source.AVDecoder.data_end`). A clip sampled from the middle
    of a file cut after it would otherwise classify fine.

    Raises:
        DataError: the data ends well under the declared length (truncated).
    """
    decoder, info = _open(path, prime=False)
    try:
        if info.frame_count < 2 or info.fps <= 0:
            return  # nothing declared to compare with
        target = max(1, int(0.95 * info.frame_count) - 1) / info.fps
        reached = decoder.data_end()
    finally:
        decoder.close()
    if reached + 0.5 / info.fps < target:
        raise DataError(
            f"{path}: corrupt or truncated video: its data ends near {reached:.2f} s of "
            f"the {info.duration_s:.2f} s it declares (use --allow-truncated to classify what "
            "is there)")


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its declared properties (decodes one frame: the rotation)."""
    decoder, info = _open(path)
    decoder.close()
    return info


def _frames(path: str | Path, decoder: AVDecoder, info: VideoInfo,
            until_s: float) -> Iterator[tuple[int, float, AVPicture]]:
    """``(index, ts, picture)`` in order until the first frame at or past ``until_s``; before
    ``decoder.skip_until`` the frames no other frame refers to are not decoded.

    Raises:
        DataError: no frame, or decoding stopped well before the declared length (corrupt
            or truncated) while frames up to ``until_s`` were still wanted.
    """
    index, last_ts = 0, -math.inf
    try:
        for frame, ts in decoder.frames():
            last_ts = ts
            yield index, ts, AVPicture(frame, decoder.rotation)
            index += 1
            if ts >= until_s:
                return
    except SourceError as exc:
        raise DataError(str(exc)) from None
    if index == 0:
        raise DataError(f"{path}: no frame could be decoded (corrupt or not a video)")
    problem = decoder.truncation(last_ts + 1.0 / (info.fps if info.fps > 0 else 30.0), until_s)
    if problem:
        raise DataError(f"{problem} ({index} of {info.frame_count} frames)")


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
    decoder, info = _open(path)
    try:
        for index, ts, picture in _frames(path, decoder, info, until_s):
            yield index, ts, picture.rgb() if want is None or want(index, ts) else None
    finally:
        decoder.close()


def _span_pictures(path: str | Path, windows: list[Span], frame_fn: FrameFn | None = None,
                   opened: tuple[AVDecoder, VideoInfo] | None = None,
                   ) -> list[tuple[list[Any], list[float]]]:
    """Each span's frames, decoded once: pictures (not converted), or, past
    :data:`_HELD_BYTES` of them, ``frame_fn``'s arrays (converted on arrival). Before the
    first span only the frames others refer to are decoded
    (:meth:`~streamclf.media.av_source.AVDecoder.skip_until`). ``opened``: the file's
    decoder, opened already (closed here).

    Raises:
        ConfigError: no span given.
        DataError: unreadable file, or a span left empty.
    """
    if not windows:
        raise ConfigError("read_windows needs at least one time span")
    until = max(end for _, end in windows)
    out: list[tuple[list[Any], list[float]]] = [([], []) for _ in windows]
    held, small = 0, False
    convert = _once(frame_fn)
    decoder, info = opened or _open(path)
    try:
        decoder.skip_until(min(start for start, _ in windows))
        for _, ts, picture in _frames(path, decoder, info, until):
            spans = [i for i, span in enumerate(windows) if in_span(ts, span)]
            if not spans:
                continue
            if not small and held + picture.nbytes > _HELD_BYTES:
                small = True  # from now on small copies only (and the held ones)
                for frames, _ in out:
                    frames[:] = [convert(p) for p in frames]
            kept: Any = convert(picture) if small else picture
            held += 0 if small else picture.nbytes
            for i in spans:
                out[i][0].append(kept)
                out[i][1].append(ts)
    finally:
        decoder.close()
    if any(not frames for frames, _ in out):
        raise DataError(f"{path}: no frames in the requested time span (video too short?)")
    return out


def _once(frame_fn: FrameFn | None) -> Callable[[Any], np.ndarray]:
    """:func:`_convert` that converts each held item once (by identity: the items stay
    alive in the caller's lists) and returns the same array when asked again."""
    done: dict[int, np.ndarray] = {}

    def convert(item: Any) -> np.ndarray:
        key = id(item)
        if key not in done:
            done[key] = _convert(item, frame_fn)
        return done[key]

    return convert


def _convert(item: Any, frame_fn: FrameFn | None) -> np.ndarray:
    """A held picture as ``frame_fn``'s array (an array already converted passes)."""
    if isinstance(item, np.ndarray):
        return item
    image = item.rgb()
    return frame_fn(image) if frame_fn else image


def read_windows(
    path: str | Path,
    windows: list[Span],
    frame_fn: FrameFn | None = None,
) -> list[tuple[list[np.ndarray], list[float]]]:
    """The frames of each span ``[start, end)`` (:func:`~streamclf.media.clips.in_span`),
    in one decoding pass.

    Args:
        windows: the spans, e.g. from :func:`~streamclf.media.clips.centered_spans`.
        frame_fn: applied to each kept ``(H, W, 3)`` uint8 RGB frame once (e.g. the model's
            resize + crop).

    Returns:
        per span, its frames in order and their timestamps (seconds).

    Raises:
        ConfigError: no span given.
        DataError: unreadable file, or a span left empty.
    """
    found = _span_pictures(path, windows, frame_fn)
    convert = _once(frame_fn)  # a frame in two spans is converted once
    return [([convert(p) for p in frames], stamps) for frames, stamps in found]


def read_clips(path: str | Path, transform: ClipTransform, num_clips: int = 1) -> list[np.ndarray]:
    """The clips ``classify`` feeds a model from a file, by the window rule.

    ``num_clips`` spans of the model's duration (:func:`~streamclf.media.clips.centered_spans`:
    one centred, several spread; a short video whole); of each span's frames only those
    ``transform.select`` keeps are converted, resized and cropped.

    Returns:
        one ``(T, crop, crop, 3)`` uint8 RGB array per span (``T``: the model's frame count).

    Raises:
        ConfigError: ``num_clips`` below 1 or above :data:`MAX_CLIPS`.
        DataError: missing, unreadable, corrupt or truncated file.

    Thread-safe (``transform`` holds no mutable state).
    """
    check_samples("clips", num_clips, MAX_CLIPS)
    decoder, info = _open(path)
    try:
        spans = centered_spans(info.duration_s, transform.spec.clip_duration_s, num_clips)
    except BaseException:
        decoder.close()
        raise
    found = _span_pictures(path, spans, transform.spatial, (decoder, info))
    convert = _once(transform.spatial)  # a frame two clips sample is converted once
    clips = []
    for frames, _ in found:
        picked = [convert(frames[int(i)]) for i in transform.select(len(frames))]
        clips.append(transform.prepare(picked))  # (picked already: checks and stacks)
    return clips


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
