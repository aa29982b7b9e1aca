"""The event store: labels, alerts and stream errors in one SQLite file (``--db FILE``).

:class:`EventStore` is an event sink (``write(event)``/``close()``) that a
:class:`~streamclf.live.pipeline.LivePipeline` attaches as a *queued* sink when
``config.db`` is set, so every insert and commit happens on the sink's own thread and never
slows capture or inference. It keeps :data:`STORED_TYPES` only: stable-label changes,
alerts and what happened to a source, not every prediction (the JSON Lines log has those).

Tables (the schema is declared here once; :mod:`streamclf.sinks.store_query` reads it):

* ``events``: one row per stored event: ``seq``, ``type``, ``stream``, ``ts``, ``label``,
  ``score``, ``alert_id`` and ``record`` (the event-log JSON object, as the log writes it).
  Indexed by ``(stream, ts)``, ``(label, ts)`` and ``ts``.
* ``alerts``: one row per alert (``stream``, ``alert_id``), inserted by its ``start`` event
  and completed by its ``end`` (``end_ts``, ``max_score``, ``clip``, ``snapshot``).
  Indexed by ``(stream, start_ts)``, ``(label, start_ts)`` and ``start_ts``.

The file is marked as ours (``PRAGMA application_id``, ``user_version``): another SQLite
file, or a file that is not SQLite at all, is refused rather than written to.

**Durability.** WAL journal, one transaction per event, ``synchronous=FULL``: when
:meth:`EventStore.write` returns, the event is in the WAL *and* the WAL is on the disk, so
it survives a SIGKILL of the process (a test kills a writing process and finds every event
it had reported) and a power cut as well. ``NORMAL`` would survive the SIGKILL too (the WAL
is written at each commit, only not synced), but could lose the last alerts on a power
cut, and the fsync costs nothing anyone waits for: it runs on the sink's thread, and
these events come a few per minute per stream (0.8 ms per commit measured on the team's
machine, ext4). Readers (the ``events`` command, the web view) are never blocked by the writer:
WAL lets them read while it writes.

Thread-safety: :meth:`EventStore.write` and :meth:`EventStore.close` may be called from
any thread (one lock around the connection).

Example::

    store = EventStore("events.db")
    bus.add_sink(store, "db", types=STORED_TYPES)   # LivePipeline does this for --db
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

from streamclf.errors import DataError
from streamclf.live.events import jsonable
from streamclf.types import Event, EventType

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "STORED_TYPES", "EventStore", "check_store"]

#: ``PRAGMA application_id`` of a streamclf event store ("SCLF").
APPLICATION_ID = 0x53434C46
SCHEMA_VERSION = 1
#: The event types the store keeps (a queued sink's ``types`` filter).
STORED_TYPES = frozenset({
    EventType.LABEL_START, EventType.LABEL_END, EventType.ALERT, EventType.ERROR,
    EventType.SOURCE_LOST, EventType.SOURCE_RESTORED,
})
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    stream TEXT NOT NULL,
    ts REAL NOT NULL,
    label TEXT,
    score REAL,
    alert_id TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_stream_ts ON events (stream, ts);
CREATE INDEX IF NOT EXISTS events_label_ts ON events (label, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS alerts (
    stream TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    label TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts REAL,
    media_ts REAL,
    score REAL,
    max_score REAL,
    clip TEXT,
    snapshot TEXT,
    PRIMARY KEY (stream, alert_id)
);
CREATE INDEX IF NOT EXISTS alerts_stream_start ON alerts (stream, start_ts);
CREATE INDEX IF NOT EXISTS alerts_label_start ON alerts (label, start_ts);
CREATE INDEX IF NOT EXISTS alerts_start ON alerts (start_ts);
"""
_ALERT_START = """
INSERT INTO alerts (stream, alert_id, label, start_ts, media_ts, score, max_score)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (stream, alert_id) DO UPDATE SET
    label = excluded.label, start_ts = excluded.start_ts, media_ts = excluded.media_ts,
    score = excluded.score, max_score = excluded.max_score
"""
_ALERT_END = """
INSERT INTO alerts (stream, alert_id, label, start_ts, end_ts, score, max_score, clip, snapshot)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (stream, alert_id) DO UPDATE SET
    end_ts = excluded.end_ts, clip = excluded.clip, snapshot = excluded.snapshot,
    max_score = max(coalesce(alerts.max_score, 0), coalesce(excluded.max_score, 0))
"""


