"""The clip writer thread: encodes the event clips, saves their snapshots, keeps retention.

One :class:`ClipWriter` per run, fed by every stream's recorder
(:mod:`streamclf.sinks.clips`): a :class:`Recording` is opened at an alert's start, gets
stored frames (JPEG, :mod:`streamclf.sinks.preroll`) as they come, and is finished when the
frames reach ``post_s`` past the alert's end. The writer decodes each frame and encodes it
into ``STREAM-ALERTID.mp4.partial`` (H.264, :class:`~streamclf.media.encode.H264Writer`, the
frames' own timestamps), then renames it to ``.mp4`` and writes the snapshot (the stored
JPEG of the best-scoring window's last frame) as ``.jpg``: a file under its final name is
complete. After each clip (and at start, and every 10 minutes) it applies retention
(:func:`~streamclf.sinks.retention.enforce_retention`).

Frames waiting for the writer are bounded (``max_pending_bytes`` over all clips): a slow
disk or a writer behind makes new frames drop (counted in :attr:`Recording.dropped` and
:attr:`ClipWriter.drops`), never a stream wait.

Thread-safety: ``open``/``push``/``finish``/``close`` from any thread (one condition guards
the recordings and their queues); encoding and files only on the writer thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamclf.errors import StreamclfError
from streamclf.media.encode import H264Writer
from streamclf.sections import ClipsConfig
from streamclf.sinks.preroll import StoredFrame, decompress
from streamclf.sinks.retention import enforce_retention

__all__ = ["ClipWriter", "Recording", "WriterFactory"]

log = logging.getLogger(__name__)

#: ``factory(path, size, fps, sar=..., faststart=True)``: opens one clip's video writer
#: (tests pass a slow one).
WriterFactory = Callable[..., Any]
PARTIAL = ".partial"
_RETENTION_EVERY_S = 600.0


@dataclass(eq=False)
class Recording:
    """One alert's clip under way. The stream's recorder sets the alert fields; ``pending``,
    ``until_ts``, ``done`` and the counters are guarded by the writer's condition."""

    stream: str
    alert_id: str
    label: str
    clip: Path
    snapshot: Path
    start_ts: float  # the alert's start on the stream clock (``Frame.ts``)
    fps: float
    sar: tuple[int, int]
    best: tuple[float, StoredFrame] | None = None  # (score, frame) for the snapshot
    until_ts: float | None = None  # end + post_s, once the end is known
    done: bool = False  # no more frames will come
    pending: deque[StoredFrame] = field(default_factory=deque)
    received = 0
    dropped = 0
    written = 0
    first_ts: float | None = None
    last_ts: float | None = None

    @property
    def base(self) -> str:
        return f"{self.stream}-{self.alert_id}"


