"""The review side of the web view over real HTTP on 127.0.0.1: ``/api/alerts`` from a real
event store, ``/clips/NAME`` (Range requests, traversal, symlinks, token), and the
``/review`` and live pages in headless Chromium (a real H.264 clip plays in the page)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.sinks.store import EventStore
from streamclf.types import Event, EventType
from streamclf.web import WebHub, WebServer
from tests.web_support import live_web, raw, request

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not "
                                    "installed (.ci/run installs it with apt-get install "
                                    "chromium)")


def make_h264(path: Path, seconds: float = 2.0, fps: int = 15) -> None:
    """A real H.264 MP4 (yuv420p, moov first, so a browser plays it while it loads): a bright
    square moving over a dark gradient."""
    import av

    width, height = 320, 240
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        ramp = np.linspace(0, 120, width, dtype=np.uint8)
        for i in range(int(seconds * fps)):
            img = np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2)
            x = 10 + i * 8 % (width - 60)
            img[90:150, x:x + 50] = (250, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_jpeg(path: Path) -> None:
    import cv2

    img = np.zeros((240, 320, 3), np.uint8)
    img[60:180, 80:240] = (40, 200, 250)
    assert cv2.imwrite(str(path), img)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``events.db`` with two alerts (door: ended, with its clip and snapshot; hall: still
    on) and labels; ``clips/`` with the clip, the snapshot, and traps: a file and a symlink
    out of the folder, a symlink inside it, a hidden file, a folder, a text file."""
    root = tmp_path_factory.mktemp("review")
    clips = root / "clips"
    clips.mkdir()
    make_h264(clips / "door-A1.mp4")
    make_jpeg(clips / "door-A1.jpg")
    (root / "secret.mp4").write_bytes(b"SECRET-BYTES" * 10)
    os.symlink(root / "secret.mp4", clips / "escape.mp4")
    os.symlink("door-A1.mp4", clips / "inside.mp4")
    (clips / ".hidden.mp4").write_bytes(b"hidden")
    (clips / "folder.mp4").mkdir()
    (clips / "notes.txt").write_text("not a clip")
    ev = [
        Event(EventType.LABEL_START, "door", T0, {"label": "falling", "score": 0.8}, 0),
        Event(EventType.ALERT, "door", T0 + 1, {
            "alert_id": "A1", "phase": "start", "label": "falling", "score": 0.8,
            "max_score": 0.8, "media_ts": 3.0}, 1),
        Event(EventType.ALERT, "door", T0 + 4, {
            "alert_id": "A1", "phase": "end", "label": "falling", "score": 0.3,
            "max_score": 0.93, "reason": "label", "clip": str(clips / "door-A1.mp4"),
            "snapshot": str(clips / "door-A1.jpg")}, 2),
        Event(EventType.ALERT, "hall", T0 + 100, {
            "alert_id": "B7", "phase": "start", "label": "running", "score": 0.7,
            "max_score": 0.7}, 3),
    ]
    with EventStore(root / "events.db") as store:
        for event in ev:
            store.write(event)
    return root


@contextmanager
def served(site: Path, **args: object) -> Iterator[WebServer]:
    server = WebServer(WebHub(), "127.0.0.1", 0, **{  # type: ignore[arg-type]
        "db": str(site / "events.db"), "clips_dir": str(site / "clips"), **args})
    server.start()
    try:
        yield server
    finally:
        assert server.stop()


def get_json(port: int, path: str, **headers: str) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path, headers=headers)
    return status, json.loads(body)


# -- /api/alerts ------------------------------------------------------------------------
def test_alerts_api_lists_filters_and_bounds(site: Path) -> None:
    with served(site) as server:
        port = server.port
        status, out = get_json(port, "/api/alerts")
        assert status == 200 and out["limit"] == 50
        alerts = out["alerts"]
        assert isinstance(alerts, list) and [a["alert_id"] for a in alerts] == ["B7", "A1"]
        door = alerts[1]
        assert door["clip_url"] == "clips/door-A1.mp4"
        assert door["snapshot_url"] == "clips/door-A1.jpg"
        assert (door["start_ts"], door["end_ts"], door["max_score"]) == (T0 + 1, T0 + 4, 0.93)
        assert alerts[0]["end_ts"] is None and alerts[0]["clip_url"] is None
        for query, ids in (("stream=door", ["A1"]), ("label=running", ["B7"]),
                           ("since=2026-11-30T00:55:00Z", ["B7"]), ("since=1h", []),
                           ("limit=1", ["B7"]), ("stream=nope", []),
                           ("stream=door&label=falling&since=2026-11-29&limit=500", ["A1"])):
            status, out = get_json(port, "/api/alerts?" + query)
            assert status == 200, (query, out)
            assert [a["alert_id"] for a in out["alerts"]] == ids, query
        for query, needle in (("limit=0", "limit"), ("limit=501", "limit"),
                              ("limit=-1", "limit"), ("limit=1e3", "limit"),
                              ("limit=%EF%BC%91", "limit"), ("since=tuesday", "since"),
                              ("since=" + "9" * 300, "since"), ("label=" + "x" * 201, "label")):
            status, out = get_json(port, "/api/alerts?" + query)
            assert status == 400 and needle in str(out["error"]), (query, out)


