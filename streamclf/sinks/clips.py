"""Event clips and snapshots: an MP4 of the source around each alert, and its best frame.

:class:`ClipRecorders` is one run's recorder (``clips:`` of the config, ``--clips DIR``). A
:class:`~streamclf.live.pipeline.LivePipeline` attaches it as a queued event sink (it reads
``alert``, ``prediction`` and ``stopped`` events) and gives each stream's runner a frame tap
from :meth:`ClipRecorders.attach`::

    capture thread --tap--> FrameInbox --> recorder thread (one per stream): JPEG -> PreRoll
                                              | alert start: pre-roll from start - pre_s,
                                              | then every frame to end + post_s
                                              v
                                           ClipWriter thread (one per run): H.264 MP4 + JPEG
                                              snapshot, retention

Times: an alert event's ``window_end`` is the wall-clock capture time of its window's last
frame, which finds that frame in the pre-roll and so the alert's start (or end) on the
stream clock (``Frame.ts``); the clip spans ``[start - pre_s, end + post_s]`` of the
frames' own timestamps, whatever the pace. The snapshot is the frame at the end of the
window with the highest score of the alert's label while it was the stable label (its
``start`` and the ``prediction`` events in between): ``max_score`` of the ``end`` event.

Files: :meth:`~streamclf.sections.ClipsConfig.paths` (``DIR/STREAM-ALERTID.mp4`` and
``.jpg``), the rule the alert events name them by. A clip appears under its name when it is
complete (after ``post_s``, plus the time to encode what is left).

The source's pixel aspect ratio comes from the source itself (``SourceInfo.sar``, read by
the wrapped source factory on each open), so clips of anamorphic sources play undistorted.

Thread-safety: ``write`` (the bus's sink thread), taps (capture threads), ``attach`` and
``close`` (the pipeline) may run at once; each stream's state belongs to its thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamclf.errors import ConfigError, StreamclfError
from streamclf.media.encode import H264Writer, normal_sar
from streamclf.sections import ClipsConfig
from streamclf.sinks.clip_writer import ClipWriter, Recording, WriterFactory
from streamclf.sinks.preroll import FrameInbox, PreRoll, compress
from streamclf.sinks.retention import CLIP_NAME
from streamclf.types import Event, EventType, Frame

__all__ = ["EVENT_TYPES", "ClipRecorders", "StreamClipRecorder"]

log = logging.getLogger(__name__)

#: The events the recorder reads (its sink filter).
EVENT_TYPES = (EventType.ALERT, EventType.PREDICTION, EventType.STOPPED)
MB = 1_000_000
#: Pre-roll kept beyond ``pre_s``: predictions (and so alerts) arrive up to an inference
#: latency after their window's last frame, which must still be held then.
LOOKBACK_S = 3.0
_WAIT_S = 0.2  # how long the recorder thread waits for work before checking its stop event


class StreamClipRecorder:
    """One stream's pre-roll, and the clips of its alerts under way.

    Args:
        stream: the stream id.
        config: the clips section.
        writer: the run's clip writer.

    ``tap(frame)`` is the runner's frame tap (capture thread): it hands the frame to a
    bounded inbox and returns (a full inbox drops it: :attr:`inbox_drops`).

    Thread-safety: ``tap``, ``deliver``, ``source_opened`` and ``stop`` from any thread; the
    pre-roll and the open recordings belong to the recorder's thread.
    """

    def __init__(self, stream: str, config: ClipsConfig, writer: ClipWriter) -> None:
        self.stream, self.config, self.writer = stream, config, writer
        budget = max(1, round(config.preroll_mb * MB))
        self.preroll = PreRoll(config.pre_s + LOOKBACK_S, budget)
        self.inbox = FrameInbox(max(budget // 4, 1))  # raw frames: 5 of 720p at 64 MB
        self.created = time.time()  # a `stopped` older than this was a former stream's
        self.sar, self.fps = (1, 1), 0.0
        self.compress_errors = 0
        self._kept_ts = -math.inf  # the last frame kept (``clips.fps``)
        self._open: dict[str, Recording] = {}
        self._give_up: dict[str, float] = {}  # alert id -> when to finish without frames
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"streamclf-clips-{stream}",
                                        daemon=True)

    @property
    def inbox_drops(self) -> int:
        return self.inbox.drops

    def start(self) -> StreamClipRecorder:
        self._thread.start()
        return self

    def tap(self, frame: Frame) -> None:
        """The frame tap: capture thread, returns at once."""
        self.inbox.offer(frame)

    def source_opened(self, info: Any) -> None:
        """A source was opened for this stream (first open, reconnect): its aspect and
        rate go to the clips that start from now on."""
        self.sar = normal_sar(getattr(info, "sar", None))
        fps = getattr(info, "fps", 0.0)
        self.fps = float(fps) if isinstance(fps, (int, float)) and 0 < fps <= 1000 else 0.0

    def deliver(self, event: Event) -> None:
        """An event of this stream (the sink thread): handled on the recorder's thread."""
        if event.type == EventType.STOPPED and event.ts < self.created:
            return  # the `stopped` of a stream that had this id before
        self.inbox.offer_event(event)

    def stop(self, timeout_s: float = 1.0) -> bool:
        """Stop taking frames, finish the open clips, join; True if done in time."""
        self._stop.set()
        self.inbox.close()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- the recorder thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                frames, events = self.inbox.take(_WAIT_S)
                try:
                    for frame in frames:
                        self._ingest(frame)
                    for event in events:
                        self._handle(event)
                except Exception:  # a bug: say so, and keep the stream's other clips going
                    log.exception("clips: stream %s: recorder failed", self.stream)
                now = time.monotonic()
                for alert_id in [a for a, t in self._give_up.items() if now >= t]:
                    self._finish(alert_id)  # ended, but no frame came for post_s (+2 s)
                if self._stop.is_set() and not frames and not events:
                    break
        finally:
            for alert_id in list(self._open):
                self._finish(alert_id)

    def _finish(self, alert_id: str) -> None:
        rec = self._open.pop(alert_id, None)
        self._give_up.pop(alert_id, None)
        if rec is not None:
            self.writer.finish(rec)

    def _ingest(self, frame: Frame) -> None:
        cap = self.config.fps
        if cap > 0 and frame.ts < self._kept_ts + 1.0 / cap - 1e-3:
            return  # over the clips' own rate: never converted
        self._kept_ts = frame.ts
        try:
            stored = compress(frame)
        except StreamclfError as exc:
            self.compress_errors += 1
            if self.compress_errors == 1:
                log.error("clips: stream %s: %s", self.stream, exc)
            return
        self.preroll.push(stored)
        for alert_id, rec in list(self._open.items()):
            if rec.until_ts is not None and stored.ts > rec.until_ts:
                self._finish(alert_id)
            else:
                self.writer.push(rec, (stored,))

    def _handle(self, event: Event) -> None:
        fields = event.fields
        if event.type == EventType.STOPPED:
            self._stop.set()
            self.inbox.close()
        elif event.type == EventType.PREDICTION:
            for rec in self._open.values():
                if rec.until_ts is None and fields.get("stable_label") == rec.label:
                    self._consider(rec, _label_score(fields, rec.label), fields)
        elif event.type == EventType.ALERT and fields.get("phase") == "start":
            self._start(event)
        elif event.type == EventType.ALERT and fields.get("phase") == "end":
            ending = self._open.get(str(fields.get("alert_id")))
            if ending is not None:
                end = self._stream_ts(fields, event.ts)
                ending.until_ts = (ending.start_ts if end is None else end) + self.config.post_s
                self._give_up[ending.alert_id] = time.monotonic() + self.config.post_s + 2.0
                if fields.get("reason") == "stopped":  # no frame will come after this
                    self._finish(ending.alert_id)

    def _start(self, event: Event) -> None:
        fields = event.fields
        alert_id, label = str(fields.get("alert_id", "")), str(fields.get("label", ""))
        clip, snapshot = self.config.paths(self.stream, alert_id)
        if CLIP_NAME.fullmatch(Path(clip).name) is None:
            log.warning("clips: alert id %r of stream %s makes no clip name; no clip",
                        alert_id, self.stream)
            return
        if alert_id in self._open:
            return
        start = self._stream_ts(fields, event.ts)
        if start is None:  # no frame yet: the clip starts with the next one
            start = -math.inf
        rec = Recording(self.stream, alert_id, label, Path(clip), Path(snapshot), start,
                        self.fps, self.sar)
        self._consider(rec, _number(fields.get("score")), fields)
        self._open[alert_id] = rec
        self.writer.open(rec, self.preroll.since(start - self.config.pre_s))

    def _consider(self, rec: Recording, score: float | None, fields: Any) -> None:
        """A window of the alert's label scored ``score``: its last frame is the snapshot
        if no window scored higher before."""
        wall = _number(fields.get("window_end"))
        if score is None or wall is None or (rec.best is not None and score <= rec.best[0]):
            return
        frame = self.preroll.at_wall(wall)
        # A window older than the pre-roll (a very late prediction) has lost its frame: the
        # oldest held stands in only while there is no snapshot at all.
        if frame is not None and (abs(frame.wall_ts - wall) <= 0.5 or rec.best is None):
            rec.best = (score, frame)

    def _stream_ts(self, fields: Any, event_ts: float) -> float | None:
        """The stream-clock time of the window an event is about (``window_end`` -> the
        frame captured then; without it, the event's own ``ts``)."""
        wall = _number(fields.get("window_end"))
        wall = event_ts if wall is None else wall
        frame = self.preroll.at_wall(wall)
        if frame is not None and abs(frame.wall_ts - wall) <= 0.5:
            return frame.ts
        newest = self.preroll.newest
        return None if newest is None else newest.ts - (newest.wall_ts - wall)


