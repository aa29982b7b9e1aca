"""The event log: JSON Lines, one event per line, flushed per line, rotated by size.

Every line is one JSON object with ``type``, ``stream``, ``ts`` (wall-clock seconds since
the epoch when it was published) and ``seq`` (this log's counter, contiguous from 0,
across rotated files). Types (see :data:`EVENT_TYPES`): ``prediction``, ``label_start``,
``label_end``, ``source_opened``, ``source_lost``, ``reconnect_failed``, ``source_restored``,
``error``, ``alert`` (:mod:`streamclf.live.alerts`), ``stopped``; extra fields are allowed.
NaN and infinities are written as ``null``.

If the file becomes unwritable mid-run, the log writes an ``error`` event (stream ``""``,
``source: "events"``) to the fallback stream (stderr), keeps writing there for the rest of
the run and counts the failure: :meth:`EventLog.write` never raises.

Example::

    with EventLog("runs/events.jsonl", max_bytes=10_000_000) as log:
        log.write(make_event("source_opened", "cam0", fps=30.0))
        log.write(prediction_event(pred))
    read_events("runs/events.jsonl")  # -> [{"type": "source_opened", ..., "seq": 0}, ...]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streamclf.errors import ConfigError, DataError
from streamclf.types import Event, EventType, Prediction

__all__ = ["EVENT_TYPES", "EventLog", "jsonable", "make_event", "prediction_event", "read_events"]

EVENT_TYPES = frozenset(t.value for t in EventType)
_CORE = ("type", "stream", "ts", "seq")


def make_event(type_: EventType | str, stream: str, ts: float | None = None,
               **fields: Any) -> Event:
    """An :class:`Event` stamped with ``time.time()`` unless ``ts`` is given.

    Raises:
        ValueError: ``type_`` is not an :class:`EventType` value (a programming error).
    """
    return Event(EventType(type_), stream, time.time() if ts is None else float(ts), fields)


def prediction_event(pred: Prediction, **health: float | int) -> Event:
    """The ``prediction`` event for ``pred`` (features are left out).

    Times are rounded to microseconds, milliseconds to 0.01 ms, scores to 4 decimals.
    ``ts`` is the publish time, so ``latency_ms == (ts - window_end) * 1000``. ``health``
    adds the stream's state at publish time (``input_fps``, ``drops``), so each stream's
    fps, latency and drops can be followed from the log alone.
    """
    return Event(EventType.PREDICTION, pred.stream, round(pred.published, 6), {
        **health,
        "window_start": round(pred.window_start, 6),
        "window_end": round(pred.window_end, 6),
        "latency_ms": round(pred.latency_ms, 2),
        "inference_ms": round(pred.inference_ms, 2),
        "labels": list(pred.labels),
        "scores": [round(float(s), 4) for s in pred.scores],
        "raw_labels": list(pred.raw_labels),
        "raw_scores": [round(float(s), 4) for s in pred.raw_scores],
        "stable_label": pred.stable_label,
        "media_start": round(pred.media_start, 3),
        "media_ts": round(pred.media_ts, 3),
    })


def jsonable(value: Any) -> Any:
    """Plain JSON types, with NaN/inf -> None, numpy -> Python, anything else -> str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)  # Path, enum, ...: readable rather than a crash


