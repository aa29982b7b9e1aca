"""H.264 MP4 writing: the event clips and the ``--output`` overlay video.

Why PyAV (``av>=12``, whose wheels carry libx264): OpenCV's ``VideoWriter`` in the pip wheels
has no H.264 encoder (``mp4v`` is MPEG-4 Part 2, which Chromium and Firefox do not play), sets
no pixel aspect ratio and takes no timestamps. With PyAV the file is H.264 in yuv420p (what
every browser plays), carries the source's sample aspect ratio, and each frame keeps its
capture time (a clip of a camera that delivered frames unevenly plays at the pace they were
captured).

Speed: libx264 ``ultrafast`` on one thread by default (Constrained Baseline: no B-frames, no
CABAC, which every decoder plays). Measured on the team's 2-core machine, real 1280x720
content, CPU per frame with the RGB -> yuv420p conversion: ultrafast 12.6 ms (8.4 kB),
superfast 19.3 ms (6.6 kB), veryfast 21.5 ms (2.3 kB). The files are bigger, but a 720p
30 fps stream costs 0.4 of a core instead of 0.65, on a machine where the model wants them.

Odd sizes: yuv420p keeps one chroma sample per 2x2 pixels, so libx264 takes only even widths
and heights. An odd-sized source is *padded* by repeating its last row and/or column (no
source pixel is lost; the video is 1 px wider or taller than the source; the pixel aspect is
unchanged).

Example::

    writer = H264Writer("clip.mp4", size=(1280, 720), fps=30.0, sar=(1, 1), faststart=True)
    for frame in frames:
        writer.write(frame.picture.rgb(), frame.ts)
    writer.close()
"""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from streamclf._lazy import cv2_module, require
from streamclf.errors import ConfigError, DataError

__all__ = ["H264Writer", "even_size", "normal_sar"]

