"""The SQLite event store: real files, a real pipeline writing it, a real process killed
with SIGKILL while it writes, and ``streamclf events`` reading it."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from streamclf.cli.main import main
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.errors import ConfigError, DataError
from streamclf.live.events import make_event, read_events
from streamclf.live.pipeline import LivePipeline
from streamclf.sinks.store import STORED_TYPES, EventStore
from streamclf.sinks.store_query import StoreQuery, parse_time, read_alerts
from streamclf.sinks.store_query import read_events as read_stored
from streamclf.types import Event, EventType
from tests.conftest import REPO

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z, a fixed wall clock for seeded events


def _ev(type_: EventType, stream: str, ts: float, seq: int, **fields: Any) -> Event:
    return Event(type_, stream, ts, fields, seq)


def seed(path: Path) -> list[Event]:
    """Write a small history (two streams, labels, one alert, an error, predictions that
    must not be kept) to a store at ``path``; returns what was written."""
    events = [
        _ev(EventType.LABEL_START, "door", T0, 0, label="walking", score=0.81),
        _ev(EventType.PREDICTION, "door", T0 + 1, 1, labels=["walking"], scores=[0.8]),
        _ev(EventType.ALERT, "door", T0 + 2, 2, alert_id="A1", phase="start",
            label="falling", score=0.7, max_score=0.7, media_ts=12.5),
        _ev(EventType.LABEL_END, "door", T0 + 3, 3, label="walking", score=0.1),
        _ev(EventType.LABEL_START, "hall", T0 + 3600, 4, label="running", score=0.9),
        _ev(EventType.ALERT, "door", T0 + 5, 5, alert_id="A1", phase="end", label="falling",
            score=0.4, max_score=0.95, reason="label", clip="clips/door-A1.mp4",
            snapshot="clips/door-A1.jpg"),
        _ev(EventType.ERROR, "hall", T0 + 7200, 6, source="output", message="disk full"),
        _ev(EventType.STOPPED, "hall", T0 + 7201, 7, frames=10),
    ]
    with EventStore(path) as store:
        for event in events:
            store.write(event)
    return [e for e in events if e.type in STORED_TYPES]


def test_the_store_keeps_labels_alerts_and_errors_and_reads_them_back(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "events.db"
    kept = seed(db)
    by_time = sorted(kept, key=lambda e: e.ts)
    assert [e["seq"] for e in read_stored(db)] == [e.seq for e in by_time]  # no prediction
    assert read_stored(db)[0] == {"type": "label_start", "stream": "door", "ts": T0, "seq": 0,
                                  "label": "walking", "score": 0.81}
    assert [e["seq"] for e in read_stored(db, StoreQuery(stream="hall"))] == [4, 6]
    assert [e["seq"] for e in read_stored(db, StoreQuery(label="walking"))] == [0, 3]
    span = StoreQuery(since=T0 + 3, until=T0 + 3600)
    assert [e["seq"] for e in read_stored(db, span)] == [3, 5, 4]  # by time, bounds included
    assert [e["seq"] for e in read_stored(db, StoreQuery(limit=2))] == [0, 2]
    assert [e["seq"] for e in read_stored(db, StoreQuery(types=("error",)))] == [6]
    [alert] = read_alerts(db)
    assert alert == {
        "stream": "door", "alert_id": "A1", "label": "falling", "start_ts": T0 + 2,
        "end_ts": T0 + 5, "media_ts": 12.5, "score": 0.7, "max_score": 0.95,
        "clip": "clips/door-A1.mp4", "snapshot": "clips/door-A1.jpg",
        "clip_name": "door-A1.mp4", "snapshot_name": "door-A1.jpg"}
    assert read_alerts(db, StoreQuery(stream="hall")) == []
    assert read_alerts(db, StoreQuery(since=T0 + 3)) == []  # alerts filter on their start
    # Indexed by stream, label and time: the planner uses them.
    with closing(sqlite3.connect(db)) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index'")}
        assert {"events_stream_ts", "events_label_ts", "events_ts"} <= indexes
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM events WHERE stream = ? "
                            "AND ts >= ?", ("door", 0)).fetchall()
        assert "events_stream_ts" in str(plan)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_run_appends_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    seed(db)
    with EventStore(db) as store:  # a later run adds to the same store
        store.write(_ev(EventType.LABEL_START, "door", T0 + 9, 0, label="waving", score=0.6))
    assert len(read_stored(db)) == 7
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    for path, needle in ((text, "not SQLite"), (other, "another SQLite database"),
                         (tmp_path, "is a directory")):
        with pytest.raises(DataError, match=needle):
            EventStore(path)
    assert text.read_text() == "not a database\n"
    for path, needle in ((text, "not a streamclf event store"),
                         (other, "another SQLite database"),
                         (tmp_path / "missing.db", "does not exist")):
        with pytest.raises(DataError, match=needle):
            read_stored(path)


def test_times_back_from_now_and_iso_times() -> None:
    now = 1_000_000.0
    assert parse_time("1h", "--since", now) == now - 3600
    assert parse_time("90s", "--since", now) == now - 90
    assert parse_time("2d", "--since", now) == now - 2 * 86_400
    assert parse_time("2026-12-02T10:30:00Z", "--since") == 1_796_207_400.0
    assert parse_time("2026-12-02T10:30:00+01:00", "--since") == 1_796_207_400.0 - 3600
    for bad in ("yesterday", "", "1y", "-1h", "2026-13-02", "9" * 100 + "w", "nan h"):
        with pytest.raises(ConfigError, match="--since"):
            parse_time(bad, "--since", now)


def test_the_pipeline_writes_the_store_from_its_own_sink_thread(tmp_path: Path,
                                                                  tai_chi_clip: Path) -> None:
    """``RunConfig.db``: the pipeline attaches the store; it holds exactly the log's label
    events (same seq, same fields) and none of its predictions."""
    walking, running = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]
    backend = FakeBackend(labels=("walking", "running", "waving"),
                          script=[walking] * 4 + [running] * 4)
    log, db = tmp_path / "ev.jsonl", tmp_path / "ev.db"
    config = RunConfig(model="x3d_xs", quiet=True, events=str(log), db=str(db), streams=[
        StreamConfig(id="cam0", source=str(tai_chi_clip), pace="fast", stride=0.4, smooth=1,
                     threshold=0.5)])
    with LivePipeline(config, backend=backend) as pipe:
        assert pipe.join(timeout_s=120)
    logged = [e for e in read_events(log) if e["type"] in {t.value for t in STORED_TYPES}]
    assert [e["type"] for e in logged].count("label_start") >= 3
    assert read_stored(db) == logged


def test_a_bad_store_path_fails_before_the_run_starts(tmp_path: Path) -> None:
    clip = tmp_path / "notes.txt"
    clip.write_text("precious\n")
    config = RunConfig(model="x3d_xs", quiet=True, db=str(clip), streams=[
        StreamConfig(id="cam0", source="synthetic:64x48@10")])
    with pytest.raises(ConfigError, match="not an event store"):
        LivePipeline(config, backend=FakeBackend())
    assert clip.read_text() == "precious\n"


CHILD = r"""
import sys, time
from streamclf.live.events import make_event
from streamclf.live.sinks import EventBus
from streamclf.sinks.store import STORED_TYPES, EventStore
from streamclf.types import EventType