class ClipRecorders:
    """The event clips of one run: an event sink, and a frame tap per stream.

    Args:
        config: the clips section (its folder is created here).
        writer_factory: opens a clip's video writer (default
            :class:`~streamclf.media.encode.H264Writer`; tests pass a slow one).

    Raises:
        ConfigError: the clips folder cannot be created.

    Example::

        clips = ClipRecorders(ClipsConfig(dir="clips"))
        bus.add_sink(clips, "clips", types=EVENT_TYPES)
        factory, tap = clips.attach("door", factory)   # StreamRunner(..., frame_taps=[tap])

    Thread-safety: every method from any thread.
    """

    def __init__(self, config: ClipsConfig,
                 writer_factory: WriterFactory | None = None) -> None:
        if not isinstance(config, ClipsConfig):
            raise ConfigError(f"clips need a ClipsConfig, got {type(config).__name__}")
        try:
            Path(config.dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"clips: cannot create the folder {config.dir!r}: "
                              f"{exc.strerror or exc}") from None
        self.config = config
        self.writer = ClipWriter(config, max(1, round(config.preroll_mb * MB)),
                                 writer_factory or H264Writer).start()
        self._recorders: dict[str, StreamClipRecorder] = {}
        self._retired: list[StreamClipRecorder] = []
        self._lock = threading.Lock()
        self._closed = False

    def attach(self, stream: str, factory: Callable[[], Any]
               ) -> tuple[Callable[[], Any], Callable[[Frame], None]]:
        """A new recorder for ``stream`` (replacing a former one of that id): returns the
        source factory wrapped to learn each opened source's aspect ratio, and the tap.

        Raises:
            ConfigError: the run's clips are closed.
        """
        recorder = StreamClipRecorder(stream, self.config, self.writer)
        with self._lock:
            if self._closed:
                raise ConfigError("clips: the run has ended")
            old = self._recorders.get(stream)
            if old is not None:
                self._retired.append(old)
            self._recorders[stream] = recorder.start()

        def opened() -> Any:
            source = factory()
            recorder.source_opened(getattr(source, "info", None))
            return source

        return opened, recorder.tap

    def recorder(self, stream: str) -> StreamClipRecorder:
        """The stream's current recorder (tests, health). Raises KeyError."""
        with self._lock:
            return self._recorders[stream]

    def write(self, event: Event) -> None:
        """The sink: events of a stream go to its recorder (others are ignored)."""
        with self._lock:
            recorder = self._recorders.get(event.stream)
        if recorder is not None:
            recorder.deliver(event)

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop every recorder, then let the writer finish the clips (bounded); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            recorders = [*self._retired, *self._recorders.values()]
        deadline = time.monotonic() + timeout_s
        for recorder in recorders:
            recorder.stop(max(0.05, (deadline - time.monotonic()) / 3))
        self.writer.close(max(0.2, deadline - time.monotonic()))
        drops = sum(r.inbox_drops for r in recorders) + self.writer.drops
        if drops or self.writer.errors:
            log.info("clips: %d clips saved, %d frames dropped, %d errors",
                     len(self.writer.saved), drops, self.writer.errors)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)
    return float(value) if ok else None


def _label_score(fields: Any, label: str) -> float | None:
    """``label``'s smoothed score in a ``prediction`` event (None: not in its top-k)."""
    labels, scores = fields.get("labels") or (), fields.get("scores") or ()
    for name, score in zip(labels, scores, strict=False):
        if name == label:
            return _number(score)
    return None
