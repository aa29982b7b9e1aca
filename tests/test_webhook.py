"""The webhook: retries while the receiver is down (nothing lost up to the queue's bound,
drops counted beyond), the HMAC signature, alerts_only, masking; a real HTTP receiver on
127.0.0.1 that the tests start and stop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from streamclf.errors import ConfigError
from streamclf.live.events import read_events
from streamclf.sinks.webhook import SIGNATURE_HEADER, WebhookForwarder
from tests.alert_run import run_alerts

SECRET = "s3cret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


class Receiver:
    """An HTTP receiver on 127.0.0.1 (``port``: 0 for any) recording ``(headers, raw body)``
    of every POST; it answers ``statuses`` in turn, then 204."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        answers = list(statuses or [])

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(answers.pop(0) if answers else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in list(self.received)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def signed_ok(headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get(SIGNATURE_HEADER.lower(), ""), expected)


@pytest.mark.slow
def test_receiver_down_then_back_nothing_lost_up_to_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    hook = WebhookForwarder(f"http://bob:hunter2@127.0.0.1:{port}/hook", queue_size=5,
                            timeout_s=1.0, secret=SECRET, backoff_initial_s=0.05,
                            backoff_max_s=0.2)
    hook.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="streamclf.sinks.webhook"):
            assert hook.submit({"n": 0})
            assert wait_until(lambda: hook.failed >= 1)  # refused: in hand, retried
            kept = [hook.submit({"n": n}) for n in range(1, 10)]
            assert kept == [True] * 5 + [False] * 4  # full: the oldest go, counted
            assert hook.queue_health() == (6, 4)  # 5 queued + 1 retried; 4 dropped
            time.sleep(0.5)
            assert hook.sent == 0 and hook.failed >= 3  # still down: retried, backing off
            with Receiver(port) as rx:
                assert wait_until(lambda: hook.sent == 6)
                assert hook.close(2.0)
        assert [b["n"] for b in rx.bodies()] == [0, 5, 6, 7, 8, 9]  # in order
        assert len(rx.received) == 6  # each once
        assert all(signed_ok(h, body) for h, body in rx.received)
        auth = base64.b64encode(b"bob:hunter2").decode()
        assert all(h["authorization"] == f"Basic {auth}" for h, _ in rx.received)
        assert (hook.sent, hook.dropped, hook.rejected) == (6, 4, 0)
        assert hook.queue_health() == (0, 4)
        shown = caplog.text + repr(hook) + hook.summary()
        assert "hunter2" not in shown and SECRET not in shown and "bob:***@" in shown
    finally:
        hook.close(0.5)


def test_refusals_are_not_retried_and_server_errors_are() -> None:
    with Receiver(statuses=[400, 503, 503]) as rx:
        hook = WebhookForwarder(rx.url, backoff_initial_s=0.02, backoff_max_s=0.05)
        hook.start()
        hook.submit({"n": 1})  # 400: refused, once
        hook.submit({"n": 2})  # 503, 503, then 204
        assert wait_until(lambda: hook.sent == 1)
        assert hook.close(2.0)
    assert [b["n"] for b in rx.bodies()] == [1, 2, 2, 2]
    assert (hook.sent, hook.failed, hook.rejected, hook.dropped) == (1, 3, 1, 0)
    assert SIGNATURE_HEADER.lower() not in rx.received[0][0]  # no secret: unsigned


def test_close_is_bounded_while_the_receiver_is_down() -> None:
    hook = WebhookForwarder(f"http://127.0.0.1:{free_port()}/", backoff_initial_s=5.0,
                            backoff_max_s=5.0)
    hook.start()
    for n in range(3):
        hook.submit({"n": n})
    assert wait_until(lambda: hook.failed >= 1)
    t0 = time.monotonic()
    assert hook.close(0.5)
    assert time.monotonic() - t0 < 1.5
    assert hook.sent == 0 and hook.dropped == 3  # 2 queued + the one in hand


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"timeout_s": 0},
                                    {"secret": ""}, {"backoff_initial_s": 0}])
def test_bad_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WebhookForwarder("http://127.0.0.1:9/", **kwargs)


def test_a_run_signs_and_sends_only_alerts_when_asked(tmp_path: Path) -> None:
    with Receiver() as rx:
        run_alerts(tmp_path, webhook={"url": rx.url, "secret": SECRET, "alerts_only": True})
        log = read_events(tmp_path / "ev.jsonl")
        alerts = [e for e in log if e["type"] == "alert"]
        assert [a["phase"] for a in alerts] == ["start", "end"]
        assert rx.bodies() == alerts  # only the alerts, as logged
        assert all(signed_ok(h, body) for h, body in rx.received)
        rx.received.clear()
        run_alerts(tmp_path / "all", webhook=rx.url)  # a plain URL: every event, unsigned
        assert rx.bodies() == read_events(tmp_path / "all" / "ev.jsonl")
        assert not any(SIGNATURE_HEADER.lower() in h for h, _ in rx.received)
