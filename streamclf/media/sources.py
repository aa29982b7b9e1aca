"""Frame sources: webcams, RTSP/HTTP feeds, files and a synthetic pattern behind one interface.

A :class:`FrameSource` hands out ``(picture, media_ts)`` pairs: ``picture`` is a
:class:`~streamclf.media.picture.Picture` (the decoded frame; ``picture.rgb()`` is its
``(H, W, 3)`` uint8 RGB image, converted only when asked), ``media_ts`` the source's own
presentation time in seconds. ``None`` means a clean end of
stream (end of file); every failure (cannot open, timeout, stream lost) raises
:class:`~streamclf.errors.SourceError`, whose message never contains a URL's password.

Example::

    src = open_source("rtsp://user:pass@cam/stream")   # src.info.name == "rtsp://user:***@cam/stream"
    try:
        picture, ts = src.read(timeout_s=5.0)
    finally:
        src.close()

Thread-safety: a source is read by one thread; ``close()`` may be called from any thread at any
time (also while ``read()`` blocks) and never blocks for long.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import SourceError
from streamclf.masking import mask_credentials
from streamclf.media.encode import normal_sar
from streamclf.media.fakes import FakeSource
from streamclf.media.picture import ArrayPicture, Picture
from streamclf.paths import input_file_problem
from streamclf.types import SourceInfo

__all__ = [
    "DECODERS",
    "LIVE_KINDS",
    "FakeSource",
    "FrameSource",
    "OpenCVSource",
    "SyntheticSource",
    "check_file",
    "open_source",
    "parse_spec",
    "synthetic_index",
]

#: Source kinds that deliver frames in real time (timestamps come from the capture clock).
LIVE_KINDS = frozenset({"webcam", "rtsp", "http"})
#: Who decodes a file or a feed: ``auto`` (PyAV; OpenCV for webcams), ``pyav`` or ``opencv``.
DECODERS = ("auto", "pyav", "opencv")
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
#: ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is process-global: it is set, used and restored under this.
_ENV_LOCK = threading.Lock()
# Small probe: first frame in ~0.1 s instead of ~0.9 s (and no burst of buffered frames).
_RTSP_OPTIONS = "analyzeduration;100000|probesize;32768"
#: The highest frame rate a source may declare (above it the rate is taken as unknown).
MAX_FPS = 240.0
_SYNTH_SPEC = re.compile(r"synthetic(?::(\d{1,5})x(\d{1,5})(?:@(\d{1,6}(?:\.\d{1,6})?))?)?")


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields RGB frames with media timestamps.

    ``info`` describes the source (``name`` is credential-free). ``read(timeout_s)`` returns
    ``(Picture, media_ts_seconds)``, ``None`` at a clean end of stream, or raises
    ``SourceError`` (failure, timeout, lost stream, closed). ``close()`` is idempotent, callable
    from another thread while ``read()`` blocks, and returns promptly.
    """

    info: SourceInfo

    def read(self, timeout_s: float) -> tuple[Picture, float] | None: ...

    def close(self) -> None: ...