def check_store(path: str | Path, conn: sqlite3.Connection, *, new_ok: bool) -> None:
    """Raise :class:`DataError` unless ``conn`` (opened on ``path``) is a streamclf event
    store (``new_ok``: or an empty SQLite file, which the writer then makes one)."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise DataError(f"{path} is not a streamclf event store ({exc})") from None
    if app_id == 0 and tables == 0 and new_ok:
        return
    if app_id != APPLICATION_ID:
        raise DataError(f"{path} is not a streamclf event store (another SQLite database)")
    if version > SCHEMA_VERSION:
        raise DataError(f"{path} was written by a newer streamclf (store version {version}, "
                        f"this one reads {SCHEMA_VERSION})")


def _num(value: Any) -> float | None:
    """A finite number as a float, else None (a NaN score is stored as NULL)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class EventStore:
    """An event sink writing :data:`STORED_TYPES` events to a SQLite file (other events are
    ignored), one committed transaction per event (see the module docstring).

    Args:
        path: the database file; created (with its folder) when missing. An existing
            file must be a streamclf event store or an empty SQLite file.

    Raises:
        DataError: the file cannot be created or opened, is not SQLite, or is another
            program's database.

    Thread-safety: any thread (one lock).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.written = 0
        self._conn: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise DataError(f"event store {self.path} is a directory; give a file path")
        try:
            if self.path.is_file() and self.path.stat().st_size > 0:
                with self.path.open("rb") as fh:
                    if fh.read(16) != _SQLITE_MAGIC:
                        raise DataError(f"{self.path} exists and is not a streamclf event "
                                        "store (not SQLite); refusing to write to it")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise DataError(f"event store {self.path}: cannot open it "
                            f"({getattr(exc, 'strerror', None) or exc})") from None
        try:
            check_store(self.path, conn, new_ok=True)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataError(f"event store {self.path}: the file system does not allow a "
                                f"WAL journal (got {mode}); put it on a local disk")
            conn.execute("PRAGMA synchronous=FULL")
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise DataError(f"event store {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, event: Event) -> None:
        """Store ``event`` (committed when this returns) if its type is one of
        :data:`STORED_TYPES`.

        Raises:
            DataError: the write failed (disk full, the file removed or locked).
        """
        if event.type not in STORED_TYPES:
            return
        record = jsonable(event.as_dict())
        fields = event.fields
        alert_id = _text(fields.get("alert_id"))
        with self._lock:
            conn = self._conn
            if conn is None:
                raise DataError(f"event store {self.path} is closed")
            try:
                with conn:  # one transaction: committed on leaving, rolled back on error
                    conn.execute(
                        "INSERT INTO events (seq, type, stream, ts, label, score, alert_id, "
                        "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (event.seq, event.type.value, event.stream, event.ts,
                         _text(fields.get("label")), _num(fields.get("score")), alert_id,
                         json.dumps(record, separators=(",", ":"), allow_nan=False)))
                    if event.type is EventType.ALERT and alert_id is not None:
                        self._alert(conn, event, alert_id)
            except sqlite3.Error as exc:
                raise DataError(f"event store {self.path}: {exc}") from None
            self.written += 1

    @staticmethod
    def _alert(conn: sqlite3.Connection, event: Event, alert_id: str) -> None:
        f = event.fields
        label = _text(f.get("label")) or ""
        score, max_score = _num(f.get("score")), _num(f.get("max_score"))
        if f.get("phase") == "end":
            conn.execute(_ALERT_END, (event.stream, alert_id, label, event.ts, event.ts,
                                      score, max_score if max_score is not None else score,
                                      _text(f.get("clip")), _text(f.get("snapshot"))))
        else:
            conn.execute(_ALERT_START, (event.stream, alert_id, label, event.ts,
                                        _num(f.get("media_ts")), score,
                                        max_score if max_score is not None else score))

    def close(self) -> None:
        """Close the file (its WAL is checkpointed into it). Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
