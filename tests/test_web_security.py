"""Cross-site writes, DNS rebinding, file paths and stream ids through the web API (issue 13):
each check against a real server, a real pipeline and a real StreamController."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streamclf.errors import ConfigError
from streamclf.web import WebHub, WebServer
from streamclf.web.guard import Policy, split_host
from tests.web_support import JSON, live_web, post_json, raw, request

ENDPOINTS = [("GET", "/"), ("GET", "/api/status"), ("GET", "/events"),
             ("GET", "/stream.mjpg"), ("GET", "/api/streams"), ("POST", "/api/streams"),
             ("DELETE", "/api/streams/cam0"), ("POST", "/api/classify"), ("GET", "/metrics")]


def test_cross_site_text_plain_cannot_add_a_stream_or_write_a_file(tmp_path: Path) -> None:
    """The reported attack: a page on another origin posts JSON as text/plain (no preflight)
    with an ``output`` path. Refused, and the file stays as it was."""
    target = tmp_path / "victim.mp4"
    target.write_bytes(b"precious")
    item = {"id": "v", "source": "synthetic:64x64@5", "output": str(target)}
    with live_web(tmp_path) as web:
        attack = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example",
                  "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
        status, _, body = request(web.port, "POST", "/api/streams",
                                  json.dumps(item).encode(), attack)
        assert status == 403, body
        # Each protection holds on its own: the Origin alone, the fetch metadata alone,
        # the body type alone, the path key alone.
        assert post_json(web.port, "/api/streams", item,
                         {"Origin": "http://evil.example"})[0] == 403
        assert post_json(web.port, "/api/streams", item, {"Sec-Fetch-Site": "cross-site"})[0] \
            == 403
        status, _, _ = request(web.port, "POST", "/api/streams", json.dumps(item).encode(),
                               {"Content-Type": "text/plain"})
        assert status == 415
        status, out = post_json(web.port, "/api/streams", item)
        assert status == 400 and "'output'" in out["error"]
        time.sleep(1.0)  # a stream, had one started, would have written by now
        assert web.pipeline.stream_ids == ["cam0"]
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize("key", ["output", "events", "classmap"])
def test_the_api_cannot_name_files(tmp_path: Path, key: str) -> None:
    with live_web(tmp_path) as web:
        status, out = post_json(web.port, "/api/streams",
                                {"id": "p", "source": "synthetic", key: str(tmp_path / "x")})
        assert status == 400
        assert f"{key!r}" in out["error"] and "config" in out["error"]
        assert web.pipeline.stream_ids == ["cam0"]
    assert not (tmp_path / "x").exists()


def test_same_origin_and_explicit_token_are_accepted(tmp_path: Path) -> None:
    with live_web(tmp_path, token="tk") as web:
        auth = {"Authorization": "Bearer tk"}
        own = {"Origin": f"http://127.0.0.1:{web.port}", "Sec-Fetch-Site": "same-origin",
               "Cookie": "streamclf_token=tk"}
        status, out = post_json(web.port, "/api/streams",
                                {"id": "mine", "source": "synthetic:64x64@5"}, own)
        assert status == 201, out
        # Another origin with the token in the header: a script that knows the token.
        status, out = post_json(web.port, "/api/streams",
                                {"id": "tool", "source": "synthetic:64x64@5"},
                                {"Origin": "http://other.example", **auth})
        assert status == 201, out
        # Another origin with only the cookie (the browser adds it, the page did not choose).
        status, _ = post_json(web.port, "/api/streams", {"id": "x", "source": "synthetic"},
                              {"Origin": "http://127.0.0.1:1", "Cookie": "streamclf_token=tk"})
        assert status == 403
        status, _, _ = request(web.port, "DELETE", "/api/streams/tool", None, auth)
        assert status == 415  # a write needs the JSON type, even without a body
        status, _, _ = request(web.port, "DELETE", "/api/streams/tool", None, {**JSON, **auth})
        assert status == 200
        assert sorted(web.pipeline.stream_ids) == ["cam0", "mine"]


def test_cross_site_reads_are_refused_but_a_link_to_the_page_works(tmp_path: Path) -> None:
    with live_web(tmp_path) as web:
        cross = {"Sec-Fetch-Site": "cross-site"}
        assert request(web.port, "GET", "/", headers=cross)[0] == 200
        for path in ("/api/status", "/events", "/stream.mjpg", "/api/streams"):
            assert request(web.port, "GET", path, headers=cross)[0] == 403, path
        status, _, _ = request(web.port, "GET", "/api/status",
                               headers={"Origin": "http://evil.example"})
        assert status == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1",
                                  "127.0.0.1:1", "localhost:{port}0", "[::1]:{port}",
                                  "127.0.0.1:{port}@evil.example", ""])
def test_dns_rebinding_host_is_refused_on_every_endpoint(host: str) -> None:
    server = WebServer(WebHub(), "127.0.0.1", 0).start()
    try:
        value = host.format(port=server.port)
        for method, path in ENDPOINTS:
            ex = raw(server.port, f"{method} {path} HTTP/1.1\r\nHost: {value}\r\n"
                                  f"Content-Length: 0\r\n\r\n".encode(), wait_s=3)
            assert ex.statuses == [421], (method, path, ex.data[:200])
            assert ex.closed and ex.seconds < 2
        ok = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
                              "Connection: close\r\n\r\n".encode())
        assert ok.statuses == [200]
        two = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                               f"Host: evil.example\r\n\r\n".encode())
        assert two.statuses in ([400], [421]) and two.closed  # h11 itself refuses two Hosts
    finally:
        server.stop()


def test_host_rule_for_wildcard_and_named_binds() -> None:
    policy = Policy.for_bind("0.0.0.0", 8080, "t", allowed_hosts=["cam-box.lan"])
    for good in ("10.1.2.3:8080", "[fe80::1]:8080", "localhost:8080", "CAM-BOX.lan:8080"):
        assert policy.host_ok(good), good
    for bad in ("evil.example:8080", "10.1.2.3:8081", "10.1.2.3", "cam-box.lan"):
        assert not policy.host_ok(bad), bad
    on_80 = Policy.for_bind("127.0.0.1", 80)
    assert on_80.host_ok("127.0.0.1") and on_80.host_ok("localhost:80")
    assert not on_80.host_ok("10.1.2.3:80")
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("a:b:c") is None and split_host("a:99999") is None
    assert policy.origin_ok("http://10.1.2.3:8080", "10.1.2.3:8080")
    assert not policy.origin_ok("http://10.1.2.3:8081", "10.1.2.3:8080")
    assert not policy.origin_ok("null", "10.1.2.3:8080")


def test_wildcard_bind_answers_ip_literals_with_the_token() -> None:
    token = uuid.uuid4().hex
    server = WebServer(WebHub(), "0.0.0.0", 0, token=token).start()
    try:
        auth = f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ok = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: 192.0.2.7:{server.port}\r\n"
                              f"{auth}".encode())
        assert ok.statuses == [200]
        bad = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: evil.example:{server.port}"
                               f"\r\n{auth}".encode())
        assert bad.statuses == [421]
    finally:
        server.stop()


BAD_IDS = ["../x", "a" * 5000, "\x1b[31mred\x1b[0m\nfake status line", "cam\n", "a.b", "",
           "a/b", "x" * 65]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=range(len(BAD_IDS)))
def test_stream_ids_follow_the_config_rule(tmp_path: Path, bad_id: object) -> None:
    """Ids from the API go through StreamConfig's one rule (1-64 of [A-Za-z0-9_-])."""
    with live_web(tmp_path) as web:
        status, out = post_json(web.port, "/api/streams",
                                {"id": bad_id, "source": "synthetic:64x64@5"})
        assert status == 400, out
        assert "\n" not in out["error"] and "\x1b" not in out["error"]
        assert len(out["error"]) < 300
        assert web.pipeline.stream_ids == ["cam0"]
        assert web.hub.streams in (["cam0"], [])
    # Nothing reached the event log either.
    log = (tmp_path / "ev.jsonl").read_text()
    assert "fake status line" not in log and "\\u001b" not in log


def test_max_upload_mb_must_be_a_positive_finite_number() -> None:
    hub = WebHub()
    for bad in (-1, 0, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ConfigError, match=r"max_upload_mb .*> 0"):
            WebServer(hub, "127.0.0.1", 0, max_upload_mb=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_concurrent_uploads"):
        WebServer(hub, "127.0.0.1", 0, max_concurrent_uploads=0)


def test_every_answer_carries_the_safety_headers(tmp_path: Path) -> None:
    with live_web(tmp_path) as web:
        for path in ("/", "/api/status", "/nope"):
            _, headers, _ = request(web.port, "GET", path)
            assert headers["X-Frame-Options"] == "DENY", path
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Cache-Control"] == "no-store"


def test_importing_the_web_package_loads_no_web_framework() -> None:
    code = ("import sys, streamclf, streamclf.web, streamclf.cli.serve, streamclf.web.uploads; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'python_multipart', 'anyio', 'h11')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
