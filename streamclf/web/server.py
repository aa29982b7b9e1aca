"""The web view's HTTP server (standard library only; one thread per connection).

Endpoints (the contract; ``?stream=ID`` selects a stream, default the first):

* ``GET /``: the page (live overlay, top-k bars, event list, health, upload form).
* ``GET /stream.mjpg``: the overlay as ``multipart/x-mixed-replace`` JPEG frames.
* ``GET /events``: Server-Sent Events; each ``data:`` line is one event-log object
  (``type``, ``stream``, ``ts``, ``seq``, fields), ``id:`` its ``seq``.
* ``GET /api/status``: JSON ``{"streams": {id: health}, "model": ..., "uptime_s": ...}``.
* ``POST /api/classify``: ``multipart/form-data`` with a ``file`` field -> JSON
  ``{"labels": [...], "scores": [...], ...}`` (400 with ``{"error": ...}`` for a bad video).

Security: binds 127.0.0.1 by default. Binding any other address needs a token (``--token``
or ``$STREAMCLF_TOKEN``); with a token every request must carry it as
``Authorization: Bearer TOKEN``, ``?token=TOKEN`` or the ``streamclf_token`` cookie (set
when the page is opened with ``?token=``), compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from streamclf._net import is_loopback
from streamclf.errors import ConfigError, StreamclfError
from streamclf.web.hub import WebHub
from streamclf.web.uploads import ClassifyService, parse_upload

__all__ = ["TOKEN_ENV", "WebServer", "parse_bind"]

log = logging.getLogger(__name__)
TOKEN_ENV = "STREAMCLF_TOKEN"
_COOKIE = "streamclf_token"
_BOUNDARY = "streamclf-frame"
_WAIT_S = 0.5  # every streaming loop re-checks for shutdown at least this often
_HEARTBEAT_S = 10.0


def parse_bind(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"``, ``":PORT"`` or ``"PORT"`` -> ``(host, port)``.

    Raises:
        ConfigError: not that form, or the port is outside 0-65535.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--web {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--web {text!r}: port must be 0-65535")
    return host, number


class StreamControl(Protocol):
    """What ``/api/streams`` calls (see :class:`streamclf.live.control.StreamController`)."""

    def add(self, item: dict[str, Any]) -> dict[str, Any]: ...
    def remove(self, stream_id: str) -> dict[str, Any]: ...


class WebServer:
    """Serves a :class:`WebHub` over HTTP on a background thread.

    Args:
        hub: the streams to show.
        host, port: where to listen (port 0: any free port, see :attr:`port`).
        token: required on every request when set; required to be set when ``host`` is not
            a loopback address (:class:`ConfigError` otherwise).
        classifier: handles ``POST /api/classify`` (None: the endpoint answers 503).
        max_upload_mb: larger uploads get 413.
        model: shown on the page and in ``/api/status``.

    Thread-safety: :meth:`start` and :meth:`stop` from one controlling thread.
    """

    def __init__(self, hub: WebHub, host: str = "127.0.0.1", port: int = 8080,
                 token: str | None = None, classifier: ClassifyService | None = None,
                 max_upload_mb: float = 200.0, model: str = "") -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(f"binding the web view to {host} needs a token: pass --token "
                              f"TOKEN or set ${TOKEN_ENV} (or bind 127.0.0.1)")
        self.hub = hub
        self.token = token or None
        self.classifier = classifier
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.model = model
        #: Adds/removes streams at run time (``/api/streams``); None: those answer 503.
        self.controller: StreamControl | None = None
        self.started = time.time()
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"web view: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None
        #: Set by the CLI's SIGINT/SIGTERM handler: ``serve`` exits instead of serving on.
        self.stop_requested = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def started_serving(self) -> bool:
        return self._thread is not None

    def start(self) -> WebServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="streamclf-web", daemon=True)
        self._thread.start()
        log.info("web view on %s", self.url)
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop accepting, end streaming responses (within one wait), close the socket.
        True if the serving thread ended within ``timeout_s``."""
        self.hub.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout_s)
        self._httpd.server_close()
        return self._thread is None or not self._thread.is_alive()

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        offered: list[str] = []
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        offered.extend(query.get("token", []))
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):  # a malformed cookie header is just no cookie
            cookie.load(headers.get("Cookie", ""))
        if _COOKIE in cookie:
            offered.append(cookie[_COOKIE].value)
        # Every candidate is compared (constant time each), whatever matched first.
        ok = False
        for value in offered:
            ok |= hmac.compare_digest(value.encode(), expected)
        return ok


