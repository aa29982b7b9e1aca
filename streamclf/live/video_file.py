"""The ``--output`` overlay video: :class:`VideoFileSink`, a frame sink that writes a file.

``.mp4`` is H.264 in yuv420p with the source's pixel aspect, written by
:class:`~streamclf.media.encode.H264Writer` (PyAV), so a browser plays it (OpenCV's ``mp4v``
is MPEG-4 Part 2, which Chromium does not). ``.avi`` stays MJPG through OpenCV.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import ConfigError, DataError
from streamclf.media.encode import H264Writer

__all__ = ["VideoFileSink"]

_FOURCC = {".mp4": "avc1", ".avi": "MJPG"}  # .mp4: H264Writer (PyAV), .avi: OpenCV


class VideoFileSink:
    """Writes frames to ``path`` (folder created) at ``fps`` (> 0): .mp4 is H.264 yuv420p
    with the source's pixel aspect ``sar`` (:class:`~streamclf.media.encode.H264Writer`: a
    browser plays it), .avi is MJPG (OpenCV).

    ``size`` is ``(width, height)``; frames of another size are resized to it. Raises
    ConfigError for a bad ``fps``/``size``, DataError for another extension or a file that
    cannot be opened for writing, and from :meth:`write` once the file stops taking data (disk
    full, file size limit, I/O error: the message names the path and the OS error).
    Thread-safety: not thread-safe; one writer thread.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int],
                 sar: tuple[int, int] = (1, 1)) -> None:
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be a number > 0, got {fps!r}")
        if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
            raise ConfigError(f"size must be (width, height) positive integers, got {size!r}")
        self.path, self.size = Path(path), (int(size[0]), int(size[1]))
        fourcc = _FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise DataError(f"{self.path}: unsupported extension; use .mp4 or .avi")
        cv2 = cv2_module()
        with contextlib.suppress(OSError):  # if this fails, the writer below fails to open
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames_written, self._closed = 0, False
        self._h264 = None if fourcc != "avc1" else H264Writer(self.path, self.size, fps, sar=sar)
        if self._h264 is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc),
                                           float(fps), self.size)
            if not self._writer.isOpened():
                self._writer.release()
                raise DataError(f"{self.path}: cannot open for writing (codec {fourcc}, "
                                f"{fps} fps)")
        self._check_every, self._checked_size = max(30, round(2 * fps)), -1

    def write(self, image: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame.

        Raises:
            DataError: after :meth:`close`, or when the file stops taking data.
        """
        if self._closed:
            raise DataError(f"{self.path}: write after close")
        if self._h264 is not None:  # raises DataError naming the path and the OS error
            self._h264.write(image)
            self.frames_written += 1
            return
        cv2 = cv2_module()
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        ok = self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames_written += 1
        # OpenCV >= 5 returns False when FFmpeg could not write; 4.x returns None and only
        # logs, so there the file is checked every ~2 s of video: not grown -> probe it.
        failed = ok is False or (ok is None and self.frames_written % self._check_every == 0
                                 and self._stalled())
        if failed:
            raise DataError(f"{self.path}: writing the overlay video failed "
                            f"({self._os_error() or 'the encoder reported a failed write'})")

    def _stalled(self) -> bool:
        size = self.path.stat().st_size if self.path.exists() else -1
        stalled, self._checked_size = size == self._checked_size, size
        return stalled and self._os_error() is not None

    def _os_error(self) -> str | None:
        """Why the file takes no data: the OS error of appending one byte (then cut off
        again), e.g. ``[Errno 27] File too large``; None if the append works."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            return str(exc)
        try:
            size = os.fstat(fd).st_size
            os.write(fd, b"\0")
            os.ftruncate(fd, size)
        except OSError as exc:
            return str(exc)
        finally:
            os.close(fd)
        return None

    def close(self) -> None:
        """Finish the file (playable afterwards); idempotent."""
        self._closed = True
        if self._h264 is not None:
            self._h264.close()  # idempotent; raises DataError if the file cannot be finished
        else:
            self._writer.release()  # a second release is a no-op