store = EventStore(sys.argv[1])

def committed(event):
    store.write(event)                  # returns once the transaction is committed
    sys.stdout.write(f"{event.seq}\n")
    sys.stdout.flush()

bus = EventBus()
bus.add_sink(committed, "db", types=STORED_TYPES)   # a queued sink: its own thread
kinds = [EventType.PREDICTION, EventType.LABEL_START, EventType.ALERT, EventType.LABEL_END]
i = 0
while True:
    kind = kinds[i % 4]
    extra = {"alert_id": f"a{i}", "phase": "start"} if kind is EventType.ALERT else {}
    bus.publish(make_event(kind, f"cam{i % 3}", label=f"label{i % 5}", score=0.5, **extra))
    i += 1
    time.sleep(0.0005)
"""


@pytest.mark.slow
def test_sigkill_while_writing_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(reported) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported.append(int(line))
        assert len(reported) >= 400, proc.stderr.read() if proc.stderr else ""
        assert proc.poll() is None  # still writing when it is killed
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    reported += [int(x) for x in rest.split()]  # printed before the kill, read after it
    assert Path(f"{db}-wal").stat().st_size > 0  # no clean close: the WAL holds the tail
    stored = read_stored(db)  # the read-only path of `streamclf events`
    seqs = {e["seq"] for e in stored}
    assert set(reported) <= seqs, sorted(set(reported) - seqs)[:10]
    assert all(e["type"] != "prediction" for e in stored)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# -- streamclf events -------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["events", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_events_command_lists_filters_and_formats(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "events.db"
    seed(db)
    status, out, _ = _cli(capsys, "--db", str(db))
    lines = out.splitlines()
    assert status == 0 and len(lines) == 6
    assert "door" in lines[0] and "label_start" in lines[0] and "walking 0.81" in lines[0]
    assert "end falling" in lines[3] and "clip=clips/door-A1.mp4" in lines[3]
    status, out, _ = _cli(capsys, "--db", str(db), "--stream", "door", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == [0, 2, 3, 5] and records[1]["alert_id"] == "A1"
    status, out, _ = _cli(capsys, "--db", str(db), "--label", "falling", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["type"], r["phase"], r["max_score"]) for r in rows] == [
        ("alert", "start", "0.7"), ("alert", "end", "0.95")]
    assert rows[1]["snapshot"] == "clips/door-A1.jpg" and rows[0]["time"].startswith("2026-11")
    status, out, _ = _cli(capsys, "--db", str(db), "--since", "2026-11-30T01:00:00Z",
                          "--until", "2026-11-30T02:00:00+00:00", "--json")
    assert status == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [4]
    status, out, err = _cli(capsys, "--db", str(db), "--since", "1h")
    assert status == 0 and out == "" and err == "streamclf: no events match\n"


@pytest.mark.parametrize(("make", "argv", "needle"), [
    (None, ["--db", "{tmp}/missing.db"], "does not exist"),
    ("text", ["--db", "{tmp}/notes.db"], "not a streamclf event store"),
    ("store", ["--db", "{tmp}/events.db", "--since", "last tuesday"], "--since 'last tuesday'"),
    ("store", ["--db", "{tmp}/events.db", "--until", "2h", "--since", "1h"], "is before"),
])
def test_events_command_errors_are_one_line(make: str | None, argv: list[str], needle: str,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if make == "text":
        (tmp_path / "notes.db").write_text("hello")
    elif make == "store":
        seed(tmp_path / "events.db")
    status, out, err = _cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert status == 1 and out == ""
    assert err.startswith("streamclf: error: ") and err.count("\n") == 1 and needle in err, err


def test_events_command_in_a_real_process_piped_into_head(tmp_path: Path) -> None:
    """The console script end to end, its output cut short by the reader."""
    db = tmp_path / "events.db"
    with EventStore(db) as store:
        for i in range(2000):
            store.write(make_event(EventType.LABEL_START, "cam0", T0 + i, label="x",
                                   score=0.5))
    head = subprocess.run(f"{shlex.quote(sys.executable)} -m streamclf events --db "
                          f"{shlex.quote(str(db))} | head -n 3",
                          shell=True, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert len(head.stdout.splitlines()) == 3 and head.stderr == "", head.stderr