class _Handler(BaseHTTPRequestHandler):
    app: WebServer
    timeout = 15  # a client that stops reading makes a write fail, not hang
    protocol_version = "HTTP/1.1"
    server_version = "streamclf"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web %s - %s", self.address_string(), format % args)

    # -- routing -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self.app.authorized(self.headers, query):
            self._send_json(401, {"error": "token required: send Authorization: Bearer TOKEN "
                                           "or open the page with ?token=TOKEN"})
            return
        routes = {("GET", "/"): self._page, ("GET", "/index.html"): self._page,
                  ("GET", "/stream.mjpg"): self._mjpeg, ("GET", "/events"): self._events,
                  ("GET", "/api/status"): self._status, ("POST", "/api/classify"): self._classify}
        if url.path == "/api/streams" or url.path.startswith("/api/streams/"):
            self._streams(method, url.path[len("/api/streams"):].strip("/"))
            return
        handler = routes.get((method, url.path))
        if handler is None:
            known = any(path == url.path for _, path in routes)
            self._send_json(405 if known else 404, {"error": f"no {method} {url.path}"})
            return
        try:
            handler(query)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.debug("web client %s went away", self.address_string())

    def _stream_or_404(self, query: dict[str, list[str]]) -> str | None:
        wanted = query.get("stream", [None])[0]
        stream = self.app.hub.resolve(wanted)
        if stream is None:
            what = f"no stream {wanted!r}" if wanted else "no stream is running"
            self._send_json(404, {"error": what, "streams": self.app.hub.streams})
        return stream

    # -- endpoints -----------------------------------------------------------------------
    def _page(self, query: dict[str, list[str]]) -> None:
        body = (resources.files("streamclf.web") / "page.html").read_bytes()
        extra = {}
        token = query.get("token", [None])[0]
        if token is not None and self.app.token is not None:
            cookie: SimpleCookie = SimpleCookie()
            cookie[_COOKIE] = token
            cookie[_COOKIE]["httponly"] = True
            cookie[_COOKIE]["samesite"] = "Strict"
            cookie[_COOKIE]["path"] = "/"
            extra["Set-Cookie"] = cookie[_COOKIE].OutputString()
        self._send(200, "text/html; charset=utf-8", body, extra)

    def _status(self, query: dict[str, list[str]]) -> None:
        self._send_json(200, {"model": self.app.model, "streams": self.app.hub.health(),
                              "uptime_s": round(time.time() - self.app.started, 1),
                              "upload": self.app.classifier is not None})

    def _mjpeg(self, query: dict[str, list[str]]) -> None:
        stream = self._stream_or_404(query)
        if stream is None:
            return
        hub = self.app.hub
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        hub.watch(stream, +1)
        try:
            seq = 0
            while not hub.closed:
                got = hub.next_frame(stream, seq, _WAIT_S)
                if got is None:
                    continue
                seq, jpeg = got
                self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        finally:
            hub.watch(stream, -1)

    def _events(self, query: dict[str, list[str]]) -> None:
        wanted = query.get("stream", [None])[0]
        if wanted is not None and self._stream_or_404(query) is None:
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sub = self.app.hub.subscribe(wanted)
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            last = time.monotonic()
            while not self.app.hub.closed:
                event = sub.get(_WAIT_S)
                if event is None:
                    if time.monotonic() - last >= _HEARTBEAT_S:
                        self.wfile.write(b": ping\n\n")
                        self.wfile.flush()
                        last = time.monotonic()
                    continue
                data = json.dumps(event, separators=(",", ":"), allow_nan=False)
                self.wfile.write(f"id: {event.get('seq', '')}\ndata: {data}\n\n".encode())
                self.wfile.flush()
                last = time.monotonic()
        finally:
            sub.close()

    def _classify(self, query: dict[str, list[str]]) -> None:
        if self.app.classifier is None:
            self._send_json(503, {"error": "classification is not enabled on this server"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(411, {"error": "Content-Length required"})
            return
        if length > self.app.max_upload_bytes:
            self.close_connection = True
            limit = self.app.max_upload_bytes // (1024 * 1024)
            self._send_json(413, {"error": f"upload larger than {limit} MB"})
            return
        body = self.rfile.read(length)
        try:
            name, data = parse_upload(self.headers.get("Content-Type", ""), body)
            result = self.app.classifier.classify(name, data)
        except StreamclfError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("upload classification failed")
            self._send_json(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._send_json(200, result)

    def _streams(self, method: str, stream_id: str) -> None:
        """``GET /api/streams``: ids; ``POST`` (JSON item): add; ``DELETE /api/streams/ID``."""
        control = self.app.controller
        if method == "GET" and not stream_id:
            self._send_json(200, {"streams": self.app.hub.streams})
            return
        if control is None:
            self._send_json(503, {"error": "this run cannot add or remove streams"})
            return
        try:
            if method == "POST" and not stream_id:
                length = int(self.headers.get("Content-Length", "0") or 0)
                if length > 64 * 1024:
                    self._send_json(413, {"error": "stream description too large"})
                    return
                try:
                    item = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    self._send_json(400, {"error": "body must be JSON"})
                    return
                self._send_json(201, control.add(item))
            elif method == "DELETE" and stream_id:
                if stream_id not in self.app.hub.streams:
                    self._send_json(404, {"error": f"no stream {stream_id!r}"})
                    return
                self._send_json(200, control.remove(stream_id))
            else:
                self._send_json(405, {"error": f"no {method} /api/streams/{stream_id}"})
        except StreamclfError as exc:
            self._send_json(400, {"error": str(exc)})

    # -- helpers -------------------------------------------------------------------------
    def _send(self, code: int, ctype: str, body: bytes,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, payload: dict[str, Any]) -> None:
        self._send(code, "application/json", json.dumps(payload).encode())
