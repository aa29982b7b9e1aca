"""The capture thread: reads a source, stamps frames, paces files, reconnects live feeds.

One :class:`CaptureThread` per stream. It turns ``(picture, media_ts)`` pairs from a
:class:`~streamclf.media.sources.FrameSource` into :class:`~streamclf.types.Frame` objects and hands
them to ``on_frame``; status changes go to ``on_event(type, fields)``:

=====================  ======================================================================
``source_opened``      ``source`` (masked name), ``kind``, ``fps``, ``width``, ``height``,
                       ``is_live``, ``open_s``: a source was opened (first open and reconnects)
``source_lost``        ``reason``, ``frames_read``: a live source failed; reconnecting follows
``reconnect_failed``   ``attempt``, ``reason``, ``retry_in_s`` (None when giving up)
``source_restored``    ``attempts``, ``downtime_s``: a reopened source delivered a frame
``error``              ``error``: the thread gives up (``.error`` is set); it then ends
=====================  ======================================================================

``Frame.ts``: live sources get ``clock()`` at read; files paced ``"realtime"`` are released at
their media time and get ``clock()``; files read ``"fast"`` get their media time (increasing
across ``loop`` replays). ``Frame.media_ts`` is, whatever the pace, the file's media time (from
its first frame, increasing across replays) or a live source's capture time since its first
frame (across reconnects: an outage leaves a gap). ``seq`` runs from 0 without gaps across
reconnects and replays.
Thread-safety: ``start``/``stop`` and the properties from any thread; ``on_frame`` and
``on_event`` are called on the capture thread.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamclf.errors import ConfigError, SourceError, StreamclfError
from streamclf.masking import mask_credentials
from streamclf.media.reach import backoff_wait
from streamclf.media.sources import FrameSource
from streamclf.media.watchdog import WatchdogSource
from streamclf.types import Frame, SourceInfo

__all__ = ["CaptureThread"]

log = logging.getLogger(__name__)

PACES = ("realtime", "fast")
_RETRY_WAIT_S = 0.005  # back-pressure: how long to wait before offering a refused frame again


class _Stopped(Exception):
    """The stop event was set (internal control flow)."""


class CaptureThread:
    """Reads one source on a daemon thread until stopped, end of file, or giving up.

    Args:
        source_factory: opens a new source (called at start, on reconnect, on loop replay).
        on_frame: receives each ``Frame`` (its ``picture`` not converted); returns False to
            refuse it (lossless back-pressure: the frame is offered again after a short wait
            until accepted or stopped), True to take it.
        stream_id: names the thread and the stream in log messages.
        pace: ``"realtime"`` (files are released at their frame rate) or ``"fast"`` (as fast
            as ``on_frame`` accepts, timestamps from the file). Live sources ignore it.
        loop: at end of stream, reopen through ``source_factory`` and go on (files).
        on_event: receives ``(type, fields)`` status events (table in the module docstring).
        clock: monotonic clock for ``Frame.ts`` and pacing; ``wall_clock`` for ``Frame.wall_ts``.
        read_timeout_s: the frame watchdog: a live source that delivers no frame for this long
            is lost (``source_lost``, then reconnecting), even while its driver's read is still
            blocked (live sources are read through a
            :class:`~streamclf.media.watchdog.WatchdogSource`). Files get it passed to ``read``.
        backoff_initial_s, backoff_max_s, backoff_jitter: wait before reconnect attempt k is
            ``min(initial * 2**k, max)``, times a random factor in ``1 ± jitter``.
        max_reconnects: failed reconnect attempts in a row before giving up (None: never give
            up; 0: give up at the first loss, or at a failed first open).
        retry_first_open: a live camera that cannot be opened at start is treated like one
            lost (``source_lost``, then reconnecting); otherwise that failure ends the thread.
        rng: random source for the jitter (tests pass a seeded one).
        probe: says whether a lost camera's host is reachable again; tried every 0.5 s
            while backing off, a success reopens at once (see :mod:`streamclf.media.reach`).

    Attributes set when the thread ends (``finished`` is set last): ``eof`` (True after a clean
    end of stream without ``loop``), ``error`` (a ``StreamclfError`` when it gave up or
    crashed; None otherwise). A thread stopped by ``stop()`` has neither.

    End of input and delivery: a frame is read, then offered to ``on_frame`` until taken,
    before the next read, so ``finished`` is set only after every frame read has been taken
    (``frames_read`` is then final) - also when the source failed: a file that breaks off
    mid-way (corrupt or truncated) ends with ``error`` set *and* all its frames before the
    failure delivered. ``error`` therefore does not mean that frames were lost; a consumer
    drains by waiting for ``finished``, then until it has used what it was given (e.g. the
    inference worker is idle for the stream), whether ``eof`` or ``error`` is set. The only
    frames not delivered are the one pending when ``stop()`` was called, and the one whose
    ``on_frame`` raised (that ends the thread with ``error``).
    """

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        on_frame: Callable[[Frame], bool],
        stream_id: str,
        pace: str = "realtime",
        loop: bool = False,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        *,
        read_timeout_s: float = 5.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        backoff_jitter: float = 0.2,
        max_reconnects: int | None = None,
        rng: random.Random | None = None,
        retry_first_open: bool = False,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        if pace not in PACES:
            raise ConfigError(f"pace: {pace!r} is not one of {', '.join(PACES)}")
        if max_reconnects is not None and max_reconnects < 0:
            raise ConfigError(f"max_reconnects: {max_reconnects} must be >= 0 or None")
        if not 0 < backoff_initial_s <= backoff_max_s or not 0 <= backoff_jitter < 1:
            raise ConfigError("backoff: need 0 < initial <= max and 0 <= jitter < 1")
        if not read_timeout_s > 0:
            raise ConfigError(f"read_timeout_s: {read_timeout_s} must be > 0")
        self._factory, self._on_frame, self._on_event = source_factory, on_frame, on_event
        self.stream_id, self.pace, self.loop = stream_id, pace, loop
        self._clock, self._wall_clock = clock, wall_clock
        self._read_timeout_s, self.max_reconnects = read_timeout_s, max_reconnects
        self._backoff = (backoff_initial_s, backoff_max_s, backoff_jitter)
        self._rng = rng or random.Random()
        self._retry_first_open, self._probe = retry_first_open, probe
        self._stop_event = threading.Event()
        self.finished = threading.Event()
        self.eof = False
        self.error: StreamclfError | None = None
        self._source: FrameSource | None = None
        self._source_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=4096)
        self._frames_read = 0
        self.reconnects = 0  # successful reconnections
        self.refusals = 0  # times on_frame refused a frame (back-pressure waits)
        self.event_errors = 0  # on_event callbacks that raised
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name=f"capture-{stream_id}",
                                        daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to end, close its source, wait up to ``timeout_s``; True if it
        ended. False: a source call is stuck past the timeout (an FFmpeg read waiting out its
        read timeout); the daemon thread ends once that call returns, and emits nothing more.
        """
        self._stop_event.set()
        with self._source_lock:
            source = self._source
        if source is not None:  # wakes a blocked read; the thread closes it again (idempotent)
            try:
                source.close()
            except Exception:  # a failing close must not prevent stopping
                log.exception("stream %s: closing the source failed", self.stream_id)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def source_info(self) -> SourceInfo | None:
        """The open source's info (None before the first open and after the thread ended)."""
        with self._source_lock:
            return None if self._source is None else self._source.info

    @property
    def frames_read(self) -> int:
        """Frames delivered to ``on_frame`` so far."""
        return self._frames_read

    @property
    def fps(self) -> float:
        """Measured input rate over the last second of ``clock`` time (0.0 when stalled)."""
        now = self._clock()
        with self._stats_lock:
            while self._times and self._times[0] < now - 1.0:
                self._times.popleft()
            if len(self._times) < 2 or self._times[-1] <= self._times[0]:
                return 0.0
            return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    # ------------------------------------------------------------------ thread body
    def _run(self) -> None:
        try:
            self._main()
        except _Stopped:
            pass
        except StreamclfError as exc:  # a user error met by a consumer (a roi off the frame)
            self._fail(exc)
        except Exception as exc:  # a bug or a consumer failure: report it, never die silently
            log.exception("stream %s: capture thread failed", self.stream_id)
            self._fail(StreamclfError(mask_credentials(f"capture failed: {exc!r}")))
        finally:
            self._set_source(None)
            self.finished.set()

    def _main(self) -> None:
        outage: list[float] | None = None  # [clock() at loss, failed attempts] while lost
        try:  # a failure at start is retried only for a live camera (see class docstring)
            source = self._open(fatal=not self._retry_first_open)
            self._emit_opened(source)
        except SourceError as exc:
            if self.max_reconnects == 0:  # reconnecting is off: the open failure ends it
                self._fail(exc)
                return
            reason = mask_credentials(str(exc))
            outage = [self._clock(), 0]
            self._emit("source_lost", reason=reason, frames_read=0)
            log.warning("stream %s: cannot open, reconnecting: %s", self.stream_id, reason)
            source = self._reconnect(outage, reason)
        offset = 0.0  # added to the media time of the current replay
        rebase = False  # a replay started: recompute offset at its first frame
        last_media = -math.inf  # last frame's media time, offset included
        anchor: tuple[float, float] | None = None  # (clock, media) of the first paced frame
        origin: float | None = None  # the first frame's media time (files) or clock (live)
        while True:
            try:
                got = source.read(self._read_timeout_s)
            except SourceError as exc:
                self._check_stop()
                if not source.info.is_live:
                    self._fail(exc)
                    return
                reason = mask_credentials(str(exc))
                if outage is None:
                    outage = [self._clock(), 0]
                    self._emit("source_lost", reason=reason, frames_read=self._frames_read)
                    log.warning("stream %s: source lost: %s", self.stream_id, reason)
                else:  # the reopened source failed before its first frame
                    outage[1] += 1
                    self._emit_failed(int(outage[1]), reason)
                source = self._reconnect(outage, reason)
                continue
            self._check_stop()
            if got is None:  # clean end of stream
                if not self.loop:
                    self.eof = True
                    return
                source = self._open()
                rebase = True
                continue
            picture, media = got
            period = self._period(source)
            if rebase:  # the replay's first frame comes one period after the last one
                offset = (last_media + period - media) if math.isfinite(last_media) else 0.0
                rebase = False
            media = media + offset
            if media <= last_media:
                media = last_media + period
            last_media = media
            if source.info.is_live:
                ts = self._clock()
                origin = ts if origin is None else origin
                media_ts = ts - origin  # live: capture time since the first frame
            else:
                origin = media if origin is None else origin
                media_ts = media - origin  # files: presentation time, whatever the pace
                if self.pace == "fast":
                    ts = media
                else:
                    if anchor is None:
                        anchor = (self._clock(), media)
                    self._wait_until(anchor[0] + media - anchor[1])
                    ts = self._clock()
            if outage is not None:
                self.reconnects += 1
                self._emit("source_restored", attempts=int(outage[1]) + 1,
                           downtime_s=round(self._clock() - outage[0], 3))
                log.info("stream %s: source restored", self.stream_id)
                outage = None
            self._deliver(Frame(seq=self._seq, ts=ts, wall_ts=self._wall_clock(),
                                picture=picture, media_ts=media_ts))

    def _deliver(self, frame: Frame) -> None:
        """Offer ``frame`` until ``on_frame`` takes it (lossless back-pressure) or stop."""
        while not self._on_frame(frame):
            self.refusals += 1
            self._wait(_RETRY_WAIT_S)
        self._seq += 1
        with self._stats_lock:
            self._frames_read += 1
            self._times.append(self._clock())

    # ------------------------------------------------------------------ helpers
    def _open(self, fatal: bool = True) -> FrameSource:
        """Open through the factory; a SourceError here ends the thread with ``.error``
        (``fatal``), or is raised to the caller."""
        try:
            source = self._watched(self._factory())
        except SourceError as exc:
            self._check_stop()
            if not fatal:
                raise
            self._fail(exc)
            raise _Stopped from None
        self._set_source(source)
        self._check_stop()
        return source

    def _reconnect(self, outage: list[float], reason: str) -> FrameSource:
        """Back off and reopen until a source opens; give up after ``max_reconnects`` failures.

        ``outage[1]`` counts failed attempts (updated in place). Returns the opened source.
        """
        self._set_source(None)
        while True:
            failed = int(outage[1])
            if self.max_reconnects is not None and failed >= self.max_reconnects:
                self._fail(SourceError(
                    f"source lost and reconnecting is off (max_reconnects 0): {reason}"
                    if self.max_reconnects == 0 else
                    f"gave up after {failed} failed reconnect attempt(s); last error: {reason}"))
                raise _Stopped
            if backoff_wait(self._stop_event, self._delay(failed), self._probe):
                raise _Stopped  # (the probe of a camera's host cuts the wait short)
            try:
                source = self._watched(self._factory())
            except SourceError as exc:
                self._check_stop()
                outage[1] += 1
                reason = mask_credentials(str(exc))
                self._emit_failed(int(outage[1]), reason)
                continue
            self._set_source(source)
            self._check_stop()
            self._emit_opened(source)
            return source

    @staticmethod
    def _watched(source: FrameSource) -> FrameSource:
        """Live sources are read through the frame watchdog (see ``read_timeout_s``)."""
        return WatchdogSource(source) if source.info.is_live else source

    def _emit_opened(self, source: FrameSource) -> None:
        info = source.info
        self._emit("source_opened", source=mask_credentials(info.name), kind=info.kind,
                   fps=info.fps, width=info.width, height=info.height, is_live=info.is_live,
                   open_s=round(float(getattr(source, "open_s", 0.0)), 3))

    def _emit_failed(self, attempt: int, reason: str) -> None:
        gives_up = self.max_reconnects is not None and attempt >= self.max_reconnects
        self._emit("reconnect_failed", attempt=attempt, reason=reason,
                   retry_in_s=None if gives_up else round(self._nominal_delay(attempt), 3))

    def _nominal_delay(self, failed: int) -> float:
        initial, cap, _ = self._backoff
        return min(initial * 2.0 ** min(failed, 60), cap)

    def _delay(self, failed: int) -> float:
        jitter = self._backoff[2]
        return self._nominal_delay(failed) * (1.0 + self._rng.uniform(-jitter, jitter))

    @staticmethod
    def _period(source: FrameSource) -> float:
        fps = source.info.fps
        return 1.0 / fps if fps > 0 else 1.0 / 30.0

    def _wait_until(self, due: float) -> None:
        delay = due - self._clock()
        if delay > 0:
            self._wait(delay)

    def _wait(self, seconds: float) -> None:
        if self._stop_event.wait(seconds):
            raise _Stopped

    def _check_stop(self) -> None:
        if self._stop_event.is_set():
            raise _Stopped

    def _set_source(self, source: FrameSource | None) -> None:
        with self._source_lock:
            old, self._source = self._source, source
        if old is not None and old is not source:
            try:
                old.close()
            except Exception:  # closing is best effort; the thread must still end cleanly
                log.exception("stream %s: closing the source failed", self.stream_id)

    def _fail(self, exc: StreamclfError) -> None:
        if self._stop_event.is_set():
            return
        self.error = exc
        log.info("stream %s: capture ended: %s", self.stream_id, exc)  # the owner reports it
        self._emit("error", error=mask_credentials(str(exc)))

    def _emit(self, event: str, **fields: Any) -> None:
        if self._on_event is None or self._stop_event.is_set():
            return
        try:
            self._on_event(event, fields)
        except Exception:
            self.event_errors += 1
            log.exception("stream %s: on_event(%r) failed", self.stream_id, event)
