"""The web view's endpoints, as a Starlette application (see :mod:`streamclf.web.server`
for the contract and the server around it).

Every answer but the page and the two streams is JSON; every error is
``{"error": "..."}`` with a 4xx/5xx status, never a traceback. Requests reach these
endpoints only after :class:`~streamclf.web.guard.Guard` has checked framing, Host, token
and origin. Writes need a body type a cross-site form cannot send without the guard seeing
its Origin (``application/json``; ``multipart/form-data`` for uploads: 415 otherwise), and
``POST /api/streams`` refuses every key that names a file (paths come from the config only).

Thread-safety: endpoints run on the server's event loop; blocking calls (adding a stream,
classifying) go to worker threads or the upload worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import BrokenExecutor
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamclf.config import RunConfig, StreamConfig
from streamclf.errors import StreamclfError
from streamclf.web.bodies import (
    MAX_JSON_BYTES,
    ClientGone,
    RequestError,
    check_declared,
    iter_body,
    parse_json_object,
    read_body,
)
from streamclf.web.formdata import receive_file
from streamclf.web.guard import Guard, Policy
from streamclf.web.review import ReviewEndpoints, page_response
from streamclf.web.streaming import Streams

if TYPE_CHECKING:
    from streamclf.web.server import WebServer

__all__ = ["JSON_IDLE_S", "PATH_KEYS", "build_app"]

log = logging.getLogger(__name__)
#: Keys that name files: never accepted from ``POST /api/streams`` (from the schema).
PATH_KEYS = frozenset(f.name for cls in (StreamConfig, RunConfig)
                      for f in dataclasses.fields(cls) if f.metadata.get("path"))
#: Longest pause inside a JSON body (they are a few hundred bytes: one packet).
JSON_IDLE_S = 1.0
#: Longest a classification may take before the worker is restarted (504).
CLASSIFY_TIMEOUT_S = 300.0


def _error(status: int, message: str, close: bool = False, **extra: Any) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class _Endpoints:
    """The endpoints of one :class:`WebServer` (reads its hub, controller and limits)."""

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.streams = Streams(server.hub)
        self._uploads = 0
        self._uploads_lock = threading.Lock()
        self.page_html = (resources.files("streamclf.web") / "page.html").read_bytes()

    # -- page and status -----------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return page_response(self.page_html, request, self.server.policy)

    async def status(self, request: Request) -> Response:
        health = await run_in_threadpool(self.server.hub.health)
        return JSONResponse({"model": self.server.model, "streams": health,
                             "uptime_s": round(time.time() - self.server.started, 1),
                             "upload": self.server.classifier is not None})

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text exposition (OpenMetrics if asked for)."""
        body, content_type = await run_in_threadpool(
            self.server.metrics.exposition, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    async def mjpeg(self, request: Request) -> Response:
        if request.method == "HEAD":  # the headers only, not an endless body
            return Response(media_type="multipart/x-mixed-replace")
        return self.streams.mjpeg(request.query_params.get("stream"))

    async def events(self, request: Request) -> Response:
        if request.method == "HEAD":
            return Response(media_type="text/event-stream")
        return self.streams.events(request.query_params.get("stream"))

    # -- streams -------------------------------------------------------------------------
    async def list_streams(self, request: Request) -> Response:
        return JSONResponse({"streams": self.server.hub.streams})

    async def add_stream(self, request: Request) -> Response:
        """``POST /api/streams``: JSON ``{"id", "source", ...per-stream keys}`` -> 201."""
        control = self.server.controller
        if control is None:
            return _error(503, "this run cannot add or remove streams")
        if _media_type(request) != "application/json":
            return _error(415, "POST /api/streams needs Content-Type: application/json")
        check_declared(request.headers.get("content-length"), MAX_JSON_BYTES,
                       "stream description")
        body = await read_body(request.receive, MAX_JSON_BYTES, JSON_IDLE_S,
                               "stream description")
        item = parse_json_object(body, "stream description")
        paths = sorted(PATH_KEYS & set(item))
        if paths:
            return _error(400, f"key {paths[0]!r} names a file; files are set in the config "
                               "only, not through the API")
        return JSONResponse(await run_in_threadpool(control.add, item), status_code=201)

    async def remove_stream(self, request: Request) -> Response:
        """``DELETE /api/streams/ID`` -> 200 with the stream's totals."""
        control = self.server.controller
        if control is None:
            return _error(503, "this run cannot add or remove streams")
        if _media_type(request) != "application/json":
            return _error(415, "DELETE /api/streams/ID needs Content-Type: application/json")
        stream_id = request.path_params["stream_id"]
        if stream_id not in self.server.hub.streams:
            return _error(404, f"no stream {stream_id[:64]!r}")
        return JSONResponse(await run_in_threadpool(control.remove, stream_id))

    # -- upload --------------------------------------------------------------------------
    async def classify(self, request: Request) -> Response:
        """``POST /api/classify``: multipart ``file`` -> labels and scores."""
        service, limit = self.server.classifier, self.server.max_upload_bytes
        if service is None:
            return _error(503, "classification is not enabled on this server")
        if _media_type(request) != "multipart/form-data":
            return _error(415, "POST /api/classify needs Content-Type: multipart/form-data "
                               "with a 'file' field")
        check_declared(request.headers.get("content-length"), limit, "upload")
        with self._uploads_lock:
            if self._uploads >= self.server.max_concurrent_uploads:
                return _error(429, f"{self._uploads} uploads are being classified; try again "
                                   "when one is done")
            self._uploads += 1
        try:
            chunks = iter_body(request.receive, limit, self.server.upload_idle_s, "upload")
            async with receive_file(chunks, request.headers["content-type"]) as saved:
                try:
                    with anyio.fail_after(CLASSIFY_TIMEOUT_S):
                        future = service.submit(saved.path, saved.filename)
                        result = await asyncio.wrap_future(future)
                except TimeoutError:
                    service.close()  # a stuck worker: the next upload gets a fresh one
                    return _error(504, f"classification took over {CLASSIFY_TIMEOUT_S:g} s")
                except BrokenExecutor as exc:  # the worker died (killed, out of memory)
                    log.error("upload classifier worker died: %s", exc)
                    service.close()
                    return _error(500, "the classifier process died; try again")
        except OSError as exc:  # the temporary file could not be written (disk full)
            log.warning("upload not stored: %s", exc)
            return _error(507, f"the server cannot store the upload: {exc.strerror or exc}")
        finally:
            with self._uploads_lock:
                self._uploads -= 1
        return JSONResponse(result)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _error(exc.status, str(exc), close=exc.close)


async def _user_error(request: Request, exc: Exception) -> Response:
    return _error(400, str(exc))


async def _client_gone(request: Request, exc: Exception) -> Response:
    return _error(400, "the client went away", close=True)  # nobody reads it


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = f"no {request.method} {request.url.path[:200]}" if status in (404, 405) \
        else str(exc.detail)
    return _error(status, message)


def build_app(server: WebServer, policy: Policy) -> Starlette:
    """The ASGI application serving ``server``'s hub, behind a :class:`Guard` with
    ``policy``."""
    ep = _Endpoints(server)
    routes = [
        Route("/", ep.page, methods=["GET"]),
        Route("/index.html", ep.page, methods=["GET"]),
        Route("/api/status", ep.status, methods=["GET"]),
        Route("/metrics", ep.metrics, methods=["GET"]),
        Route("/stream.mjpg", ep.mjpeg, methods=["GET"]),
        Route("/events", ep.events, methods=["GET"]),
        Route("/api/streams", ep.list_streams, methods=["GET"]),
        Route("/api/streams", ep.add_stream, methods=["POST"]),
        Route("/api/streams/{stream_id:path}", ep.remove_stream, methods=["DELETE"]),
        Route("/api/classify", ep.classify, methods=["POST"]),
        *ReviewEndpoints(server).routes(),  # /review, /api/alerts, /clips/NAME
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, policy=policy)],
                    exception_handlers={RequestError: _request_error,
                                        StreamclfError: _user_error,
                                        ClientGone: _client_gone,
                                        HTTPException: _http_error})
    app.router.redirect_slashes = False
    return app