def test_alerts_api_without_a_store_or_with_a_bad_one(site: Path, tmp_path: Path) -> None:
    server = WebServer(WebHub(), "127.0.0.1", 0).start()
    try:
        status, out = get_json(server.port, "/api/alerts")
        assert status == 404 and "--db" in str(out["error"])
        status, out = get_json(server.port, "/clips/door-A1.mp4")
        assert status == 404
    finally:
        assert server.stop()
    (tmp_path / "junk.db").write_text("junk")
    with served(site, db=str(tmp_path / "junk.db")) as bad:
        status, out = get_json(bad.port, "/api/alerts")
        assert status == 503 and "not a streamclf event store" in str(out["error"])


# -- /clips/NAME ------------------------------------------------------------------------
def test_clips_are_served_with_range_requests(site: Path) -> None:
    clip = (site / "clips" / "door-A1.mp4").read_bytes()
    size = len(clip)
    with served(site) as server:
        port = server.port
        status, headers, body = request(port, "GET", "/clips/door-A1.mp4")
        assert status == 200 and body == clip
        assert headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
        for spec, start, end in (("0-99", 0, 99), ("100-", 100, size - 1),
                                 ("-10", size - 10, size - 1), (f"5-{size * 2}", 5, size - 1)):
            status, headers, body = request(port, "GET", "/clips/door-A1.mp4",
                                            headers={"Range": f"bytes={spec}"})
            assert status == 206, spec
            assert headers["Content-Range"] == f"bytes {start}-{end}/{size}", spec
            assert body == clip[start:end + 1], spec
        for spec in (f"{size}-", f"{size + 10}-{size + 20}"):
            status, headers, body = request(port, "GET", "/clips/door-A1.mp4",
                                            headers={"Range": f"bytes={spec}"})
            assert status == 416 and headers["Content-Range"] == f"bytes */{size}", spec
            assert "past the end" in json.loads(body)["error"]
        status, headers, body = request(port, "GET", "/clips/door-A1.mp4",
                                        headers={"Range": "bytes=9-3"})
        assert status == 400 and "error" in json.loads(body)
        status, headers, body = request(port, "HEAD", "/clips/door-A1.jpg")
        assert status == 200 and body == b"" and headers["Content-Type"] == "image/jpeg"
        assert int(headers["Content-Length"]) == (site / "clips" / "door-A1.jpg").stat().st_size
        status, _, body = request(port, "GET", "/clips/inside.mp4")  # a symlink inside
        assert status == 200 and body == clip


@pytest.mark.parametrize(("path", "status"), [
    ("/clips/../secret.mp4", 400),
    ("/clips/..%2Fsecret.mp4", 400),
    ("/clips/%2e%2e%2fsecret.mp4", 400),
    ("/clips/%2E%2E/secret.mp4", 400),
    ("/clips//etc/passwd", 400),
    ("/clips/%2Fetc%2Fpasswd", 400),
    ("/clips/sub%5C..%5C..%5Csecret.mp4", 400),
    ("/clips/door-A1.mp4%00.jpg", 400),
    ("/clips/.hidden.mp4", 400),
    ("/clips/", 400),
    ("/clips/escape.mp4", 404),   # a symlink out of the folder
    ("/clips/missing.mp4", 404),
    ("/clips/folder.mp4", 404),
    ("/clips/notes.txt", 404),    # only clips and snapshots are served
])
def test_clips_refuse_everything_outside_the_folder(site: Path, path: str,
                                                   status: int) -> None:
    with served(site) as server:
        ex = raw(server.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                              "Connection: close\r\n\r\n".encode())
        assert ex.statuses == [status], ex.data[:300]
        assert b"SECRET" not in ex.data and b"hidden" not in ex.data
        assert b'{"error":' in ex.data


