"""``GET /metrics``: Prometheus metrics of a run, scraped over real HTTP on 127.0.0.1 and
parsed with prometheus_client's own parser; the web view's token rules apply."""

from __future__ import annotations

import functools
import http.client
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live import control
from streamclf.live.events import make_event, read_events
from streamclf.live.pipeline import LivePipeline
from streamclf.live.sinks import SinkHealth
from streamclf.media.sources import SyntheticSource
from streamclf.types import EventType, StreamHealth
from streamclf.web import WebHub, WebServer
from streamclf.web.metrics import RunMetrics
from tests.alert_run import FALL, LABELS, RULE

TOKEN = "metrics-T0ken"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(server: WebServer, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def health(stream: str, **kw: Any) -> StreamHealth:
    base: dict[str, Any] = {
        "stream": stream, "source": "synthetic", "model": "x3d_xs", "backend": "fake",
        "source_state": "live", "input_fps": 29.5, "inference_fps": 2.5, "clips_per_s": 1.25,
        "latency_ms": 120.0, "frames": 300, "windows": 11, "drops": 4, "skipped_windows": 1,
        "reconnects": 2, "stable_label": None}
    return StreamHealth(**{**base, **kw})


def test_metrics_from_health_events_and_sinks() -> None:
    streams = {"door": health("door"), "hall": health("hall", source_state="lost")}
    metrics = RunMetrics(lambda: streams)
    metrics.watch_sinks(lambda: [SinkHealth("webhook", 7, 40, 3, 0)])
    for ms in (80.0, 150.0, 2500.0):
        metrics.write(make_event(EventType.PREDICTION, "door", latency_ms=ms))
    metrics.write(make_event(EventType.ALERT, "door", phase="start", label="falling"))
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    got = parse(body.decode())
    door, hall = (("stream", "door"),), (("stream", "hall"),)
    assert got[("streamclf_input_fps", door)] == 29.5
    assert got[("streamclf_clips_per_second", door)] == 1.25
    assert got[("streamclf_latency_last_seconds", door)] == pytest.approx(0.12)
    assert got[("streamclf_dropped_frames_total", door)] == 4
    assert got[("streamclf_reconnects_total", door)] == 2
    assert (got[("streamclf_up", door)], got[("streamclf_up", hall)]) == (1.0, 0.0)
    assert got[("streamclf_latency_seconds_count", door)] == 3
    assert got[("streamclf_latency_seconds_bucket", (("le", "0.1"), ("stream", "door")))] == 1
    assert got[("streamclf_latency_seconds_bucket", (("le", "3.0"), ("stream", "door")))] == 3
    assert got[("streamclf_alerts_total", (("label", "falling"), ("stream", "door")))] == 1
    assert got[("streamclf_alert_active", door)] == 1
    webhook = (("sink", "webhook"),)
    assert got[("streamclf_sink_queue_depth", webhook)] == 7
    assert got[("streamclf_sink_dropped_events_total", webhook)] == 3
    metrics.write(make_event(EventType.ALERT, "door", phase="end", label="falling"))
    assert parse(metrics.exposition()[0].decode())[("streamclf_alert_active", door)] == 0
    # Each server has a registry of its own: a second one starts from zero.
    other = RunMetrics(dict)
    assert not any(name == "streamclf_latency_seconds_count"
                   for name, _ in parse(other.exposition()[0].decode()))
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def scraper(server: WebServer, out: list[Samples], stop: threading.Event
            ) -> Callable[[], None]:
    def run() -> None:
        while not stop.wait(0.25):
            try:
                status, _, text = get(server, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
            except OSError:
                continue
            if status == 200:
                out.append(parse(text))
    return run


@pytest.mark.slow
def test_a_run_is_scraped_with_its_streams_sinks_latency_and_alerts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's own wiring (``run_streams`` with ``--web``), on a scripted model and a live
    synthetic camera: a scraper polls ``/metrics`` during the run."""
    stream = StreamConfig(id="door", source="synthetic", smooth=1, threshold=0.5,
                          start_after=1, alerts=RULE)
    config = RunConfig(model="x3d_xs", events=str(tmp_path / "ev.jsonl"), quiet=True,
                       duration=5.0, streams=(stream,))

    def open_parts(_: StreamConfig) -> tuple[Any, list[Any], float, Callable[[], None]]:
        return (lambda: SyntheticSource(64, 48, 30.0, live=True)), [], 30.0, lambda: None

    monkeypatch.setattr(control, "LivePipeline", functools.partial(
        LivePipeline, backend=FakeBackend(LABELS, [FALL]), open_stream=open_parts))
    server = WebServer(WebHub(), "127.0.0.1", 0, token=TOKEN).start()
    scrapes: list[Samples] = []
    stop = threading.Event()
    thread = threading.Thread(target=scraper(server, scrapes, stop), daemon=True)
    thread.start()
    try:
        assert control.run_streams(config, None, {}, server) == 0
    finally:
        stop.set()
        thread.join(5)
    try:
        status, _, _ = get(server, "/metrics")
        assert status == 401  # the token rules of every endpoint
        status, ctype, text = get(server, f"/metrics?token={TOKEN}")
        assert status == 200 and ctype.startswith("text/plain")
    finally:
        server.stop()
    door = (("stream", "door"),)
    live = [s for s in scrapes if ("streamclf_up", door) in s]
    assert len(live) >= 5, f"{len(scrapes)} scrapes, {len(live)} with the stream"
    mid = live[len(live) // 2]  # mid-run (at the end the stream is stopping)
    assert mid[("streamclf_up", door)] == 1.0
    assert 20 <= mid[("streamclf_input_fps", door)] <= 40
    assert mid[("streamclf_clips_per_second", door)] > 0.5
    assert mid[("streamclf_frames_total", door)] > 60
    assert mid[("streamclf_dropped_frames_total", door)] == 0
    assert mid[("streamclf_reconnects_total", door)] == 0
    sinks = {dict(labels)["sink"] for name, labels in mid
             if name == "streamclf_sink_queue_depth"}
    assert {"events", "metrics"} <= sinks
    assert mid[("streamclf_sink_dropped_events_total", (("sink", "metrics"),))] == 0
    final = parse(text)
    log = read_events(tmp_path / "ev.jsonl")
    preds = sum(e["type"] == "prediction" for e in log)
    assert final[("streamclf_latency_seconds_count", door)] == preds >= 4
    assert final[("streamclf_alerts_total", (("label", "falling"), ("stream", "door")))] == 1
    assert final[("streamclf_alert_active", door)] == 0  # ended with the run
    assert [e["phase"] for e in log if e["type"] == "alert"] == ["start", "end"]
    assert not any(("streamclf_up", door) == key for key in final)  # the stream has left
