"""EventLog: the JSON Lines contract, flushing, threads, rotation, failures, reading back."""

from __future__ import annotations

import io
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from streamclf.errors import ConfigError, DataError
from streamclf.live.events import EVENT_TYPES, EventLog, make_event, prediction_event, read_events
from streamclf.types import Event, Prediction


def _prediction(**over: object) -> Prediction:
    fields: dict[str, object] = {
        "stream": "cam0", "window_start": 1700000000.0, "window_end": 1700000002.0,
        "published": 1700000002.1234567, "inference_ms": 12.3456, "labels": ("run", "walk"),
        "scores": (0.812345, 0.1), "raw_labels": ("walk", "run"), "raw_scores": (0.6, 0.3),
        "features": np.ones(8, np.float32), "stable_label": "run",
    }
    fields.update(over)
    return Prediction(**fields)  # type: ignore[arg-type]


def test_contract_fields_and_contiguous_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write(make_event("source_opened", "cam0", fps=30.0, width=640, height=480))
        written = log.write(prediction_event(_prediction()))
        log.write(make_event("label_start", "cam0", label="run", score=0.81))
        log.write(make_event("stopped", "cam0", frames=300, windows=20, drops=4))
    assert written["seq"] == 1
    events = read_events(path)
    assert [e["seq"] for e in events] == [0, 1, 2, 3]
    for e in events:
        assert {"type", "stream", "ts", "seq"} <= e.keys()
        assert e["type"] in EVENT_TYPES and e["stream"] == "cam0"
        assert isinstance(e["ts"], float)
    pred = events[1]
    assert pred["type"] == "prediction"
    assert pred["window_start"] == 1700000000.0 and pred["window_end"] == 1700000002.0
    assert pred["latency_ms"] == pytest.approx(123.46, abs=0.01)
    assert pred["latency_ms"] == pytest.approx((pred["ts"] - pred["window_end"]) * 1000, abs=0.01)
    assert pred["inference_ms"] == 12.35
    assert pred["labels"] == ["run", "walk"] and pred["scores"] == [0.8123, 0.1]
    assert pred["raw_labels"] == ["walk", "run"] and pred["raw_scores"] == [0.6, 0.3]
    assert "features" not in pred
    assert events[3]["frames"] == 300 and events[3]["windows"] == 20 and events[3]["drops"] == 4


def test_nan_and_numpy_values_become_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        rec = log.write(Event("error", "cam0", math.nan, {
            "score": float("nan"), "big": math.inf, "arr": np.array([1.5, np.nan]),
            "n": np.int64(3), "path": tmp_path, "seq": 99, "type": "ignored"}))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert rec["ts"] is None and rec["score"] is None and rec["big"] is None
    (e,) = read_events(path)
    assert e == rec
    assert e["arr"] == [1.5, None] and e["n"] == 3 and e["path"] == str(tmp_path)
    assert e["seq"] == 0 and e["type"] == "error"  # core keys are not overridden by fields

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(text, parse_constant=no_constants)  # strict JSON: no NaN/Infinity


