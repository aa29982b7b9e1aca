"""A bounded HTTP fuzz over every endpoint of a real server (a live pipeline, a controller
and an upload worker behind it): random methods, paths, headers, bodies and
Content-Length values over raw sockets to 127.0.0.1. Every example is answered or closed
within 2 s, the server logs no error or traceback, and keeps serving."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamclf.config import stream_keys
from streamclf.sinks.store import EventStore
from streamclf.web.uploads import ClassifierFactory, ClassifyService
from tests.web_support import LiveWeb, LogCapture, live_web, raw, request

pytestmark = pytest.mark.slow

PATHS = ["/", "/index.html", "/api/status", "/events", "/stream.mjpg", "/api/streams",
         "/api/streams/cam0", "/api/streams/", "/api/classify", "/nope", "/api/streams/a/b",
         "//", "/%2e%2e/etc/passwd", "/api/status/", "/review", "/api/alerts",
         "/clips/a.mp4", "/clips/../a.mp4", "/clips/%2e%2e%2fa.mp4", "/clips/"]
QUERIES = ["", "?stream=cam0", "?stream=nope", "?token=x", "?stream=", "?a=%ff%fe", "?&&==",
           "?since=1h&limit=5", "?limit=-1", "?since=%ff"]
METHODS = ["GET", "GET", "POST", "POST", "POST", "POST", "DELETE", "DELETE", "HEAD", "PUT",
           "PATCH", "OPTIONS", "TRACE", "BREW", "get"]
CTYPES = ["application/json", "application/json; charset=utf-8", "text/plain",
          "multipart/form-data; boundary=fz", "multipart/form-data", "application/x-www-form-"
          "urlencoded", "", "multipart/form-data; boundary=" + "x" * 300]
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
HEADER_NAMES = st.sampled_from(["Origin", "Sec-Fetch-Site", "Cookie", "Authorization",
                                "Accept", "Connection", "Expect", "X-Anything", "Range",
                                "Transfer-Encoding", "Content-Encoding", "Host", "Origin",
                                "Sec-Fetch-Site", "Connection"])


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    keys = [*sorted(stream_keys()), "events", "model", "x", ""]
    item = draw(st.dictionaries(st.sampled_from(keys), st.one_of(
        st.none(), st.booleans(), st.integers(-10**20, 10**20),
        st.floats(allow_nan=False), TEXT,
        st.sampled_from(["synthetic:32x32@5", "nope://x", "cam0", "../x", "{stream}"]),
        st.lists(st.integers(), max_size=3)), max_size=6))
    text = json.dumps(item)
    wrap = draw(st.integers(0, 3))
    if wrap == 1:
        depth = draw(st.integers(1, 5000))
        text = "[" * depth + text + "]" * draw(st.integers(0, depth))
    elif wrap == 2:
        text = text[:draw(st.integers(0, len(text)))]
    return text.encode()


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(["file", "other", "", "fi\"le"]))
    filename = draw(st.sampled_from(["clip.mp4", "../../x.mp4", "", "a" * 300, "x.\u00e9"]))
    data = draw(st.binary(max_size=300))
    end = draw(st.sampled_from([b"\r\n--fz--\r\n", b"\r\n--fz", b"", b"--fz--"]))
    return (f"--fz\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\""
            "\r\n\r\n").encode() + data + end


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> str:
    """``usual`` nine times in ten: most examples get past the framing and reach an endpoint."""
    return draw(odd) if draw(st.integers(0, 9)) == 0 else draw(usual)


@st.composite
def requests(draw: st.DrawFn, port: int) -> bytes:
    """A request aimed at one endpoint (method, path, body type and body that fit it),
    each part swapped for a random one now and then."""
    target = draw(st.sampled_from(["add", "add", "add", "upload", "upload", "delete", "get"]))
    method, path, ctype, body_strategy = {
        "add": ("POST", "/api/streams", "application/json", json_bodies()),
        "upload": ("POST", "/api/classify", "multipart/form-data; boundary=fz",
                   multipart_bodies()),
        "delete": ("DELETE", "/api/streams/" + draw(st.sampled_from(["cam0", "x", "a.b", ""])),
                   "application/json", st.just(b"")),
        "get": (draw(st.sampled_from(["GET", "HEAD"])), draw(st.sampled_from(PATHS)), "",
                st.just(b"")),
    }[target]
    method = mostly(draw, st.just(method), st.one_of(st.sampled_from(METHODS),
                                                     TEXT.filter(lambda t: " " not in t)))
    path = mostly(draw, st.just(path), st.sampled_from(PATHS)) + draw(st.sampled_from(QUERIES))
    path += mostly(draw, st.just(""), TEXT.map(lambda t: t.replace(" ", "%20")))
    body = draw(st.one_of(body_strategy, st.binary(max_size=300))
                if draw(st.integers(0, 9)) == 0 else body_strategy)
    headers = []
    host = mostly(draw, st.sampled_from([f"127.0.0.1:{port}", f"localhost:{port}"]),
                  st.sampled_from(["evil.example", "", f"127.0.0.1:{port + 1}"]))
    if host:
        headers.append(("Host", host))
    ctype = mostly(draw, st.just(ctype), st.sampled_from(CTYPES))
    if ctype:
        headers.append(("Content-Type", ctype))
    framing = draw(st.integers(0, 9))
    if framing <= 5:
        headers.append(("Content-Length", str(len(body))))
    elif framing == 6:
        headers.append(("Content-Length", str(draw(st.integers(-5, 10**12)))))
    elif framing == 7:
        headers.append(("Content-Length", draw(TEXT)))
    elif framing == 8:
        headers.append(("Transfer-Encoding", "chunked"))
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    headers += draw(st.lists(st.tuples(HEADER_NAMES, TEXT), max_size=3))
    version = mostly(draw, st.just("HTTP/1.1"), st.sampled_from(["HTTP/1.0", "HTTP/2.0", "X"]))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8") + b"\r\n" + body


@pytest.fixture(scope="module")
def fuzz_web(tmp_path_factory: pytest.TempPathFactory, tai_chi_clip: Path
             ) -> Iterator[tuple[LiveWeb, LogCapture]]:
    service = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"))
    service.classify(tai_chi_clip, "warm.mp4", timeout_s=120)  # the worker is up before
    folder = tmp_path_factory.mktemp("fuzz-store")
    EventStore(folder / "events.db").close()
    (folder / "a.mp4").write_bytes(bytes(range(256)) * 40)  # Range requests have a file
    with LogCapture().installed() as logs, \
            live_web(tmp_path_factory.mktemp("fuzz"), classifier=service,
                     upload_idle_s=1.0, max_upload_mb=1, db=str(folder / "events.db"),
                     clips_dir=str(folder)) as web:
        yield web, logs


@pytest.mark.timeout(300)
def test_http_fuzz_every_endpoint(fuzz_web: tuple[LiveWeb, LogCapture]) -> None:
    web, logs = fuzz_web
    t0 = time.monotonic()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=requests(web.port))
    def example(data: bytes) -> None:
        logs.clear()
        ex = raw(web.port, data, wait_s=2.5, until_close=False, head_only=True)
        answered = ex.data.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in ex.data
        assert answered or ex.closed, f"no answer in {ex.seconds:.1f} s to {data[:300]!r}"
        assert ex.seconds < 2.0, f"{ex.seconds:.1f} s for {data[:300]!r}"
        assert b"Traceback" not in ex.data
        status, _, body = request(web.port, "GET", "/api/status", timeout=5)
        assert status == 200, body
        assert logs.errors() == [], data[:300]

    example()
    assert time.monotonic() - t0 < 120
