"""Shared parts of the web tests: HTTP helpers over 127.0.0.1 and a live pipeline served by
a real :class:`WebServer` with a real :class:`StreamController`."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.control import StreamController
from streamclf.live.pipeline import LivePipeline
from streamclf.web import WebHub, WebServer
from streamclf.web.link import HubSink, mjpeg_frame_sinks

JSON = {"Content-Type": "application/json"}


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request over a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def post_json(port: int, path: str, item: Any, headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, Any]]:
    status, _, body = request(port, "POST", path, json.dumps(item).encode(),
                              {**JSON, **(headers or {})})
    return status, json.loads(body)


def multipart(data: bytes, filename: str, field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Exchange:
    """What came back on a raw connection: the bytes, and whether (and after how many
    seconds) the server closed it."""

    data: bytes
    closed: bool
    seconds: float

    @property
    def statuses(self) -> list[int]:
        """The status code of every response in :attr:`data`."""
        return [int(line.split()[1]) for line in self.data.split(b"\r\n")
                if line.startswith(b"HTTP/1.") and len(line.split()) > 1
                and line.split()[1].isdigit()]


def raw(port: int, data: bytes, wait_s: float = 3.0, until_close: bool = True,
        head_only: bool = False) -> Exchange:
    """Send ``data`` on a fresh connection and read for at most ``wait_s`` seconds: until
    the server closes (``until_close``), else until one complete response (its head, for
    a response without Content-Length: a stream); ``head_only``: until one response head."""
    t0 = time.monotonic()
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        with contextlib.suppress(OSError):  # the server answered and closed meanwhile
            sock.sendall(data)
        while time.monotonic() - t0 < wait_s:
            left = max(0.0, wait_s - (time.monotonic() - t0))
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                chunk = sock.recv(65536)
            except OSError:
                return Exchange(out, True, time.monotonic() - t0)
            if not chunk:
                return Exchange(out, True, time.monotonic() - t0)
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if head_only or length is None or len(rest) >= length:  # None: a stream
                    break
    return Exchange(out, False, time.monotonic() - t0)


class LogCapture(logging.Handler):
    """Every record at WARNING or above from the server's loggers (uvicorn, streamclf)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock2:
            self.records.append(record)

    def clear(self) -> None:
        with self._lock2:
            self.records.clear()

    def errors(self) -> list[str]:
        """ERROR records and any record with a traceback, formatted."""
        with self._lock2:
            bad = [r for r in self.records if r.levelno >= logging.ERROR or r.exc_info]
        return [f"{r.name}: {r.getMessage()}" for r in bad]

    @contextmanager
    def installed(self) -> Iterator[LogCapture]:
        loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "streamclf")]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield self
        finally:
            for lg in loggers:
                lg.removeHandler(self)


@dataclass
class LiveWeb:
    server: WebServer
    hub: WebHub
    pipeline: LivePipeline

    @property
    def port(self) -> int:
        return self.server.port


@contextmanager
def live_web(tmp_path: Path, stream_ids: tuple[str, ...] = ("cam0",),
             **server_args: Any) -> Iterator[LiveWeb]:
    """Live synthetic streams (default one, ``cam0``; FakeBackend, the real source and
    output parts) in a running pipeline, served with a real StreamController, as ``run
    --web`` wires it."""
    backend = FakeBackend(labels=("walking", "running", "waving"), script=[[0.6, 0.3, 0.1]])
    config = RunConfig(model="x3d_xs", quiet=True, events=str(tmp_path / "ev.jsonl"),
                       streams=[StreamConfig(id=sid, source="synthetic:160x120@15",
                                             stride=0.5) for sid in stream_ids])
    hub = WebHub()
    server = WebServer(hub, "127.0.0.1", 0, **server_args)
    pipeline = LivePipeline(config, sinks=[HubSink(hub)], frame_sinks=mjpeg_frame_sinks(hub),
                            backend=backend)
    controller = StreamController(pipeline, None, {}, server)
    controller.track(config)
    server.controller = controller
    server.start()
    runner = threading.Thread(target=pipeline.run, kwargs={"duration_s": 120.0}, daemon=True)
    runner.start()
    try:
        yield LiveWeb(server, hub, pipeline)
    finally:
        pipeline.request_stop()
        runner.join(10)
        assert server.stop()
    assert not runner.is_alive()