class ClipWriter:
    """The run's clip-encoding thread (see the module docstring).

    Args:
        config: the clips section (folder, retention).
        max_pending_bytes: stored frames that may wait for encoding, over all clips.
        writer_factory: opens a clip's video (default :class:`H264Writer`).
    """

    def __init__(self, config: ClipsConfig, max_pending_bytes: int,
                 writer_factory: WriterFactory = H264Writer) -> None:
        self.config, self.max_pending_bytes = config, int(max_pending_bytes)
        self._factory = writer_factory
        self._cond = threading.Condition()
        self._recs: list[Recording] = []
        self._pending_bytes = 0
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="streamclf-clips-writer",
                                         daemon=True)
        self._saved: list[Path] = []
        self.drops = self.errors = 0

    def start(self) -> ClipWriter:
        self._thread.start()
        return self

    # -- from the recorders ------------------------------------------------------------
    def open(self, rec: Recording, frames: Iterable[StoredFrame]) -> None:
        """Start ``rec`` with its pre-roll ``frames`` (after :meth:`close`: those only)."""
        with self._cond:
            self._recs.append(rec)
        self.push(rec, frames)
        if self._stop.is_set():
            self.finish(rec)

    def push(self, rec: Recording, frames: Iterable[StoredFrame]) -> None:
        """Queue frames for ``rec``; those past the byte budget are dropped and counted."""
        with self._cond:
            for frame in frames:
                rec.received += 1
                if rec.done or self._pending_bytes + frame.nbytes > self.max_pending_bytes:
                    rec.dropped += 1
                    self.drops += 1
                    continue
                rec.pending.append(frame)
                self._pending_bytes += frame.nbytes
            self._cond.notify()

    def finish(self, rec: Recording) -> None:
        """No more frames for ``rec``: the writer saves it once its queue is written."""
        with self._cond:
            rec.done = True
            self._cond.notify()

    @property
    def saved(self) -> list[Path]:
        """The clips finished so far, in order."""
        with self._cond:
            return list(self._saved)

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._recs)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self._retention()
        next_retention = time.monotonic() + _RETENTION_EVERY_S
        turn = 0
        writers: dict[Recording, Any] = {}
        while True:
            with self._cond:
                while not self._stop.is_set() and not any(r.pending or r.done
                                                          for r in self._recs):
                    self._cond.wait(1.0)
                    if time.monotonic() >= next_retention:
                        break
                late = self._stop.is_set() and time.monotonic() >= self._deadline
                if late:  # out of time: what is queued is dropped, the clips are closed
                    for late_rec in self._recs:
                        late_rec.done = True
                        late_rec.dropped += len(late_rec.pending)
                        self.drops += len(late_rec.pending)
                        late_rec.pending.clear()
                    self._pending_bytes = 0
                ready = [r for r in self._recs if r.pending or r.done]
                if not ready and self._stop.is_set() and not self._recs:
                    break
                rec = ready[turn % len(ready)] if ready else None
                turn += 1
                frame = rec.pending.popleft() if rec is not None and rec.pending else None
                if frame is not None:
                    self._pending_bytes -= frame.nbytes
                elif rec is not None:
                    self._recs.remove(rec)
            try:
                if frame is not None and rec is not None:
                    self._write(rec, frame, writers)
                elif rec is not None:
                    self._save(rec, writers.pop(rec, None))
                    self._retention()
            except Exception as exc:  # a bug: report it, drop this clip, keep the others
                log.exception("clips: writer failed on %s", rec.clip if rec else "?")
                if rec is not None and frame is not None:
                    self._failed(rec, writers.get(rec), exc)
                    writers[rec] = False
            if time.monotonic() >= next_retention:
                self._retention()
                next_retention = time.monotonic() + _RETENTION_EVERY_S

    def _write(self, rec: Recording, frame: StoredFrame, writers: dict[Recording, Any]) -> None:
        writer = writers.get(rec)
        if writer is False:  # this clip failed already
            return
        try:
            image = decompress(frame)
            if writer is None:
                writer = writers[rec] = self._factory(
                    _partial(rec.clip), (frame.width, frame.height), rec.fps or 30.0,
                    sar=rec.sar, faststart=True)
            writer.write(image, frame.ts)
        except (StreamclfError, OSError) as exc:
            self._failed(rec, writer, exc)
            writers[rec] = False
            return
        rec.written += 1
        rec.first_ts = frame.ts if rec.first_ts is None else rec.first_ts
        rec.last_ts = frame.ts

    def _failed(self, rec: Recording, writer: Any, exc: Exception) -> None:
        self.errors += 1
        log.error("clips: %s: %s", rec.clip.name, exc)
        if writer:
            with contextlib.suppress(Exception):
                writer.close()
        with contextlib.suppress(OSError):
            os.unlink(_partial(rec.clip))

    def _save(self, rec: Recording, writer: Any) -> None:
        """Finish the clip file and write the snapshot (writer thread)."""
        if writer is False:
            return
        if writer is not None:
            try:
                writer.close()
                os.replace(_partial(rec.clip), rec.clip)
            except (StreamclfError, OSError) as exc:
                self._failed(rec, None, exc)
                return
            with self._cond:
                self._saved.append(rec.clip)
            span = (rec.last_ts or 0.0) - (rec.first_ts or 0.0)
            log.info("clips: saved %s (%d frames, %.1f s; %d dropped)", rec.clip, rec.written,
                     span, rec.dropped)
        if rec.best is not None:
            tmp = _partial(rec.snapshot)
            try:
                Path(tmp).write_bytes(rec.best[1].jpeg)
                os.replace(tmp, rec.snapshot)
            except OSError as exc:
                self.errors += 1
                log.error("clips: cannot write the snapshot %s: %s", rec.snapshot, exc)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _retention(self) -> None:
        with self._cond:
            keep = {r.base for r in self._recs}
        try:
            enforce_retention(self.config.dir, self.config.max_gb, self.config.max_days,
                              keep=keep)
        except OSError as exc:  # the folder vanished or is unreadable: try again later
            log.warning("clips retention: %s", exc)

    def close(self, timeout_s: float = 1.5) -> bool:
        """Finish every clip (no more frames come): write what is queued until ``timeout_s``
        is nearly over, then drop the rest, close the files; True if done in time."""
        reserve = min(0.5, timeout_s / 3)  # to flush the encoders and rename the files
        with self._cond:
            self._deadline = time.monotonic() + max(0.0, timeout_s - reserve)
            self._stop.set()
            for rec in self._recs:
                rec.done = True
            self._cond.notify_all()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("clips: the writer did not finish within %.1f s; its clips stay "
                        "as .partial files", timeout_s)
        return not self._thread.is_alive()


def _partial(path: Path) -> str:
    return f"{path}{PARTIAL}"
