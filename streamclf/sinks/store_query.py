"""Reading the event store (:mod:`streamclf.sinks.store`): the one query code of
``streamclf events`` and the web view's ``/api/alerts``.

Every query opens the file read-only (``mode=ro``), checks it is a streamclf event store,
reads and closes it: a connection never crosses threads, and a reader never blocks the
writer (WAL). Filters are bound parameters, never pasted into SQL.

Example::

    query = StoreQuery(stream="door", since=parse_time("1h", "--since"))
    for record in read_events("events.db", query):
        print(record["type"], record.get("label"))
    read_alerts("events.db", StoreQuery(label="falling", limit=20))
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streamclf.errors import ConfigError, DataError
from streamclf.sinks.store import check_store

__all__ = ["CLIP_NAME", "StoreQuery", "clip_name", "parse_time", "read_alerts", "read_events"]

#: A file name ``/clips/NAME`` may serve: no path separator, no leading dot.
CLIP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNIT_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0,
           "w": 604_800.0}


def parse_time(text: str, where: str, now: float | None = None) -> float:
    """A point in time, as seconds since the epoch: a duration back from now (``90s``,
    ``15m``, ``1h``, ``2d``, ``1w``) or an ISO 8601 date or time (``2026-12-02``,
    ``2026-12-02T10:30``, with ``Z`` or an offset; without one it is local time).

    Raises:
        ConfigError: anything else (the message names ``where``, e.g. ``--since``).
    """
    value = text.strip()
    ago = _AGO.fullmatch(value)
    if ago:
        seconds = float(ago.group(1)) * _UNIT_S[ago.group(2).lower()]
        if math.isfinite(seconds) and seconds <= 100 * 365 * 86_400:
            return (time.time() if now is None else now) - seconds
    elif 0 < len(value) <= 40:
        try:
            return datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    shown = value if len(value) <= 40 else value[:37] + "..."
    raise ConfigError(f"{where} {shown!r}: use a time back from now (30m, 1h, 2d) or an ISO "
                      "time (2026-12-02T10:30)")


@dataclass(frozen=True)
class StoreQuery:
    """What to read (every filter optional).

    Attributes:
        stream: one stream id. label: one label.
        since, until: seconds since the epoch (``ts`` of an event, ``start_ts`` of an
            alert), inclusive.
        types: event types (events only, alerts ignore it; default: all stored ones).
        limit: most rows returned (events: the oldest first; alerts: the newest first).
    """

    stream: str | None = None
    label: str | None = None
    since: float | None = None
    until: float | None = None
    types: tuple[str, ...] | None = None
    limit: int | None = None

    def where(self, ts_column: str) -> tuple[str, list[Any]]:
        """The ``WHERE`` clause (or ``""``) and its parameters."""
        terms: list[str] = []
        params: list[Any] = []
        for column, value in (("stream", self.stream), ("label", self.label)):
            if value is not None:
                terms.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            terms.append(f"{ts_column} >= ?")
            params.append(self.since)
        if self.until is not None:
            terms.append(f"{ts_column} <= ?")
            params.append(self.until)
        if self.types is not None:
            terms.append(f"type IN ({', '.join('?' * len(self.types))})")
            params.extend(self.types)
        return (" WHERE " + " AND ".join(terms)) if terms else "", params


@contextmanager
def _open(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store at ``path`` (checked), closed on exit."""
    file = Path(path)
    if not file.is_file():
        what = "is not a file" if file.exists() else "does not exist"
        raise DataError(f"event store {file} {what}")
    uri = "file:" + quote(str(file.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise DataError(f"event store {file}: cannot open it ({exc})") from None
    try:
        check_store(file, conn, new_ok=False)
        yield conn
    except sqlite3.Error as exc:
        raise DataError(f"event store {file}: {exc}") from None
    finally:
        conn.close()


def _limit(query: StoreQuery) -> tuple[str, list[Any]]:
    return (" LIMIT ?", [query.limit]) if query.limit is not None else ("", [])


def read_events(path: str | Path, query: StoreQuery = StoreQuery()) -> list[dict[str, Any]]:
    """The stored events matching ``query``, oldest first, each the event-log JSON object
    (``type``, ``stream``, ``ts``, ``seq``, fields).

    Raises:
        DataError: no such file, not a streamclf event store, or unreadable.
    """
    where, params = query.where("ts")
    limit, more = _limit(query)
    with _open(path) as conn:
        rows = conn.execute(f"SELECT record FROM events{where} ORDER BY ts, id{limit}",
                            params + more).fetchall()
    return [json.loads(row[0]) for row in rows]


_ALERT_COLUMNS = ("stream", "alert_id", "label", "start_ts", "end_ts", "media_ts", "score",
                  "max_score", "clip", "snapshot")


def clip_name(path: str | None) -> str | None:
    """The file name a stored clip or snapshot path is served under (``/clips/NAME``), or
    None when there is none or it could not be served."""
    if not path:
        return None
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name if CLIP_NAME.fullmatch(name) and ".." not in name else None


def read_alerts(path: str | Path, query: StoreQuery = StoreQuery()) -> list[dict[str, Any]]:
    """The alerts matching ``query`` (``since``/``until`` on their start), newest first:
    ``stream``, ``alert_id``, ``label``, ``start_ts``, ``end_ts`` (None while it lasts),
    ``media_ts``, ``score``, ``max_score``, ``clip``, ``snapshot`` (paths as recorded) and
    ``clip_name``, ``snapshot_name`` (the files' names in the clips folder, or None).

    Raises:
        DataError: no such file, not a streamclf event store, or unreadable.
    """
    where, params = dataclasses.replace(query, types=None).where("start_ts")
    limit, more = _limit(query)
    with _open(path) as conn:
        rows = conn.execute(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts{where} "
                            f"ORDER BY start_ts DESC, alert_id DESC{limit}",
                            params + more).fetchall()
    out = []
    for row in rows:
        item = dict(zip(_ALERT_COLUMNS, row, strict=True))
        item["clip_name"] = clip_name(item["clip"])
        item["snapshot_name"] = clip_name(item["snapshot"])
        out.append(item)
    return out