#: The MP4 timescale: 90 kHz, the MPEG clock (exact for 25, 30, 60 and 30000/1001 fps).
TIME_BASE = Fraction(1, 90_000)
_BT601, _TV_RANGE = 6, 1  # AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG: what swscale's RGB->YUV does


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size the video gets for a ``width x height`` source: each rounded up to even."""
    return width + width % 2, height + height % 2


def normal_sar(sar: tuple[float, float] | None) -> tuple[int, int]:
    """``sar`` as a reduced integer ratio; unknown, zero or absurd (outside 1:10..10:1)
    ratios are square pixels, ``(1, 1)`` (what OpenCV reports as 0:1 when it does not know)."""
    if sar is None or len(sar) != 2:
        return 1, 1
    num, den = sar
    if not (math.isfinite(num) and math.isfinite(den)) or num <= 0 or den <= 0:
        return 1, 1
    ratio = Fraction(round(num), max(1, round(den)))
    if not Fraction(1, 10) <= ratio <= 10:
        return 1, 1
    return ratio.numerator, ratio.denominator


class H264Writer:
    """Writes ``(H, W, 3)`` uint8 RGB frames to an H.264 (yuv420p) MP4.

    Args:
        path: the ``.mp4`` to write (its folder must exist; an existing file is replaced).
        size: ``(width, height)`` of the frames; frames of another size are resized to it,
            odd sizes are padded to even (see the module docstring).
        fps: the nominal rate (> 0): frames written without a timestamp are ``1 / fps``
            apart, and the last frame lasts that long.
        sar: the source's sample (pixel) aspect ratio ``(num, den)``; ``(1, 1)``: square.
        crf, preset: libx264 quality (0-51, lower is better) and speed.
        faststart: put the index first at close, so a browser starts playing before the
            whole file is loaded; it rewrites the file once, so use it for short clips.
        threads: libx264 threads (1: one core at most, leaving the rest to the model).

    Timestamps: ``write(image, ts)`` with ``ts`` in seconds (any origin): the first frame is
    at 0 and each later one at ``ts - first_ts``; one not after the previous frame is put one
    tick (1/90000 s) after it. Each frame lasts until the next, the last one ``1 / fps``: the
    file's duration is the span of the timestamps plus ``1 / fps``.

    Raises:
        ConfigError: bad ``size``, ``fps``, ``sar``.
        DataError: the file cannot be created, or stops taking data (disk full, file size
            limit, I/O error: the message names the path and the OS error, also kept in
            :attr:`last_error`).

    Thread-safety: not thread-safe; one thread writes and closes.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, *,
                 sar: tuple[int, int] = (1, 1), crf: int = 23, preset: str = "ultrafast",
                 faststart: bool = False, threads: int = 1) -> None:
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in size):
            raise ConfigError(f"size must be (width, height) positive integers, got {size!r}")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or \
                not math.isfinite(fps) or fps <= 0:
            raise ConfigError(f"fps must be a number > 0, got {fps!r}")
        if len(sar) != 2 or any(not isinstance(v, int) or v < 1 for v in sar):
            raise ConfigError(f"sar must be (num, den) positive integers, got {sar!r}")
        av = require("av")
        self.path, self.size, self.fps = Path(path), (size[0], size[1]), float(fps)
        self.frames_written = 0
        self.last_error: str | None = None
        self._pad = (size[1] % 2, size[0] % 2)  # rows, columns added at the bottom, right
        self._first_ts: float | None = None
        self._last_pts = -1
        self._closed = False
        options = {"movflags": "+faststart"} if faststart else {}
        try:
            with self.path.open("wb"):  # FFmpeg opens the file at the first frame: fail now
                pass
            self._container = av.open(str(self.path), "w", format="mp4", options=options)
        except (OSError, av.error.FFmpegError) as exc:
            raise DataError(f"{self.path}: cannot open for writing ({_reason(exc)})") from None
        try:
            stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1001),
                options={"preset": preset, "crf": str(int(crf))})
            stream.width, stream.height = even_size(*self.size)
            stream.pix_fmt = "yuv420p"
            stream.time_base = TIME_BASE
            ctx = stream.codec_context
            ctx.time_base = TIME_BASE
            ctx.thread_count = max(1, int(threads))
            ctx.sample_aspect_ratio = Fraction(*sar)
            ctx.colorspace, ctx.color_range = _BT601, _TV_RANGE
        except BaseException:
            self._container.close()
            raise
        self._stream = stream

    def write(self, image: np.ndarray, ts: float | None = None) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame at ``ts`` seconds (see the class docs).

        Raises:
            DataError: after :meth:`close`, for a frame that is not ``(H, W, 3)`` uint8, or
                when the file stops taking data.
        """
        if self._closed:
            raise DataError(f"{self.path}: write after close")
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype != np.uint8:
            raise DataError(f"{self.path}: frames must be (H, W, 3) uint8 RGB, got "
                            f"{getattr(image, 'shape', type(image))}")
        av = require("av")
        frame = av.VideoFrame.from_ndarray(self._fit(image), format="rgb24")
        if ts is None:
            pts = round(self.frames_written / (self.fps * TIME_BASE))
        else:
            if self._first_ts is None:
                self._first_ts = ts
            pts = round((ts - self._first_ts) / TIME_BASE)
        pts = max(pts, self._last_pts + 1)
        frame.pts, frame.time_base, self._last_pts = pts, TIME_BASE, pts
        self._mux(self._stream.encode(frame))
        self.frames_written += 1

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` at :attr:`size`, padded to even by repeating its last row/column."""
        if (image.shape[1], image.shape[0]) != self.size:
            cv2 = cv2_module()
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        rows, cols = self._pad
        if rows or cols:
            image = np.pad(image, ((0, rows), (0, cols), (0, 0)), mode="edge")
        return np.ascontiguousarray(image)

    def _mux(self, packets: Any) -> None:
        av = require("av")
        try:
            for packet in packets:
                self._container.mux(packet)
        except (OSError, av.error.FFmpegError) as exc:
            self.last_error = _reason(exc)
            raise DataError(f"{self.path}: writing the video failed ({self.last_error})"
                            ) from None

    def close(self) -> None:
        """Flush the encoder and finish the file (playable afterwards); idempotent.

        Raises:
            DataError: finishing the file failed (not raised again after a failed write,
                whose error was already reported).
        """
        if self._closed:
            return
        self._closed = True
        failed_before = self.last_error is not None
        av = require("av")
        try:
            if not failed_before:
                self._mux(self._stream.encode(None))
        except DataError:
            with contextlib.suppress(Exception):
                self._container.close()
            raise
        try:
            self._container.close()
        except (OSError, av.error.FFmpegError) as exc:
            if not failed_before:
                self.last_error = _reason(exc)
                raise DataError(f"{self.path}: finishing the video failed "
                                f"({self.last_error})") from None


def _reason(exc: BaseException) -> str:
    """``[Errno 27] File too large`` from an OS or FFmpeg error, without the file name
    (messages name the path themselves)."""
    errno, text = getattr(exc, "errno", None), getattr(exc, "strerror", None)
    if errno and text:
        return f"[Errno {errno}] {text}"
    return str(exc) or type(exc).__name__
