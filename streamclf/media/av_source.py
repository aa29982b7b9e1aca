"""Files, RTSP and HTTP feeds decoded with PyAV: frames kept as decoded, converted on demand.

:class:`AVDecoder` is the one PyAV reading loop (open with bounded timeouts, demux, decode,
timestamps, errors); :class:`PyAVSource` puts it behind the
:class:`~streamclf.media.sources.FrameSource` interface for the live engine, and
:mod:`streamclf.media.video` uses it for ``classify``, ``evaluate`` and training.

Why PyAV and not OpenCV for these (measured on the 2-core VM, 956x720 H.264 at 30 fps, CPU ms
per frame): decoding alone costs 0.67-0.82 ms with PyAV (one decoder thread), while
``cv2.VideoCapture.read()`` costs 1.19-1.30 ms because it always converts to BGR, and
``read`` + ``cvtColor`` + resize 1.59-1.76 ms; PyAV keeps the YUV frame and converts only
the frames a window samples (0.3-1.1 ms each, :mod:`streamclf.media.picture`). Beyond speed:

* **Errors.** FFmpeg's error is raised (``InvalidDataError`` for corrupt data,
  ``EOFError`` at the end, a timeout as its own error), where OpenCV's ``read()`` only
  returns False; a file that breaks off is told apart from one that ends.
* **Timeouts.** ``av.open(timeout=(open, read))`` bounds every blocking call; the
  transport (``rtsp_transport``) and probe sizes are plain options, with no process-wide
  environment variable to set and restore.
* **Time.** The presentation time of every frame, the value OpenCV's ``CAP_PROP_POS_MSEC``
  reports, so windows are cut exactly as before (AVI files, whose PTS are guesses, are timed
  by DTS, as OpenCV times them).

OpenCV stays for webcams (V4L2, which PyAV's FFmpeg build reaches only through ``v4l2``
with no control over the camera's properties), for display and for drawing.

Thread-safety: one reading thread; ``close()`` from any thread (a close during a read
closes the container when that read returns: FFmpeg's context must not be freed under a
running call).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from streamclf.errors import SourceError
from streamclf.masking import mask_credentials
from streamclf.media.picture import AVPicture
from streamclf.media.sources import check_file
from streamclf.types import SourceInfo

__all__ = ["AVDecoder", "PyAVSource"]

#: Decoding that stops before this share of the declared length counts as truncation.
COMPLETE_SHARE = 0.9
#: Packets in a row the decoder may reject before a live feed counts as lost (single bad
#: packets happen on a lossy network; the decoder conceals them). A file has no such slack:
#: its first rejected packet or damaged frame is a corrupt file.
MAX_BAD_PACKETS = 100
# Small probe: first frame in ~0.1 s instead of ~0.9 s (and no burst of buffered frames).
_RTSP_OPTIONS = {"analyzeduration": "100000", "probesize": "32768"}
_LIVE = ("rtsp", "http")


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency
        raise SourceError("PyAV is not installed: pip install av") from exc
    return av


class AVDecoder:
    """One opened container's video stream, decoded frame by frame.

    Args:
        target: a file path or an ``rtsp://``/``http(s)://`` URL.
        kind: ``"file" | "rtsp" | "http"``.
        transport: RTSP lower transport, ``"tcp"`` or ``"udp"``.
        open_timeout_ms, read_timeout_ms: FFmpeg's bounds on opening and on each read.
        threads: decoder threads (1: decode on the calling thread only, the cheapest in CPU
            and the right choice with many cameras on few cores; 0: FFmpeg picks).

    ``frames()`` yields ``(VideoFrame, ts_seconds)`` in decoding order with ``ts`` the
    frame's presentation time from the stream's start, strictly increasing (a repeated or
    missing stamp becomes the previous one plus a frame period).

    Raises:
        SourceError: cannot open (missing or empty file, no video stream, unreachable URL,
            timeout; the message names the target with its password masked).
    """

    def __init__(self, target: str, kind: str = "file", *, transport: str = "tcp",
                 open_timeout_ms: int = 5000, read_timeout_ms: int = 3000,
                 threads: int = 1, prime: bool = True) -> None:
        if transport not in ("tcp", "udp"):
            raise SourceError(f"bad RTSP transport {transport!r}; use 'tcp' or 'udp'")
        self.name = mask_credentials(str(target))
        self.kind = kind
        if kind == "file":
            check_file(str(target))
        av = _av()
        options: dict[str, str] = {}
        if kind == "rtsp":
            options = {"rtsp_transport": transport, **_RTSP_OPTIONS}
        t0 = time.monotonic()
        try:
            container = av.open(str(target), options=options, metadata_errors="replace",
                                timeout=(open_timeout_ms / 1000.0, read_timeout_ms / 1000.0))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            what = ("not a readable video" if kind == "file" else
                    f"unreachable, refused or no video within {open_timeout_ms} ms")
            raise SourceError(f"cannot open {kind} source {self.name}: {what} "
                              f"({_reason(exc)})") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"cannot open {kind} source {self.name}: it has no video stream")
        self.open_s = time.monotonic() - t0
        self._container = container
        stream = container.streams.video[0]
        stream.thread_count = max(0, int(threads))
        stream.thread_type = "NONE" if threads == 1 else "AUTO"
        self._stream = stream
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate  # OpenCV's CAP_PROP_FPS
        fps = float(rate) if rate else 0.0
        self.fps = fps if math.isfinite(fps) and 0.0 < fps <= 1000.0 else 0.0
        self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
        sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        self.sar = (sar.numerator, sar.denominator) if sar else (1, 1)
        self._base = stream.time_base
        self._start = stream.start_time or 0
        # AVI stores no presentation times (its PTS are guesses, out of order with
        # B-frames): its frames are timed by DTS, as OpenCV times them.
        self._by_dts = container.format.name == "avi"
        self.bad_packets = 0  # packets the decoder rejected (skipped, like concealment)
        self._skip_until = 0.0  # see skip_until
        self.rotation = 0  # clockwise degrees, from the first frame's display matrix
        self._iter = self._decode()
        self._first: tuple[Any, float] | None = None
        if not prime:  # (a reader of packets only: the size is as coded, not as shown)
            return
        try:  # the first frame: the rotation (and so the displayed size), and a real video
            self._first = next(self._iter)
        except StopIteration:
            self._first = None
        except SourceError:
            container.close()
            raise
        if self._first is not None and self._first[0].rotation:
            self.rotation = int(-self._first[0].rotation) % 360
            if self.rotation in (90, 270):
                self.width, self.height = self.height, self.width

    @property
    def frame_count(self) -> int:
        """Frames the container declares: its count, else its duration times the rate,
        rounded (OpenCV's ``CAP_PROP_FRAME_COUNT``); 0 when it declares neither."""
        if self._stream.frames:
            return int(self._stream.frames)
        duration = self._container.duration
        if duration and self.fps:
            return max(0, math.floor(duration / 1_000_000 * self.fps + 0.5))
        return 0

    @property
    def declared_s(self) -> float:
        """The length the container declares, ``frame_count / fps`` (0.0: none declared)."""
        return self.frame_count / self.fps if self.fps else 0.0

    def truncation(self, reached_s: float, until_s: float = math.inf) -> str | None:
        """Why decoding that ended at ``reached_s`` (the last frame's time plus a frame)
        while frames up to ``until_s`` were wanted means a damaged file: it stopped before
        :data:`COMPLETE_SHARE` of the declared length; None when it did not."""
        declared = self.declared_s
        if declared > 0 and not reached_s >= COMPLETE_SHARE * min(declared, until_s):
            return (f"{self.name}: corrupt or truncated video: decoding stopped at "
                    f"{max(reached_s, 0.0):.2f} s of {declared:.2f} s")
        return None

    def _seconds(self, stamp: int) -> float:
        """A stream timestamp as seconds from the stream's start."""
        return float((stamp - self._start) * self._base)

    def data_end(self) -> float:
        """How far the file's packets reach, in seconds of media time (demuxed, not decoded:
        ~100x cheaper than decoding); reading stops at the first damaged packet. Use on a
        decoder made with ``prime=False`` that has decoded nothing."""
        av = _av()
        end = 0.0
        try:
            for packet in self._container.demux(self._stream):
                stamp = packet.dts if self._by_dts or packet.pts is None else packet.pts
                if stamp is not None and packet.size:
                    end = max(end, self._seconds(stamp))
        except (av.FFmpegError, OSError):
            pass
        return end

    def skip_until(self, seconds: float) -> None:
        """Do not decode the frames no other frame refers to while the frames come before
        ``seconds`` (they are not output at all); every later frame decodes as it would
        have (reference frames are all decoded), so its pixels and time are exact.

        Why not seek to the keyframe before ``seconds``: measured on the 36 files of
        ``../shared/data``, a seek changed the pixels of the clips of 4 (an H.264 file whose
        keyframes are recovery points, not IDR frames, two MPEG-4 AVIs, a GIF): frames after
        the keyframe still refer to frames before it. And their keyframes are 7-10 s apart,
        so the seek landed at 0 for the others.
        """
        self._skip_until = seconds if self._stream.codec_context.name != "gif" else 0.0

    def frames(self) -> Iterator[tuple[Any, float]]:
        """Decoded frames with their presentation times (see the class docstring); call once.

        Raises:
            SourceError: corrupt data the demuxer cannot get past, too many rejected
                packets in a row, a network error or timeout.
        """
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._iter

    def _decode(self) -> Iterator[tuple[Any, float]]:
        av = _av()
        period = 1.0 / (self.fps or 30.0)
        last = -math.inf
        bad_run = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.EOFError:
                return
            except (av.FFmpegError, OSError) as exc:
                raise SourceError(self._failure(exc, last)) from None
            if self._skip_until > 0:  # decided before each packet: its frame's own time
                stamp = None if self._by_dts else packet.pts
                early = stamp is not None and self._seconds(stamp) < self._skip_until - period
                self._stream.codec_context.skip_frame = "NONREF" if early else "DEFAULT"
                if stamp is not None and not early:
                    self._skip_until = 0.0  # the wanted frames from here on
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                bad_run += 1
                self.bad_packets += 1
                if self.kind == "file" or bad_run > MAX_BAD_PACKETS:
                    raise SourceError(self._failure(exc, last)) from None
                continue
            bad_run = 0
            for frame in decoded:
                if frame.is_corrupt and self.kind == "file":
                    raise SourceError(self._failure(None, last))
                stamp = frame.dts if self._by_dts or frame.pts is None else frame.pts
                ts = self._seconds(stamp) if stamp is not None else math.nan
                if not (math.isfinite(ts) and ts > last):
                    ts = last + period if math.isfinite(last) else 0.0
                last = ts
                yield frame, ts

    def _failure(self, exc: BaseException | None, last: float) -> str:
        """The message for a failure after ``last`` (seconds) of good frames."""
        why = _reason(exc) if exc is not None else "the decoder marked a frame damaged"
        if self.kind == "file":
            where = f"{max(last, 0.0):.2f} s" if math.isfinite(last) else "the start"
            return f"{self.name}: corrupt or truncated video: damaged data after {where} ({why})"
        return f"{self.kind} stream lost: {self.name}: {why}"

    def close(self) -> None:
        self._container.close()


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for an error, without the file name PyAV appends (it may hold a URL)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_credentials(str(text).split(": '")[0].strip().rstrip(";"))


class PyAVSource:
    """A file or an RTSP/HTTP feed as a :class:`~streamclf.media.sources.FrameSource` of
    :class:`~streamclf.media.picture.AVPicture` frames (YUV as decoded).

    Args: as :class:`AVDecoder` (``threads`` as its ``threads``).

    ``read(timeout_s)``: FFmpeg's read timeout is fixed at open (``read_timeout_ms``); the
    frame watchdog (:class:`~streamclf.media.watchdog.WatchdogSource`) bounds a live read.

    Raises:
        SourceError: on open as :class:`AVDecoder`; on read, a lost or timed-out feed, a
            corrupt file, or a file that ends well before its declared length (truncated).
    """

    def __init__(self, target: str, kind: str = "file", *, transport: str = "tcp",
                 open_timeout_ms: int = 5000, read_timeout_ms: int = 3000,
                 threads: int = 1) -> None:
        self._decoder = AVDecoder(target, kind, transport=transport,
                                  open_timeout_ms=open_timeout_ms,
                                  read_timeout_ms=read_timeout_ms, threads=threads)
        d = self._decoder
        self.open_s = d.open_s
        self.info = SourceInfo(name=d.name, kind=kind, fps=d.fps, width=d.width,
                               height=d.height, is_live=kind in _LIVE, sar=d.sar)
        self._frames = d.frames()
        self._lock = threading.Lock()  # held during read(); guards the container
        self._closing = False
        self._closed = False
        self._eof = False
        self._last = -math.inf

    def read(self, timeout_s: float = 5.0) -> tuple[AVPicture, float] | None:
        with self._lock:
            if self._eof:
                return None
            if self._closed or self._closing:
                raise SourceError(f"{self.info.name}: source is closed")
            try:
                got = next(self._frames, None)
            finally:
                if self._closing:
                    self._close_locked()
            if self._closing:
                raise SourceError(f"{self.info.name}: source is closed")
            if got is None:
                self._end()
                return None
            frame, ts = got
            self._last = ts
            return AVPicture(frame, self._decoder.rotation), ts

    def _end(self) -> None:
        """End of stream (lock held): a feed that ends is lost; a file that ends well short
        of its declared length is truncated."""
        if self.info.is_live:
            self._close_locked()
            raise SourceError(f"{self.info.kind} stream lost: {self.info.name}: the server "
                              "ended the stream")
        self._eof = True
        problem = self._decoder.truncation(self._last + 1.0 / (self.info.fps or 30.0))
        if problem:
            raise SourceError(problem)

    def _close_locked(self) -> None:
        if not self._closed:
            self._closed = True
            self._decoder.close()

    def close(self) -> None:
        self._closing = True
        if self._lock.acquire(blocking=False):  # else the reader closes after its read
            try:
                self._close_locked()
            finally:
                self._lock.release()
