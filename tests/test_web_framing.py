"""HTTP framing and request bodies over raw sockets on 127.0.0.1 (issue 13): every bad
frame gets a 4xx or a closed connection within 2 s, no body is ever run as a second
request, and no bad body gives a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamclf.web.bodies import RequestError, json_depth, parse_json_object
from tests.web_support import LiveWeb, LogCapture, live_web, raw, request

#: A request that, if ever run, removes the live stream (so running it would show).
SMUGGLED = (b"DELETE /api/streams/cam0 HTTP/1.1\r\nHost: {host}\r\n"
            b"Content-Type: application/json\r\n\r\n")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWeb]:
    with live_web(tmp_path_factory.mktemp("framing")) as web:
        deadline = time.monotonic() + 10
        while "cam0" not in web.hub.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        yield web


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with LogCapture().installed() as capture:
        yield capture


def head(web: LiveWeb, method: str, path: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def smuggled(web: LiveWeb) -> bytes:
    return SMUGGLED.replace(b"{host}", f"127.0.0.1:{web.port}".encode())


def still_there(web: LiveWeb) -> bool:
    return "cam0" in web.pipeline.stream_ids


@pytest.mark.parametrize("length", [None, "abc", "-1", "1e3", " 12x"])
def test_bad_or_missing_length_never_runs_the_body_as_a_request(web: LiveWeb, logs: LogCapture,
                                                                length: str | None) -> None:
    extra = "" if length is None else f"Content-Length: {length}\r\n"
    ex = raw(web.port, head(web, "POST", "/api/streams", extra) + smuggled(web), wait_s=3)
    assert ex.closed and ex.seconds < 2, ex
    assert len(ex.statuses) == 1 and ex.statuses[0] in (400, 411), ex.data[:300]
    assert still_there(web)
    assert logs.errors() == []


def test_length_longer_than_the_body_is_answered_not_waited_on(web: LiveWeb,
                                                                logs: LogCapture) -> None:
    ex = raw(web.port, head(web, "POST", "/api/streams", "Content-Length: 500\r\n")
             + b'{"id": "x"', wait_s=4)
    assert ex.statuses == [408] and ex.closed and ex.seconds < 2, ex
    assert logs.errors() == []


def test_length_and_transfer_encoding_together_are_refused(web: LiveWeb) -> None:
    body = b"0\r\n\r\n" + smuggled(web)
    ex = raw(web.port, head(web, "POST", "/api/streams",
                            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + body)
    assert ex.statuses == [400] and ex.closed and ex.seconds < 2
    assert still_there(web)


def test_chunked_json_body_works(web: LiveWeb) -> None:
    item = json.dumps({"id": "chunky", "source": "synthetic:64x64@5"}).encode()
    body = b"".join(f"{len(item[i:i + 7]):x}\r\n".encode() + item[i:i + 7] + b"\r\n"
                    for i in range(0, len(item), 7)) + b"0\r\n\r\n"
    ex = raw(web.port, head(web, "POST", "/api/streams",
                            "Transfer-Encoding: chunked\r\nConnection: close\r\n") + body)
    assert ex.statuses == [201], ex.data[-300:]
    assert request(web.port, "DELETE", "/api/streams/chunky",
                   headers={"Content-Type": "application/json"})[0] == 200


def test_deep_nesting_is_a_400_not_a_recursion_error(web: LiveWeb, logs: LogCapture) -> None:
    body = b"[" * 30_000
    ex = raw(web.port, head(web, "POST", "/api/streams",
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n") + body)
    assert ex.statuses == [400] and ex.seconds < 2
    assert b"nested" in ex.data
    assert logs.errors() == []


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{", 400, "must be JSON"),
    (b'{"id": NaN}', 400, "must be JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"\xff\xfe\x00garbage", 400, "must be JSON"),
    (b'{"id": "' + b"x" * 70_000 + b'"}', 413, "larger than 64 KB"),
    (b"", 400, "must be JSON"),
])
def test_bad_json_bodies(web: LiveWeb, logs: LogCapture, body: bytes, status: int,
                         needle: str) -> None:
    got, _, out = request(web.port, "POST", "/api/streams", body,
                          {"Content-Type": "application/json"})
    assert got == status and needle in json.loads(out)["error"], out[:200]
    assert logs.errors() == []


def test_oversized_declared_body_is_refused_before_it_is_read(web: LiveWeb) -> None:
    ex = raw(web.port, head(web, "POST", "/api/streams",
                            "Content-Length: 10000000\r\n") + b"{", wait_s=3, until_close=False)
    assert ex.statuses == [413] and ex.seconds < 2


def test_json_depth_scan() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[\\"]]]]"}]}') == 3
    assert json_depth(b'"\\\\" [[]]') == 2
    assert json_depth(b"[" * 100_000) == 100_000
    with pytest.raises(RequestError, match="nested 21 deep"):
        parse_json_object(b"[" * 21 + b"]" * 21)
    assert parse_json_object(b'{"a": ' + b"[" * 19 + b"]" * 19 + b"}") == {"a": [[[[[[[[[[
        [[[[[[[[[]]]]]]]]]]]]]]]]]]]}


def test_server_keeps_serving_after_all_that(web: LiveWeb, tmp_path: Path) -> None:
    assert request(web.port, "GET", "/api/status")[0] == 200