def test_each_line_is_flushed_while_open(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    try:
        log.write(make_event("source_opened", "cam0"))
        assert [e["type"] for e in read_events(path)] == ["source_opened"]
        log.write(make_event("source_lost", "cam0"))
        assert path.read_text().count("\n") == 2
    finally:
        log.close()


@pytest.mark.timeout(30)
def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    per_thread, n_threads = 300, 4
    start = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        start.wait(timeout=5)
        for j in range(per_thread):
            log.write(make_event("prediction", f"cam{i}", j=j, labels=["x" * (j % 50)]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    log.close()
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    total = per_thread * n_threads
    assert [r["seq"] for r in records] == list(range(total))  # once each, in file order
    for i in range(n_threads):  # each thread's events kept their own order
        assert [r["j"] for r in records if r["stream"] == f"cam{i}"] == list(range(per_thread))


def test_rotation_keeps_every_line_when_backups_suffice(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path, max_bytes=2_000, backups=50) as log:
        for i in range(200):
            log.write(make_event("prediction", "cam0", i=i))
    files = sorted(tmp_path.iterdir())
    assert len(files) > 3
    assert all(f.stat().st_size <= 2_000 for f in files)
    events = read_events(path, rotated=True)
    assert [e["seq"] for e in events] == list(range(200))  # seq counts across files
    assert [e["i"] for e in events] == list(range(200))


def test_rotation_bounds_the_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path, max_bytes=1_000, backups=3) as log:
        for i in range(500):
            log.write(make_event("prediction", "cam0", i=i))
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    seqs = [e["seq"] for e in read_events(path, rotated=True)]
    assert seqs == list(range(seqs[0], 500))  # the newest events, none missing in between


def test_existing_log_is_rotated_away_at_start(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write(make_event("stopped", "old"))
    with EventLog(path) as log:
        log.write(make_event("source_opened", "new"))
    assert [e["stream"] for e in read_events(path)] == ["new"]
    assert read_events(path)[0]["seq"] == 0
    assert [e["stream"] for e in read_events(Path(f"{path}.1"))] == ["old"]


class _BrokenFile(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


def test_unwritable_mid_run_switches_to_fallback(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    fallback = io.StringIO()
    log = EventLog(path, stream_to=fallback)
    log.write(make_event("source_opened", "cam0"))
    assert log._fh is not None
    log._fh.close()
    log._fh = _BrokenFile()  # the disk fills up from here on
    rec = log.write(make_event("prediction", "cam0", n=1))  # does not raise
    log.write(make_event("stopped", "cam0", frames=1, windows=1, drops=0))
    log.close()
    assert log.failures == 1
    assert [e["seq"] for e in read_events(path)] == [0]
    moved = [json.loads(line) for line in fallback.getvalue().splitlines()]
    assert [e["type"] for e in moved] == ["error", "prediction", "stopped"]
    assert "No space left" in moved[0]["message"] and moved[0]["source"] == "events"
    assert [e["seq"] for e in moved] == [1, 2, 3]  # contiguous across the switch
    assert rec["seq"] == 2


def test_dev_full_falls_back_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is Linux-only")
    log = EventLog("/dev/full")
    for i in range(3):
        log.write(make_event("prediction", "cam0", i=i))
    log.close()
    err = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert err[0]["type"] == "error" and "/dev/full" in err[0]["message"]
    assert [e.get("i") for e in err[1:]] == [0, 1, 2]
    assert log.failures == 1 and log.dropped == 0


def test_fallback_failure_is_counted_not_raised() -> None:
    dead = io.StringIO()
    dead.close()
    log = EventLog(None, stream_to=dead)
    log.write(make_event("source_lost", "cam0"))
    assert log.dropped == 1


def test_null_log_and_stream_log() -> None:
    null = EventLog(None)
    assert null.write(make_event("source_opened", "cam0"))["seq"] == 0
    assert null.write(make_event("source_lost", "cam0"))["seq"] == 1
    null.close()
    buf = io.StringIO()
    EventLog(None, stream_to=buf).write(make_event("source_opened", "cam0"))
    assert json.loads(buf.getvalue())["type"] == "source_opened"


def test_close_is_idempotent_and_late_writes_are_dropped(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.close()
    log.close()
    log.write(make_event("prediction", "cam0"))
    assert log.dropped == 1
    assert read_events(tmp_path / "events.jsonl") == []


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        for _ in range(3):
            log.write(make_event("prediction", "cam0"))
    with path.open("a") as fh:
        fh.write('{"type": "predic')  # a crash in the middle of a line
    assert [e["seq"] for e in read_events(path)] == [0, 1, 2]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"seq": 0}\n{"seq": 1}')
    assert [e["seq"] for e in read_events(path)] == [0, 1]


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"seq": 0}\nnot json\n{"seq": 2}\n')
    with pytest.raises(DataError, match="line 2"):
        read_events(path)
    with pytest.raises(DataError, match="cannot read"):
        read_events(tmp_path / "missing.jsonl")


def test_unopenable_path_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot open the event log"):
        EventLog(blocker / "events.jsonl")


@pytest.mark.parametrize(("kwargs", "name"), [({"max_bytes": 0}, "max_bytes"),
                                              ({"backups": -1}, "backups")])
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        EventLog(tmp_path / "e.jsonl", **kwargs)  # type: ignore[arg-type]


def test_make_event_stamps_wall_time() -> None:
    ev = make_event("source_restored", "cam0", attempts=3)
    assert ev.type == "source_restored" and ev.fields == {"attempts": 3}
    assert ev.ts > 1.6e9
    assert make_event("error", "cam0", ts=5).ts == 5.0
