"""Several streams on one batching inference worker: batching, fairness, add/remove at run
time (web API and SIGHUP reload), and the CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import pytest

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.control import StreamController
from streamclf.live.events import read_events
from streamclf.live.parts import open_stream_parts
from streamclf.live.pipeline import FrameSinks, LivePipeline
from streamclf.live.sinks import Sink
from streamclf.media.sources import open_source
from streamclf.web import WebHub, WebServer
from streamclf.web.link import HubSink, mjpeg_frame_sinks
from tests import web_support
from tests.conftest import LOCAL_DATA, REPO

LABELS = ("walking", "running", "waving")


def open_parts(config: StreamConfig) -> tuple[Any, list[Any], float, Callable[[], None]]:
    """open_stream_parts for synthetic sources, without sinks: opens at once (a bad spec
    fails the add), the capture thread's first open takes that source. Other sources: the
    real parts."""
    if not config.source.startswith("synthetic"):
        return open_stream_parts(config)
    first = [open_source(config.source, live=True)]

    def factory() -> Any:
        return first.pop() if first else open_source(config.source, live=True)

    def close() -> None:
        for source in first:
            source.close()

    return factory, [], 30.0, close


def build(tmp_path: Path, ids: list[str], delay_s: float, max_batch: int = 4,
          max_wait_ms: float = 10.0, *, status_out: TextIO | None = None,
          sinks: Sequence[Sink] = (), frame_sinks: FrameSinks | None = None,
          ) -> tuple[LivePipeline, FakeBackend, RunConfig]:
    backend = FakeBackend(labels=LABELS, script=[[0.6, 0.3, 0.1]], delay_s=delay_s)
    config = RunConfig(
        model="x3d_xs", events=str(tmp_path / "ev.jsonl"), quiet=True, max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        streams=tuple(StreamConfig(id=sid, source="synthetic:320x240@30", stride=0.1)
                      for sid in ids))
    multi = LivePipeline(config, backend=backend, open_stream=open_parts, status_out=status_out,
                         sinks=sinks, frame_sinks=frame_sinks)
    return multi, backend, config


def check_log(path: Path, ids: set[str]) -> list[dict[str, Any]]:
    events = read_events(path)
    assert [e["seq"] for e in events] == list(range(len(events)))
    stopped = {e["stream"]: e for e in events if e["type"] == "stopped"}
    assert set(stopped) == ids
    for sid, e in stopped.items():
        windows = sum(1 for p in events if p["type"] == "prediction" and p["stream"] == sid)
        assert e["windows"] == windows and e["frames"] > 0
        last = max(i for i, p in enumerate(events) if p["stream"] == sid)
        assert events[last]["type"] == "stopped"  # nothing of a stream after its `stopped`
    return events


def test_saturated_streams_share_batches_fairly(tmp_path: Path) -> None:
    """Four live streams wanting 10 clips/s each, a model that takes 80 ms per call: the
    worker batches across streams and every stream gets its share."""
    ids = ["a", "b", "c", "d"]
    status_out = io.StringIO()
    multi, backend, _ = build(tmp_path, ids, delay_s=0.08, status_out=status_out)
    result = multi.run(duration_s=4.0)
    assert result.error is None
    events = check_log(tmp_path / "ev.jsonl", set(ids))
    # Per-stream health: in every prediction event, and in the status lines.
    preds = [e for e in events if e["type"] == "prediction"]
    assert all(e["input_fps"] > 0 and e["drops"] >= 0 and e["latency_ms"] > 0 for e in preds
               if e["seq"] > 20)
    status = status_out.getvalue().splitlines()
    for sid in ids:
        line = next(ln for ln in reversed(status) if ln.startswith(f"[{sid}] in "))
        assert re.search(r"in +\d+\.\d fps \| +\d+\.\d clips/s \| latency \d+ ms \| drops \d+",
                         line), line
    per_stream = Counter(e["stream"] for e in events if e["type"] == "prediction")
    assert min(per_stream.values()) >= 0.7 * max(per_stream.values()), per_stream
    assert backend.clips / backend.calls > 2.0  # batched: more clips than model calls
    assert multi.worker.batches == backend.calls
    # One call per window would cap the total at 1 / 0.08 s = 12.5 clips/s.
    assert sum(per_stream.values()) / 4.0 > 15


def test_one_at_a_time_when_max_batch_is_1(tmp_path: Path) -> None:
    multi, backend, _ = build(tmp_path, ["a", "b"], delay_s=0.02, max_batch=1)
    multi.run(duration_s=3.0)
    assert backend.calls == backend.clips > 0
    check_log(tmp_path / "ev.jsonl", {"a", "b"})


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    payload = None if body is None else json.dumps(body).encode()
    status, _, answer = web_support.request(port, method, path, payload,
                                            {"Content-Type": "application/json"})
    return status, json.loads(answer)


def test_add_and_remove_streams_over_http(tmp_path: Path) -> None:
    hub = WebHub()
    server = WebServer(hub, "127.0.0.1", 0)
    # wired as run_streams wires the web view: hub sink, MJPEG frame sinks, a controller
    multi, _, config = build(tmp_path, ["a", "b"], delay_s=0.01, sinks=[HubSink(hub)],
                             frame_sinks=mjpeg_frame_sinks(hub))
    controller = StreamController(multi, None, {}, server)
    controller.track(config)
    server.controller = controller
    server.start()
    runner = threading.Thread(target=multi.run, kwargs={"duration_s": 20.0}, daemon=True)
    runner.start()
    try:
        time.sleep(1.0)
        status, body = request(server.port, "POST", "/api/streams",
                               {"id": "c", "source": "synthetic:160x120@30"})
        assert status == 201 and body["streams"] == ["a", "b", "c"]
        assert request(server.port, "POST", "/api/streams",
                       {"id": "c", "source": "synthetic"})[0] == 400  # id taken
        assert request(server.port, "POST", "/api/streams",
                       {"id": "x", "source": "synthetic", "model": "x3d_m"})[0] == 400
        assert request(server.port, "POST", "/api/streams",
                       {"id": "y", "source": "nope://x"})[0] == 400
        time.sleep(1.5)
        status, body = request(server.port, "DELETE", "/api/streams/a")
        assert status == 200 and body["removed"] == "a" and body["windows"] > 0
        assert request(server.port, "DELETE", "/api/streams/a")[0] == 404
        assert request(server.port, "GET", "/api/streams")[1] == {"streams": ["b", "c"]}
        removed_at = time.time()
        time.sleep(1.0)
        health = request(server.port, "GET", "/api/status")[1]["streams"]
        assert set(health) == {"b", "c"} and health["c"]["windows"] > 0
        # A stream that ends by itself (a file at pace fast) leaves the page and the
        # controller, and its id can be used again.
        clip = {"id": "f", "source": str(LOCAL_DATA / "ta_chi.mp4"), "pace": "fast"}
        assert request(server.port, "POST", "/api/streams", clip)[0] == 201
        deadline = time.monotonic() + 20
        while "f" in hub.streams and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "f" not in request(server.port, "GET", "/api/status")[1]["streams"]
        assert request(server.port, "GET", "/api/streams")[1] == {"streams": ["b", "c"]}
        assert request(server.port, "POST", "/api/streams", clip)[0] == 201
        assert "f" in request(server.port, "GET", "/api/status")[1]["streams"]
    finally:
        multi.request_stop()
        runner.join(10)
        server.stop()
    every = read_events(tmp_path / "ev.jsonl")
    of_f = [e for e in every if e["stream"] == "f"]
    (tmp_path / "abc.jsonl").write_text("".join(
        json.dumps({**e, "seq": i}) + "\n"
        for i, e in enumerate(e for e in every if e["stream"] != "f")))
    events = check_log(tmp_path / "abc.jsonl", {"a", "b", "c"})
    # "f" ran twice to its end: 11 windows each (10 s file, 1.6 s windows every 0.8 s).
    assert next(e["windows"] for e in of_f if e["type"] == "stopped") == 11
    assert [e["type"] for e in of_f].count("source_opened") == 2
    later = [e for e in events if e["type"] == "prediction" and e["ts"] > removed_at + 0.2]
    assert {e["stream"] for e in later} == {"b", "c"}  # the others kept going


@pytest.mark.slow
def test_cli_runs_a_streams_config_and_reloads_on_sighup(tmp_path: Path) -> None:
    """`streamclf run --config` with a `streams:` list and a real model; SIGHUP applies an
    edited config (one stream removed, one added) without touching the third."""
    config = tmp_path / "cams.yaml"
    events = tmp_path / "ev.jsonl"

    def write(ids: list[str]) -> None:
        items = "".join(f"  - id: {i}\n    source: synthetic:320x240@30\n" for i in ids)
        config.write_text(f"weights: random\nbackend: torch\nstride: 0.5\nquiet: true\n"
                          f"max_batch: 2\nstreams:\n{items}")

    write(["keep", "drop"])
    proc = subprocess.Popen([sys.executable, "-m", "streamclf", "run", "--config", str(config),
                             "--events", str(events)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def predictions() -> Counter[str]:
            if not events.exists():
                return Counter()
            return Counter(e["stream"] for e in read_events(events)
                           if e["type"] == "prediction")

        deadline = time.monotonic() + 60
        while min(predictions().get("keep", 0), predictions().get("drop", 0)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        write(["keep", "new"])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while predictions().get("new", 0) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    log = check_log(events, {"keep", "drop", "new"})
    opened = [e["stream"] for e in log if e["type"] == "source_opened"]
    assert opened.count("keep") == 1  # never restarted
    drop_stop = next(i for i, e in enumerate(log) if e["type"] == "stopped"
                     and e["stream"] == "drop")
    new_open = next(i for i, e in enumerate(log) if e["type"] == "source_opened"
                    and e["stream"] == "new")
    keep_after = [e for e in log[drop_stop:] if e["type"] == "prediction"
                  and e["stream"] == "keep"]
    assert drop_stop < new_open and keep_after


@pytest.mark.slow
def test_cli_repeated_sources_share_one_batching_model(tmp_path: Path, tai_chi_clip: Path) -> None:
    """`--source` twice (one named, one default id) on a real model: both streams run to their
    end in one process, one event log, every window of each classified."""
    events = tmp_path / "ev.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "streamclf", "run", "--source", f"door={tai_chi_clip}",
         "--source", str(tai_chi_clip), "--pace", "fast", "--weights", "random",
         "--backend", "torch", "--stride", "0.8", "--max-batch", "2", "--max-wait-ms", "200",
         "--quiet", "--events", str(events)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr
    log = check_log(events, {"door", "cam1"})
    preds = [e for e in log if e["type"] == "prediction"]
    # 10 s clip, 1.6 s windows every 0.8 s: 11 windows each, every one classified (fast pace).
    assert Counter(e["stream"] for e in preds) == {"door": 11, "cam1": 11}


def test_a_hostile_reload_is_refused_and_later_reloads_work(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP with an alias bomb in the config once killed the reload thread; now it is one
    logged error, the streams keep running, and the next reload applies."""
    from tests.test_config import _alias_bomb

    multi, _, config = build(tmp_path, ["a"], delay_s=0.01)
    path = tmp_path / "cams.yaml"
    controller = StreamController(multi, str(path), {"quiet": True})
    controller.track(config)
    multi.start()
    try:
        path.write_text(_alias_bomb())
        with caplog.at_level(logging.ERROR, logger="streamclf"):
            controller.reload()
        assert "expands to more than" in caplog.text and multi.stream_ids == ["a"]
        path.write_text("model: x3d_xs\nstreams:\n  - {id: a, source: 'synthetic:320x240@30', "
                        "stride: 0.1}\n  - {id: b, source: 'synthetic:64x48@10'}\n")
        controller.reload()
        assert sorted(multi.stream_ids) == ["a", "b"]
    finally:
        multi.stop()