def test_clips_and_alerts_follow_the_token_rules(site: Path) -> None:
    with served(site, token="s3cret-token") as server:
        port = server.port
        for path in ("/clips/door-A1.mp4", "/api/alerts", "/review"):
            assert request(port, "GET", path)[0] == 401, path
        auth = {"Authorization": "Bearer s3cret-token"}
        assert request(port, "GET", "/clips/door-A1.mp4", headers=auth)[0] == 200
        assert request(port, "GET", "/clips/door-A1.mp4?token=s3cret-token")[0] == 200
        status, headers, _ = request(port, "GET", "/review?token=s3cret-token")
        assert status == 200 and "streamclf_token=s3cret-token" in headers["Set-Cookie"]
        cookie = {"Cookie": "streamclf_token=s3cret-token"}
        assert request(port, "GET", "/clips/door-A1.mp4", headers=cookie)[0] == 200
        cross = {**cookie, "Sec-Fetch-Site": "cross-site"}
        assert request(port, "GET", "/clips/door-A1.mp4", headers=cross)[0] == 403
        assert request(port, "GET", "/api/alerts", headers=cross)[0] == 403
        assert request(port, "GET", "/review", headers=cross)[0] == 200  # a link to the page
        assert request(port, "GET", "/clips/door-A1.mp4",
                       headers={"Authorization": "Bearer wrong"})[0] == 401


# -- the pages in a real browser --------------------------------------------------------
def _launch(pw: object) -> object:
    return pw.chromium.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])


@pytest.mark.slow
@needs_chromium
def test_review_page_plays_the_alert_clip_in_chromium(site: Path) -> None:
    """Opened with ``?token=`` (the cookie then carries it): the seeded alerts are listed,
    the snapshot loads, and the H.264 clip plays in its ``<video>``."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    with served(site, token="tok-123") as server, sync_api.sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page = browser.new_page()  # type: ignore[attr-defined]
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "review?token=tok-123&since=", wait_until="domcontentloaded")
            page.wait_for_selector(".alert[data-alert-id='A1']", timeout=15_000)
            assert page.locator(".alert").count() == 2
            card = ".alert[data-alert-id='A1']"
            assert "falling" in page.inner_text(card) and "0.93" in page.inner_text(card)
            page.wait_for_function(
                f"() => {{ const i = document.querySelector(\"{card} img.snapshot\");"
                " return i.complete && i.naturalWidth === 320; }", timeout=15_000)
            page.wait_for_function(
                f"() => document.querySelector(\"{card} video.clip\").readyState >= 2",
                timeout=30_000)
            size = page.evaluate(f"() => {{ const v = document.querySelector(\"{card} "
                                 "video.clip\"); return [v.videoWidth, v.duration]; }")
            assert size[0] == 320 and size[1] == pytest.approx(2.0, abs=0.2)
            assert "still on" in page.inner_text(".alert[data-alert-id='B7']")
            # A filter that matches nothing, from the form.
            page.fill("#f-label", "juggling")
            page.click("#filters button")
            page.wait_for_function("() => document.getElementById('status').textContent"
                                   " === 'no alerts match'", timeout=10_000)
            assert page.locator(".alert").count() == 0
            assert errors == []
        finally:
            browser.close()  # type: ignore[attr-defined]


@pytest.mark.slow
@needs_chromium
def test_live_page_shows_a_grid_cell_and_a_chart_per_stream(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    with live_web(tmp_path, stream_ids=("cam0", "cam1")) as web, \
            sync_api.sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(web.server.url, wait_until="domcontentloaded")
            page.wait_for_function("() => document.querySelectorAll('.cell').length === 2",
                                   timeout=20_000)
            cells = page.eval_on_selector_all(".cell", "els => els.map(e => e.dataset.stream)")
            assert sorted(cells) == ["cam0", "cam1"]
            for sid in cells:
                cell = f".cell[data-stream={sid}]"
                page.wait_for_function(
                    f"() => +document.querySelector('{cell} canvas.chart').dataset.points > 2",
                    timeout=30_000)
                page.wait_for_function(
                    f"() => document.querySelector('{cell} img.video').naturalWidth === 160",
                    timeout=30_000)
                # The chart drew its line: pixels of the first label's blue (#3282e6).
                drawn = page.evaluate(f"""() => {{
                    const c = document.querySelector('{cell} canvas.chart');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4)
                        if (d[i] < 100 && d[i + 1] > 100 && d[i + 2] > 180) n++;
                    return n; }}""")
                assert drawn > 20, sid
                assert "walking" in page.inner_text(f"{cell} .legend")
                health = page.inner_text(f"{cell} table.health")
                for name in ("Input", "Model rate", "Latency", "Dropped frames", "Reconnects"):
                    assert name in health, (name, health)
            # The event list: label changes and alerts, never a prediction.
            page.wait_for_selector("#events li.label_start", timeout=20_000)
            web.hub.publish_event({"type": "alert", "stream": "cam1", "ts": T0, "seq": 10**6,
                                   "alert_id": "Z9", "phase": "end", "label": "waving",
                                   "score": 0.4, "max_score": 0.91})
            page.wait_for_selector("#events li.alert.end a[href='review?stream=cam1']",
                                   timeout=10_000)
            assert "waving, max 0.91" in page.inner_text("#events li.alert.end")
            assert page.locator("#events li.prediction").count() == 0
            assert errors == []
        finally:
            browser.close()  # type: ignore[attr-defined]