class EventLog:
    """Thread-safe JSON Lines writer with size rotation and a fallback stream.

    Args:
        path: the log file. Its parent folders are created. A non-empty file already there
            is rotated to ``<path>.1`` first (or removed when ``backups`` is 0), so each
            run's ``seq`` starts at 0 at the top of a fresh file. ``None``: no file; events
            go to ``stream_to`` if one is given, else they are discarded (a null log).
        stream_to: the fallback text stream used when the file fails; ``None`` means
            ``sys.stderr`` (looked up at the time of the failure).
        max_bytes: rotate before a line would make the file larger than this; ``None``
            never rotates. A single line longer than ``max_bytes`` still gets its own file.
        backups: rotated files kept (``<path>.1`` newest ... ``<path>.<backups>`` oldest).
        fsync: also ``os.fsync`` after every line (slow; off by default: a flush per line
            already survives a crash of this process, not of the machine).

    Raises:
        ConfigError: ``max_bytes`` < 1 or ``backups`` < 0.
        DataError: the file cannot be created at start (bad folder, no permission).

    Thread-safety: all methods may be called from any thread; one lock orders ``seq``
    and lines, so seqs appear in the file in order.
    """

    def __init__(
        self,
        path: str | Path | None,
        stream_to: TextIO | None = None,
        max_bytes: int | None = None,
        backups: int = 5,
        fsync: bool = False,
    ) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 1):
            raise ConfigError(f"max_bytes must be >= 1 or None, got {max_bytes!r}")
        if isinstance(backups, bool) or backups < 0:
            raise ConfigError(f"backups must be >= 0, got {backups!r}")
        self._path = None if path is None else Path(path)
        self._stream_to, self._max_bytes, self._backups = stream_to, max_bytes, int(backups)
        self._fsync, self._closed = fsync, False
        self._lock = threading.Lock()
        self._seq = self._size = self._failures = self._dropped = 0
        self._fh: TextIO | None = None
        self._out: TextIO | None = stream_to  # where lines go when there is no file
        if self._path is not None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                if self._path.is_file() and self._path.stat().st_size > 0:
                    self._rotate_files(self._path)
                self._open(self._path)
            except OSError as exc:
                msg = f"{self._path}: cannot open the event log for writing ({exc.strerror})"
                raise DataError(msg) from None

    @property
    def seq(self) -> int:
        """The ``seq`` the next event will get (= events written so far)."""
        return self._seq

    @property
    def failures(self) -> int:
        """Times the file failed (0 or 1: after a failure the log stays on the fallback)."""
        return self._failures

    @property
    def dropped(self) -> int:
        """Events that could not be written anywhere (fallback failed, or log closed)."""
        return self._dropped

    def write(self, event: Event) -> dict[str, Any]:
        """Append ``event`` as one line and flush; never raises.

        Returns:
            The record as written: ``type``, ``stream``, ``ts``, ``seq``, then the extra
            fields (a field named like a core key is ignored), NaN/inf as ``None``.
        """
        extra = {k: v for k, v in dict(event.fields).items() if k not in _CORE}
        with self._lock:
            record = jsonable({"type": EventType(event.type).value, "stream": event.stream,
                                "ts": event.ts,
                                "seq": self._seq, **extra})
            if self._closed:
                self._dropped += 1
                return record
            if self._fh is not None and self._path is not None:
                try:
                    self._write_file(self._fh, self._path, self._line(record))
                    self._seq += 1
                    return record
                except OSError as exc:
                    self._fail(exc)  # writes an error event, which takes this seq
                    record["seq"] = self._seq
            self._write_stream(self._line(record))
            self._seq += 1
            return record

    def close(self) -> None:
        """Flush and close the file; idempotent. Later writes are dropped (and counted)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fh, self._fh = self._fh, None
            try:
                if fh is not None:
                    fh.close()
            except OSError:  # lines were flushed one by one; nothing more is lost
                self._failures += 1
            if self._out is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._out.flush()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) --------------------------------------------

    def _open(self, path: Path) -> TextIO:
        fh = open(path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - kept open
        self._fh, self._size = fh, fh.tell()
        return fh

    def _write_file(self, fh: TextIO, path: Path, line: str) -> None:
        data_len = len(line)
        if self._max_bytes is not None and self._size > 0 \
                and self._size + data_len > self._max_bytes:
            self._fh = None
            fh.close()
            self._rotate_files(path)
            fh = self._open(path)
        fh.write(line)
        fh.flush()
        if self._fsync:
            os.fsync(fh.fileno())
        self._size += data_len

    def _rotate_files(self, path: Path) -> None:
        if self._backups == 0:
            path.unlink(missing_ok=True)
            return
        for i in range(self._backups - 1, 0, -1):
            if os.path.exists(f"{path}.{i}"):
                os.replace(f"{path}.{i}", f"{path}.{i + 1}")
        os.replace(path, f"{path}.1")

    def _fail(self, exc: OSError) -> None:
        """Give up on the file: report on the fallback and switch to it for good."""
        self._failures += 1
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):  # the same broken file, reported below
                fh.close()
        self._out = self._stream_to if self._stream_to is not None else sys.stderr
        where = getattr(self._out, "name", "the fallback stream")
        self._write_stream(self._line({
            "type": "error", "stream": "", "ts": time.time(), "seq": self._seq,
            "source": "events",
            "message": f"event log {self._path}: write failed ({exc}); "
                       f"writing events to {where} from now on"}))
        self._seq += 1

    @staticmethod
    def _line(record: dict[str, Any]) -> str:
        return json.dumps(record, allow_nan=False) + "\n"  # ASCII: byte length == len()

    def _write_stream(self, line: str) -> None:
        if self._out is None:  # EventLog(None) without a stream: a null log
            return
        try:
            self._out.write(line)
            self._out.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            self._dropped += 1


def read_events(path: str | Path, rotated: bool = False) -> list[dict[str, Any]]:
    """Read a log written by :class:`EventLog`, skipping a torn (unterminated) last line.

    Args:
        path: the log file.
        rotated: also read ``<path>.N`` ... ``<path>.1`` first (oldest first).

    Raises:
        DataError: the file is missing, or a complete line is not a JSON object.

    Thread-safety: reads only; safe while a writer appends (the line being written is torn).
    """
    files = [Path(path)]
    while rotated and Path(f"{path}.{len(files)}").is_file():
        files.insert(0, Path(f"{path}.{len(files)}"))
    out: list[dict[str, Any]] = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise DataError(f"{f}: cannot read the event log ({exc.strerror})") from None
        lines = data.split(b"\n")
        for i, raw in enumerate(lines, start=1):
            last = i == len(lines)
            if last and not raw.strip():
                break
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                if last:  # no newline after it: a line still being written, or cut by a crash
                    break
                raise DataError(f"{f}: line {i} is not valid JSON") from None
            if not isinstance(obj, dict):
                raise DataError(f"{f}: line {i} is not a JSON object")
            out.append(obj)
    return out
