"""The web view over real HTTP on 127.0.0.1: hub, endpoints, token, upload, shutdown."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.errors import ConfigError
from streamclf.live.events import EventLog, make_event, read_events
from streamclf.live.parts import StreamParts
from streamclf.live.pipeline import LivePipeline
from streamclf.media.sources import SyntheticSource
from streamclf.web import WebHub, WebServer, parse_bind
from streamclf.web.link import HubSink, mjpeg_frame_sinks
from streamclf.web.uploads import ClassifierFactory, ClassifyService
from tests import web_support
from tests.web_support import LogCapture, multipart

SECRET = "S3cretPW"
#: The keys of one stream's health in ``/api/status`` (``StreamHealth.as_dict()``).
HEALTH_KEYS = {"stream", "source", "model", "backend", "source_state", "input_fps",
               "inference_fps", "clips_per_s", "latency_ms", "frames", "windows", "drops",
               "skipped_windows", "reconnects", "stable_label", "labels", "scores"}


# -- helpers -------------------------------------------------------------------------------
def request(server: WebServer, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request; the headers answered are looked up case-insensitively."""
    return web_support.request(server.port, method, path, body, headers, timeout)


def read_mjpeg_frames(server: WebServer, path: str, count: int) -> list[bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    ctype = resp.getheader("Content-Type") or ""
    assert ctype.startswith("multipart/x-mixed-replace; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    frames = []
    while len(frames) < count:
        line = resp.fp.readline()
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        while (h := resp.fp.readline().strip()):
            key, _, value = h.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        frames.append(resp.fp.read(int(headers["content-length"])))
    conn.close()
    return frames


def read_sse(server: WebServer, path: str, count: int) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    events = []
    while len(events) < count:
        line = resp.fp.readline().decode()
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    conn.close()
    return events


@pytest.fixture
def hub() -> WebHub:
    hub = WebHub()
    hub.add_stream("cam0", lambda: {"input_fps": 30.0, "source_state": "live"})
    hub.add_stream("cam1", lambda: {"input_fps": 15.0, "source_state": "lost"})
    return hub


@pytest.fixture
def server(hub: WebHub) -> Iterator[WebServer]:
    srv = WebServer(hub, "127.0.0.1", 0).start()
    yield srv
    srv.stop()


def jpeg(value: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((24, 32, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def publish_frames(hub: WebHub, stream: str, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        i = 0
        while not stop.is_set():
            hub.publish_frame(stream, jpeg(i % 250))
            i += 1
            stop.wait(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- hub -----------------------------------------------------------------------------------
def test_hub_frames_wait_and_time_out(hub: WebHub) -> None:
    t0 = time.monotonic()
    assert hub.next_frame("cam0", 0, 0.2) is None
    assert 0.15 < time.monotonic() - t0 < 1.0
    hub.publish_frame("cam0", b"a")
    assert hub.next_frame("cam0", 0, 0.1) == (1, b"a")
    assert hub.next_frame("cam0", 1, 0.05) is None
    assert hub.next_frame("nope", 0, 0.05) is None
    hub.close()
    t0 = time.monotonic()
    assert hub.next_frame("cam0", 1, 5.0) is None
    assert time.monotonic() - t0 < 0.5


def test_hub_events_backlog_filter_and_bounded_queue(hub: WebHub) -> None:
    for i in range(3):
        hub.publish_event({"type": "prediction", "stream": "cam0", "seq": i})
    everything = hub.subscribe()
    only_cam1 = hub.subscribe("cam1")
    assert [everything.get(0.1)["seq"] for _ in range(3)] == [0, 1, 2]  # backlog
    assert only_cam1.get(0.05) is None
    hub.publish_event({"type": "source_lost", "stream": "cam1", "seq": 3})
    assert only_cam1.get(0.1)["type"] == "source_lost"
    for i in range(2000):  # a reader that never reads: its queue stays bounded
        hub.publish_event({"type": "prediction", "stream": "cam0", "seq": 4 + i})
    assert len(everything._queue) == 500
    assert everything.get(0.1)["seq"] == 2003 - 499  # the oldest were dropped
    everything.close()
    only_cam1.close()
    assert hub._subscribers == []


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind(":9000") == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:80") == ("::1", 80)
    for bad in ("host:port", "127.0.0.1:70000", ""):
        with pytest.raises(ConfigError, match="--web"):
            parse_bind(bad)


# -- endpoints -----------------------------------------------------------------------------
def test_page_status_and_unknown_paths(server: WebServer) -> None:
    status, headers, body = request(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for needle in (b'id="grid"', b"stream.mjpg", b"EventSource", b"api/status", b"api/classify",
                   b'href="review"'):
        assert needle in body
    status, _, body = request(server, "/api/status")
    data = json.loads(body)
    assert status == 200
    assert data["streams"] == {"cam0": {"input_fps": 30.0, "source_state": "live"},
                               "cam1": {"input_fps": 15.0, "source_state": "lost"}}
    assert data["upload"] is False
    assert request(server, "/nope")[0] == 404
    assert request(server, "/api/status", method="POST", body=b"")[0] == 405
    assert request(server, "/api/classify", method="POST", body=b"x")[0] == 503


def test_mjpeg_streams_frames_of_the_selected_stream(hub: WebHub, server: WebServer) -> None:
    stop = threading.Event()
    threads = [publish_frames(hub, "cam0", stop)]
    hub.publish_frame("cam1", jpeg(200))
    try:
        frames = read_mjpeg_frames(server, "/stream.mjpg", 3)
        assert len(set(frames)) == 3  # new frames, not the same one again
        import cv2

        first = cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR)
        assert first.shape == (24, 32, 3)
        cam1 = read_mjpeg_frames(server, "/stream.mjpg?stream=cam1", 1)[0]
        assert cam1 == jpeg(200)
        status, _, body = request(server, "/stream.mjpg?stream=cam9")
        assert status == 404 and json.loads(body)["streams"] == ["cam0", "cam1"]
        # The viewer count drops once a write to the departed client fails, so the
        # producer stops encoding for nobody.
        deadline = time.monotonic() + 5
        while hub.has_viewers("cam0") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not hub.has_viewers("cam0")
    finally:
        stop.set()
        for t in threads:
            t.join(2)


def test_sse_carries_event_log_objects(hub: WebHub, server: WebServer, tmp_path: Path) -> None:
    log = EventLog(tmp_path / "ev.jsonl")
    hub.publish_event(log.write(make_event("source_opened", "cam0", source="x")))

    def later() -> None:
        time.sleep(0.3)
        hub.publish_event(log.write(make_event("prediction", "cam1", labels=["a"],
                                               scores=[0.5])))
        hub.publish_event(log.write(make_event("label_start", "cam0", label="a", score=0.5)))

    threading.Thread(target=later, daemon=True).start()
    got = read_sse(server, "/events", 3)
    log.close()
    assert got == read_events(tmp_path / "ev.jsonl")  # the same objects as the log
    hub.publish_event({"type": "error", "stream": "cam1", "seq": 9})
    only = read_sse(server, "/events?stream=cam1", 2)
    assert [e["stream"] for e in only] == ["cam1", "cam1"]


def test_stop_ends_streaming_responses_promptly(hub: WebHub) -> None:
    server = WebServer(hub, "127.0.0.1", 0).start()
    clients = []
    for path in ("/stream.mjpg", "/events"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        clients.append((conn, conn.getresponse()))
    t0 = time.monotonic()
    assert server.stop(timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0
    for conn, resp in clients:
        resp.read()  # the server ended the response: read returns instead of hanging
        conn.close()


def test_stop_drops_clients_that_stopped_reading(hub: WebHub) -> None:
    """Viewers whose socket buffers are full (they stopped reading) do not hold up stop,
    and are dropped quietly: no error or traceback logged."""
    import os
    import socket

    server = WebServer(hub, "127.0.0.1", 0).start()
    stop = threading.Event()

    def publish() -> None:
        big = os.urandom(200_000)
        while not stop.is_set():
            hub.publish_frame("cam0", big)
            stop.wait(0.005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    stalled = []
    with LogCapture().installed() as logs:
        try:
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
                             "\r\n\r\n".encode())
                stalled.append(sock)
            deadline = time.monotonic() + 5
            while not hub.has_viewers("cam0") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hub.has_viewers("cam0")
            time.sleep(1.0)  # their buffers fill up
            t0 = time.monotonic()
            assert server.stop()
            assert time.monotonic() - t0 < 2.0
        finally:
            stop.set()
            publisher.join(2)
            for sock in stalled:
                sock.close()
    assert logs.errors() == []


# -- token ---------------------------------------------------------------------------------
def test_non_loopback_bind_needs_a_token(hub: WebHub) -> None:
    with pytest.raises(ConfigError, match=r"needs a token.*--token.*STREAMCLF_TOKEN"):
        WebServer(hub, "0.0.0.0", 0)


def test_token_is_required_on_every_endpoint(hub: WebHub) -> None:
    token = "tok-" + uuid.uuid4().hex
    server = WebServer(hub, "0.0.0.0", 0, token=token).start()  # reached via 127.0.0.1 only
    try:
        for path in ("/", "/api/status", "/stream.mjpg", "/events", "/api/status?token=wrong"):
            status, _, body = request(server, path)
            assert status == 401, path
            assert token.encode() not in body
        assert request(server, "/api/classify", "POST", b"x")[0] == 401
        assert request(server, "/api/status",
                       headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert request(server, "/api/status", headers={"Authorization": "Bearer x"})[0] == 401
        status, headers, _ = request(server, f"/?token={token}")
        assert status == 200
        cookie = headers["Set-Cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert request(server, "/api/status", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        assert request(server, "/api/status", headers={"Cookie": "streamclf_token=no"})[0] == 401
    finally:
        server.stop()


def test_taken_port_is_a_config_error(server: WebServer, hub: WebHub) -> None:
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        WebServer(hub, "127.0.0.1", server.port)


# -- upload --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classify_service() -> Iterator[ClassifyService]:
    """Classifies in a spawned worker process (the default isolation)."""
    service = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"))
    yield service
    service.close()


def test_upload_classifies_a_real_video(hub: WebHub, tai_chi_clip: Path,
                                        corrupted_clip: Path,
                                        classify_service: ClassifyService) -> None:
    from streamclf.offline.classify import ActionClassifier

    server = WebServer(hub, "127.0.0.1", 0, classifier=classify_service,
                       max_upload_mb=1.0).start()
    try:
        body, ctype = multipart(tai_chi_clip.read_bytes(), tai_chi_clip.name)
        # The first upload starts the worker process (imports torch, builds the model).
        status, _, out = request(server, "/api/classify", "POST", body, {"Content-Type": ctype},
                                 timeout=120)
        assert status == 200, out
        result = json.loads(out)
        expected = ActionClassifier("x3d_xs", "random", device="cpu").classify_file(tai_chi_clip)
        assert result["labels"] == expected.labels
        assert result["scores"] == pytest.approx(expected.scores, abs=1e-4)
        assert result["model"] == "x3d_xs" and result["file"] == tai_chi_clip.name

        body, ctype = multipart(corrupted_clip.read_bytes(), "bad.mp4")
        status, _, out = request(server, "/api/classify", "POST", body, {"Content-Type": ctype})
        assert status == 400
        error = json.loads(out)["error"]
        assert "bad.mp4" in error and "streamclf-upload-" not in error

        body, ctype = multipart(b"\x00" * (2 * 1024 * 1024), "big.mp4")
        status, _, out = request(server, "/api/classify", "POST", body, {"Content-Type": ctype})
        assert status == 413 and "1 MB" in json.loads(out)["error"]
    finally:
        server.stop()


# -- a pipeline in the web view ------------------------------------------------------------
def test_pipeline_attached_to_the_web_view(tmp_path: Path) -> None:
    """A live synthetic stream through a real pipeline: health, events and overlay frames
    reach the HTTP endpoints, and the source's password never does."""
    source = f"rtsp://admin:{SECRET}@127.0.0.1:8554/cam"
    config = RunConfig(events=str(tmp_path / "ev.jsonl"), quiet=True,
                       streams=[StreamConfig(id="door", source=source, stride=0.2)])
    backend = FakeBackend(labels=("walking", "running", "waving"),
                          script=[[0.7, 0.2, 0.1]])

    def open_stream(stream: StreamConfig) -> StreamParts:
        return lambda: SyntheticSource(320, 240, 30.0, live=True), [], 30.0, lambda: None

    hub = WebHub()
    pipeline = LivePipeline(config, sinks=[HubSink(hub)], frame_sinks=mjpeg_frame_sinks(hub),
                            backend=backend, open_stream=open_stream)
    server = WebServer(hub, "127.0.0.1", 0).start()
    runner = threading.Thread(target=pipeline.run, kwargs={"duration_s": 4.0}, daemon=True)
    runner.start()
    try:
        events = read_sse(server, "/events?stream=door", 3)
        assert events[0]["type"] == "source_opened"
        assert any(e["type"] == "prediction" for e in events)
        frames = read_mjpeg_frames(server, "/stream.mjpg?stream=door", 2)
        import cv2

        image = cv2.imdecode(np.frombuffer(frames[-1], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
        body = request(server, "/api/status")[2]
        health = json.loads(body)["streams"]["door"]
        assert set(health) == HEALTH_KEYS
        assert (health["stream"], health["model"], health["backend"]) == ("door", "x3d_xs",
                                                                          "fake")
        assert health["source_state"] == "live" and health["labels"][0] == "walking"
        assert health["input_fps"] > 20 and health["windows"] >= 1
        assert 0 < health["latency_ms"] < 2000 and health["drops"] >= 0
        assert health["clips_per_s"] >= 0 and health["skipped_windows"] >= 0
        assert SECRET not in body.decode() and "admin:***@" in health["source"]
    finally:
        runner.join(10)
        server.stop()
    assert not runner.is_alive()
    assert SECRET not in (tmp_path / "ev.jsonl").read_text()
    assert read_events(tmp_path / "ev.jsonl")[-1]["type"] == "stopped"