def parse_spec(spec: str | int) -> tuple[str, str | int]:
    """Classify a source spec without opening it: ``(kind, target)``.

    ``0``/``"0"`` -> ``("webcam", 0)``; ``"/dev/video2"`` -> ``("webcam", "/dev/video2")``;
    ``rtsp://``, ``http(s)://`` -> ``("rtsp"|"http", url)``; ``"synthetic[:WxH[@fps]]"`` ->
    ``("synthetic", spec)``; anything else is a file path.

    Raises:
        SourceError: a URL scheme other than rtsp/rtsps/http/https (named in the message).
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return "webcam", int(spec)
    spec = spec.strip()
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", spec)
    if scheme:
        name = scheme.group(1).lower()
        if name in ("rtsp", "rtsps"):
            return "rtsp", spec
        if name in ("http", "https"):
            return "http", spec
        if name == "file":
            return "file", spec[len("file://"):]
        raise SourceError(f"unsupported URL scheme {name!r} in {mask_credentials(spec)!r}; "
                          "use rtsp://, rtsps://, http://, https://, a file path, a webcam "
                          "index or 'synthetic[:WxH@fps]'")
    if spec.startswith("/dev/video"):
        return "webcam", spec
    if spec.split(":")[0] == "synthetic":
        return "synthetic", spec
    return "file", spec


def open_source(spec: str | int, **options: Any) -> FrameSource:
    """Open a source from its spec (see :func:`parse_spec`).

    Files, RTSP and HTTP feeds are decoded with PyAV
    (:class:`~streamclf.media.av_source.PyAVSource`, frames kept as decoded and converted only
    when used; why, with numbers, in its module); webcams are read with OpenCV
    (:class:`OpenCVSource`). ``decoder`` picks one: ``"auto"`` (that rule), ``"pyav"`` or
    ``"opencv"`` (a webcam is always OpenCV's). The other ``options`` go to the source's
    constructor: ``transport`` (``"tcp"`` default or ``"udp"``), ``open_timeout_ms``,
    ``read_timeout_ms``, and for PyAV ``threads`` (decoder threads, default 1); for
    :class:`SyntheticSource` ``frames`` and ``live``.

    Raises:
        SourceError: unknown scheme, missing file, bad synthetic spec, or the source cannot be
            opened (message with credentials masked).
    """
    kind, target = parse_spec(spec)
    if kind == "synthetic":
        m = _SYNTH_SPEC.fullmatch(str(target))
        if not m:
            shown = repr(target) if len(str(target)) <= 80 else repr(str(target)[:77] + "...")
            raise SourceError(f"bad synthetic spec {shown}; use 'synthetic' or "
                              "'synthetic:WIDTHxHEIGHT@FPS' (e.g. synthetic:640x480@30)")
        w, h, fps = m.groups()
        return SyntheticSource(int(w or 640), int(h or 480), float(fps or 30.0), **options)
    decoder = options.pop("decoder", "auto")
    if decoder not in DECODERS:
        raise SourceError(f"bad decoder {decoder!r}; use one of {', '.join(DECODERS)}")
    threads = options.pop("threads", 1)
    if kind == "webcam" or decoder == "opencv":
        return OpenCVSource(target, kind=kind, **options)
    from streamclf.media.av_source import PyAVSource

    return PyAVSource(str(target), kind=kind, threads=threads, **options)


def check_file(path: str) -> None:
    """Refuse a file source before a decoder opens it (a FIFO would block the decoder).

    Raises:
        SourceError: ``path`` is missing, not a regular readable file, or empty.
    """
    name = mask_credentials(path)
    problem = input_file_problem(path)
    if problem:
        raise SourceError(f"{name}: file not found" if problem == "file not found" else
                          f"{name} {problem}")
    if Path(path).stat().st_size == 0:
        raise SourceError(f"{name}: empty file (0 bytes)")


class OpenCVSource:
    """A webcam, RTSP/HTTP feed or file read with OpenCV (FFmpeg backend for URLs and files).

    Args:
        target: webcam index or ``/dev/videoN``, URL, or file path.
        kind: ``"webcam" | "rtsp" | "http" | "file"`` (guessed from ``target`` if None).
        transport: RTSP lower transport, ``"tcp"`` (default, survives NAT and loss) or ``"udp"``.
        open_timeout_ms, read_timeout_ms: FFmpeg timeouts, so that no call blocks forever. A
            hung H.264 stream is detected after about 2-3 read timeouts (decoder drains first).
            Webcams use the V4L2 backend (FFmpeg cannot open a camera index), which ignores
            them (a webcam read is bounded by the V4L2 backend's own select() timeout).

    ``read(timeout_s)``: the FFmpeg read timeout is fixed at open (``read_timeout_ms``); the
    argument cannot shorten it (:class:`~streamclf.media.watchdog.WatchdogSource` can). Media
    timestamps are forced strictly increasing.

    Raises:
        SourceError: on open, if the target cannot be opened (or is an empty file); on read, if
            the stream is lost or times out (a failed OpenCV capture never recovers: reopen to
            reconnect), or a file ends well before its declared length (corrupt or truncated).

    Thread-safety: one reading thread; ``close()`` from any thread (a close during a read
    releases the capture when that read returns).
    """

    def __init__(self, target: str | int, kind: str | None = None, transport: str = "tcp",
                 open_timeout_ms: int = 5000, read_timeout_ms: int = 3000) -> None:
        kind = kind or parse_spec(target)[0]
        if transport not in ("tcp", "udp"):
            raise SourceError(f"bad RTSP transport {transport!r}; use 'tcp' or 'udp'")
        name = mask_credentials(str(target))
        if kind == "file":
            check_file(str(target))
        cv2 = cv2_module()
        self._lock = threading.Lock()  # held during read(); guards the capture
        self._closing = False
        self._read_timeout_s = read_timeout_ms / 1000.0
        t0 = time.monotonic()
        if kind == "webcam":
            backend = cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").is_dir() else cv2.CAP_ANY
            cap = cv2.VideoCapture(target, backend)
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)]
            # Setting the variable at all drops OpenCV's default TCP: always name the transport.
            opts = f"rtsp_transport;{transport}" + (f"|{_RTSP_OPTIONS}" if kind == "rtsp" else "")
            with _ENV_LOCK:
                old = os.environ.get(_FFMPEG_ENV)
                os.environ[_FFMPEG_ENV] = opts
                try:
                    cap = cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, params)
                finally:
                    if old is None:
                        os.environ.pop(_FFMPEG_ENV, None)
                    else:
                        os.environ[_FFMPEG_ENV] = old
        if not cap.isOpened():
            cap.release()
            what = {"file": "not a readable video", "webcam": "no such camera or busy"}.get(
                kind, f"unreachable, refused or no video within {open_timeout_ms} ms")
            raise SourceError(f"cannot open {kind} source {name}: {what}")
        self.open_s = time.monotonic() - t0
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if math.isfinite(fps) and 0.0 < fps <= 1000.0 else 0.0
        self.info = SourceInfo(name=name, kind=kind, fps=self._fps,
                               width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                               height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
                               is_live=kind in LIVE_KINDS, sar=normal_sar(
                                   (cap.get(cv2.CAP_PROP_SAR_NUM), cap.get(cv2.CAP_PROP_SAR_DEN))))
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0) if kind == "file" else 0.0
        # What the container declares: decoding that ends well short of it is a damaged file.
        self._declared_s = count / self._fps if self._fps and math.isfinite(count) else 0.0
        self._last_ts = -math.inf
        self._eof = False

    def read(self, timeout_s: float = 5.0) -> tuple[Picture, float] | None:
        cv2 = cv2_module()
        with self._lock:
            cap = self._cap
            if self._eof:
                return None
            if cap is None or self._closing:
                raise SourceError(f"{self.info.name}: source is closed")
            t0 = time.monotonic()
            ok, bgr = cap.read()
            waited = time.monotonic() - t0
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if ok else math.nan
            if self._closing or not ok:
                self._release()
        if self._closing:
            raise SourceError(f"{self.info.name}: source is closed")
        if not ok:
            if not self.info.is_live:
                self._eof = True
                reached = self._last_ts + 1.0 / (self._fps or 30.0)
                if self._declared_s > 0 and not reached >= 0.9 * self._declared_s:
                    raise SourceError(
                        f"{self.info.name}: corrupt or truncated video: decoding stopped at "
                        f"{max(reached, 0.0):.2f} s of {self._declared_s:.2f} s")
                return None
            why = (f"no frame for {waited:.1f} s (read timeout)"
                   if waited >= 0.9 * self._read_timeout_s else "connection closed or read failed")
            raise SourceError(f"{self.info.kind} stream lost: {self.info.name}: {why}")
        step = 1.0 / self._fps if self._fps else 1.0 / 30.0
        ts = pos if math.isfinite(pos) and pos > self._last_ts else (
            self._last_ts + step if math.isfinite(self._last_ts) else 0.0)
        self._last_ts = ts
        return ArrayPicture(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), ts

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def close(self) -> None:
        self._closing = True
        if self._lock.acquire(blocking=False):  # else the reader releases after its read
            try:
                self._release()
            finally:
                self._lock.release()


_BITS = 24  # frame-index bits drawn in the synthetic pattern's top band


class SyntheticSource:
    """A moving test pattern with the frame index drawn in; needs only numpy.

    Frame ``n`` (timestamp ``n / fps``) is a diagonal colour gradient shifted by ``4 n`` pixels,
    a white square moving left to right, and a top band of 24 black/white cells holding ``n``
    in binary (read it back with :func:`synthetic_index`). Content is a pure function of ``n``.

    Args:
        width, height: frame size (24..7680 x 16..4320).
        fps: frames per second (0 < fps <= :data:`MAX_FPS`).
        frames: number of frames before end of stream (None = endless).
        live: if True, ``read()`` waits until frame ``n`` is due (``n / fps`` after the first
            read), like a camera; otherwise frames come as fast as they are read, like a file.

    Thread-safety: one reading thread; ``close()`` from any thread wakes a waiting ``read()``.
    """

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0,
                 frames: int | None = None, live: bool = False) -> None:
        if not (_BITS <= width <= 7680 and 16 <= height <= 4320 and 0 < fps <= MAX_FPS) \
                or (frames is not None and frames < 0):
            raise SourceError(f"bad synthetic source {width}x{height}@{fps:g} frames={frames}: "
                              f"need a width of {_BITS} to 7680, a height of 16 to 4320, fps "
                              f"above 0 and at most {MAX_FPS:g}, frames >= 0")
        self.info = SourceInfo(name=f"synthetic:{width}x{height}@{fps:g}", kind="synthetic",
                               fps=float(fps), width=width, height=height, is_live=live)
        self._frames = frames
        self._n = 0
        self._t0: float | None = None
        self._closed = threading.Event()
        y, x = np.mgrid[0:height, 0:width]
        self._diag = (x + y).astype(np.int32)

    def read(self, timeout_s: float = 5.0) -> tuple[Picture, float] | None:
        if self._closed.is_set():
            raise SourceError(f"{self.info.name}: source is closed")
        n = self._n
        if self._frames is not None and n >= self._frames:
            return None
        if self.info.is_live:
            now = time.monotonic()
            self._t0 = now if self._t0 is None else self._t0
            wait = self._t0 + n / self.info.fps - now
            if wait > timeout_s:
                raise SourceError(f"{self.info.name}: no frame within {timeout_s:.1f} s")
            if wait > 0 and self._closed.wait(wait):
                raise SourceError(f"{self.info.name}: source is closed")
        self._n += 1
        image = synthetic_frame(n, self.info.width, self.info.height, self._diag)
        return ArrayPicture(image), n / self.info.fps

    def close(self) -> None:
        self._closed.set()


def synthetic_frame(n: int, width: int, height: int, diag: np.ndarray | None = None) -> np.ndarray:
    """Frame ``n`` of :class:`SyntheticSource` as ``(height, width, 3)`` uint8 RGB."""
    if diag is None:
        y, x = np.mgrid[0:height, 0:width]
        diag = (x + y).astype(np.int32)
    base = diag + 4 * n
    img = np.stack([base, base * 2 + 85, 255 - base], axis=-1) % 256
    img = img.astype(np.uint8)
    side = max(4, height // 4)
    x0 = (8 * n) % max(1, width - side)
    img[height // 2 - side // 2: height // 2 + side // 2, x0: x0 + side] = 255
    band, cell = max(2, height // 16), width // _BITS
    for bit in range(_BITS):
        img[:band, bit * cell: (bit + 1) * cell] = 255 if (n >> bit) & 1 else 0
    return img


def synthetic_index(image: np.ndarray) -> int:
    """Read back the frame index drawn by :class:`SyntheticSource` (survives mild JPEG loss)."""
    h, w = image.shape[:2]
    band, cell = max(2, h // 16), w // _BITS
    row = image[band // 2, :, :].mean(axis=-1)
    return sum(1 << b for b in range(_BITS) if row[b * cell + cell // 2] > 127)
