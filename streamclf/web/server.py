"""The web view's HTTP server: Starlette endpoints (:mod:`streamclf.web.app`) served by
uvicorn on its own thread and event loop.

Endpoints (the contract; ``?stream=ID`` selects a stream, default the first):

* ``GET /``: the page (live overlay, top-k bars, event list, health, upload form).
* ``GET /stream.mjpg``: the overlay as ``multipart/x-mixed-replace`` JPEG frames.
* ``GET /events``: Server-Sent Events; each ``data:`` line is one event-log object
  (``type``, ``stream``, ``ts``, ``seq``, fields), ``id:`` its ``seq``.
* ``GET /api/status``: JSON ``{"streams": {id: health}, "model": ..., "uptime_s": ...}``.
* ``GET /metrics``: Prometheus metrics (:mod:`streamclf.web.metrics`), the same token rules.
* ``GET /api/streams``; ``POST /api/streams`` (JSON ``{"id", "source", ...}``) -> 201;
  ``DELETE /api/streams/ID``.
* ``POST /api/classify``: ``multipart/form-data`` with a ``file`` field -> JSON
  ``{"labels": [...], "scores": [...], ...}`` (400 with ``{"error": ...}`` for a bad video,
  413 past the size limit, 429 while ``max_concurrent_uploads`` are under way).
* ``GET /review``, ``GET /api/alerts``, ``GET /clips/NAME``: past alerts from the event
  store, with their clips (:mod:`streamclf.web.review`).

Security (the README's "Security" section has the threat model): binds 127.0.0.1 by
default; any other address needs a token. :mod:`streamclf.web.guard` checks framing, Host
(DNS rebinding), token and origin (cross-site writes) on every request;
:mod:`streamclf.web.app` caps bodies and refuses file paths from the API.

Why Starlette + uvicorn (h11), measured on the team's 2-core machine against aiohttp 3.14,
both serving from a thread as here: import 0.17 s and +10.7 MB RSS (aiohttp 0.3-0.65 s,
+17.9 MB); ``GET`` on a kept-alive connection ~900-1100/s (aiohttp ~900-1400/s); a 150 MB
multipart upload streamed to disk in 1.2-1.4 s (aiohttp 0.75-0.8 s), both with a peak RSS
growth of ~2 MB. The deciding difference is malformed framing: h11 answers it with a 400
and one WARNING line, aiohttp logged an ERROR traceback per bad request (``Content-Length:
-1``, ``abc``, both Content-Length and Transfer-Encoding). The listening socket is made
with ``IPPROTO_TCP`` so asyncio sets ``TCP_NODELAY`` on every connection: without it,
kept-alive requests waited out delayed ACKs (22 requests/s).

Example::

    server = WebServer(WebHub(), "127.0.0.1", 0).start()
    print(server.url)      # http://127.0.0.1:PORT/
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from streamclf._lazy import require
from streamclf._net import is_loopback
from streamclf.errors import ConfigError
from streamclf.web.hub import WebHub

if TYPE_CHECKING:
    from streamclf.web.guard import Policy
    from streamclf.web.uploads import ClassifyService

__all__ = ["TOKEN_ENV", "WebServer", "parse_bind"]

log = logging.getLogger(__name__)
TOKEN_ENV = "STREAMCLF_TOKEN"
#: Open connections served at once (uvicorn answers 503 beyond).
MAX_CONNECTIONS = 128
#: At :meth:`WebServer.stop`, connections still open this long after the hub closed (a
#: client that stopped reading a stream: its writes wait for ever) are dropped...
_ABORT_AFTER_S = 0.8
#: ...and uvicorn cancels what still runs after this long (it would log each as an error).
_GRACE_S = 2


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


def _positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) \
            or value <= 0:
        what = "a whole number" if integer else "a finite number"
        raise ConfigError(f"web view: {name} must be {what} > 0, got {value!r}")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPPROTO_TCP: asyncio then sets TCP_NODELAY per connection)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)
        # IPv4 first: "localhost" is 127.0.0.1, as clients and the old server took it.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"web view: cannot listen on {host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web view: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    return sock


class WebServer:
    """Serves a :class:`WebHub` over HTTP on a background thread.

    Args:
        hub: the streams to show.
        host, port: where to listen (port 0: any free port, see :attr:`port`); the socket
            is bound here, so a taken port fails at once.
        token: required on every request when set; required to be set when ``host`` is not
            a loopback address.
        classifier: handles ``POST /api/classify`` (None: the endpoint answers 503).
        max_upload_mb: larger uploads get 413 (as soon as the limit is passed).
        model: shown on the page and in ``/api/status``.
        max_concurrent_uploads: uploads received or classified at once (429 beyond).
        upload_idle_s: an upload that sends nothing this long is answered 408.
        allowed_hosts: more names the ``Host`` header may carry (a DNS name of this
            machine, a reverse proxy's); the bound address and ``localhost`` always may.
        db: the event store ``/api/alerts`` and ``/review`` read (None: they answer 404).
        clips_dir: the folder ``/clips/NAME`` serves alert clips and snapshots from, and
            nothing outside it (None: 404).

    Raises:
        ConfigError: a non-loopback ``host`` without a token, a bad limit, or an address
            that cannot be listened on.

    Thread-safety: :meth:`start` and :meth:`stop` from one controlling thread;
    :attr:`controller` is set once, before requests need it.
    """

    def __init__(self, hub: WebHub, host: str = "127.0.0.1", port: int = 8080,
                 token: str | None = None, classifier: ClassifyService | None = None,
                 max_upload_mb: float = 200.0, model: str = "",
                 max_concurrent_uploads: int = 2, upload_idle_s: float = 10.0,
                 allowed_hosts: Sequence[str] = (), db: str | None = None,
                 clips_dir: str | None = None) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(f"binding the web view to {host} needs a token: pass --token "
                              f"TOKEN or set ${TOKEN_ENV} (or bind 127.0.0.1)")
        _positive("max_upload_mb (--max-upload-mb)", max_upload_mb)
        _positive("max_concurrent_uploads", max_concurrent_uploads, integer=True)
        _positive("upload_idle_s", upload_idle_s)
        self.hub = hub
        self.token = token or None
        self.classifier = classifier
        self.max_upload_mb = float(max_upload_mb)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_concurrent_uploads = int(max_concurrent_uploads)
        self.upload_idle_s = float(upload_idle_s)
        self.model = model
        self.db, self.clips_dir = db, clips_dir
        #: Adds/removes streams at run time (``/api/streams``); None: those answer 503.
        self.controller: StreamControl | None = None
        self.started = time.time()
        # The web framework loads here, when a server is built, never on `import streamclf`
        # (a missing one is a StreamclfError with the pip command).
        uvicorn = require("uvicorn")
        require("starlette")
        require("python_multipart")
        from streamclf.web.app import build_app
        from streamclf.web.guard import Policy
        from streamclf.web.metrics import RunMetrics

        #: ``GET /metrics``: stream health from the hub; a run adds it as an event sink.
        self.metrics = RunMetrics(hub.health)

        self._sock = _listen(host, port)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.policy: Policy = Policy.for_bind(host, self.port, self.token, allowed_hosts)
        config = uvicorn.Config(
            build_app(self, self.policy), http="h11", loop="asyncio", ws="none",
            lifespan="off", interface="asgi3", log_config=None, access_log=False,
            proxy_headers=False, server_header=False, timeout_keep_alive=5,
            timeout_graceful_shutdown=_GRACE_S, limit_concurrency=MAX_CONNECTIONS)
        self._uvicorn = uvicorn.Server(config)
        self._loop: asyncio.AbstractEventLoop | None = None
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
        """Serve on a background thread (connections made before it runs wait in the
        socket's backlog). Returns self."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),),
                                        name="streamclf-web", daemon=True)
        self._thread.start()
        log.info("web view on %s", self.url)
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._uvicorn.serve(sockets=[self._sock])

    def _abort_stalled(self) -> None:
        """On the server's loop: drop every connection still open (uvicorn's connection
        objects keep their transport in ``transport``); each then ends as a client that
        went away, quietly, instead of being cancelled with an error logged."""
        for connection in list(self._uvicorn.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def stop(self, timeout_s: float = 3.0) -> bool:
        """End streaming responses (within one hub wait), stop accepting, let running
        requests finish, drop connections still open after 0.8 s (clients that stopped
        reading), close the socket and the upload worker. True if the serving thread ended
        within ``timeout_s``."""
        self.hub.close()
        self._uvicorn.should_exit = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(loop.call_later, _ABORT_AFTER_S, self._abort_stalled)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._sock.close()
        if self.classifier is not None:
            self.classifier.close()
        return self._thread is None or not self._thread.is_alive()
