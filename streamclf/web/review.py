"""The review side of the web view: past alerts from the event store, with their clips.

* ``GET /review``: the page (``review.html``): alerts filtered by stream, label and time,
  newest first, each with its snapshot and its clip playing in a ``<video>``.
* ``GET /api/alerts?stream=&label=&since=&limit=``: ``{"alerts": [...], "limit": N}``,
  newest first (the rows of :func:`~streamclf.sinks.store_query.read_alerts`, plus
  ``clip_url``/``snapshot_url``, relative to the server's root, or None); ``since`` as
  ``streamclf events --since`` (``1h``, ``2d``, an ISO time); ``limit`` 1-500 (default
  50). A bad parameter is a 400; a server without ``--db`` answers 404, an unreadable
  store 503.
* ``GET /clips/NAME``: one file of the clips folder (``.mp4``, ``.jpg``), with ``Range``
  requests (206 with ``Content-Range``; 416 for a range past the end) so a ``<video>``
  can seek. NAME is a plain file name (letters, digits, ``_ - .``, no leading dot, no
  ``..``): a path, an encoded slash or backslash is a 400; a file that is missing, not a
  regular file, or a symlink leading out of the folder is a 404.

Every request has passed :class:`~streamclf.web.guard.Guard` (Host, token, origin) like any
other endpoint; every error is ``{"error": ...}``.

Thread-safety: endpoints run on the server's event loop; store reads and file checks run
on worker threads, each with its own short-lived SQLite connection.
"""

from __future__ import annotations

import json
import os
import stat
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from streamclf.errors import ConfigError, DataError
from streamclf.sinks.store_query import CLIP_NAME, StoreQuery, parse_time, read_alerts
from streamclf.web.guard import COOKIE, Message, Policy, Receive, Scope, Send

if TYPE_CHECKING:
    from streamclf.web.server import WebServer

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ReviewEndpoints", "page_response"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_MAX_FILTER = 200
#: What ``/clips/NAME`` serves, by file suffix.
_MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def page_response(html: bytes, request: Request, policy: Policy) -> Response:
    """A page; opened with the right ``?token=``, it also sets the token cookie
    (``HttpOnly``, ``SameSite=Strict``) so the page's own requests carry it."""
    response = Response(html, media_type="text/html; charset=utf-8")
    token = request.query_params.get("token")
    if token is not None and policy.token is not None and policy.token_ok([token]):
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def alert_query(params: Any) -> StoreQuery:
    """The :class:`StoreQuery` of ``/api/alerts``'s query parameters.

    Raises:
        ConfigError: a bad ``since`` or ``limit``, or a filter over 200 characters.
    """
    filters = {}
    for key in ("stream", "label"):
        value = params.get(key) or None
        if value is not None and len(value) > _MAX_FILTER:
            raise ConfigError(f"{key} is longer than {_MAX_FILTER} characters")
        filters[key] = value
    since = params.get("since") or None
    text = params.get("limit") or str(DEFAULT_LIMIT)
    if not (text.isascii() and text.isdigit() and len(text) <= 6
            and 1 <= int(text) <= MAX_LIMIT):
        raise ConfigError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return StoreQuery(stream=filters["stream"], label=filters["label"],
                      since=None if since is None else parse_time(since, "since"),
                      limit=int(text))


def _url(name: str | None) -> str | None:
    return None if name is None else "clips/" + quote(name)


def _regular_file_in(folder: str, name: str) -> tuple[str, os.stat_result] | None:
    """``folder/name`` resolved (symlinks followed) and its stat, when it is a regular file
    directly in ``folder``; else None."""
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(real) != root:
        return None  # a symlink leading out of the folder (or into a sub-folder)
    try:
        info = os.stat(real)
    except OSError:
        return None
    return (real, info) if stat.S_ISREG(info.st_mode) else None


class _ClipResponse(FileResponse):
    """A :class:`FileResponse` (Range requests: 206, 416) whose error answers are JSON
    ``{"error": ...}`` like every other endpoint's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: Message | None = None

        async def relay(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is not None and message["type"] == "http.response.body":
                text = bytes(message.get("body", b"")).decode("utf-8", "replace").strip()
                if held["status"] == 416:
                    text = "the range is past the end of the file"
                body = json.dumps({"error": text or "bad range"}, separators=(",", ":")).encode()
                headers = [(k, v) for k, v in held.get("headers", [])
                           if k.lower() not in (b"content-type", b"content-length")]
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                held = None
                return
            await send(message)

        await super().__call__(scope, receive, relay)


class ReviewEndpoints:
    """``/review``, ``/api/alerts`` and ``/clips/NAME`` of one :class:`WebServer` (its
    ``db``, ``clips_dir`` and ``policy``)."""

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.page_html = (resources.files("streamclf.web") / "review.html").read_bytes()

    def routes(self) -> list[Route]:
        return [
            Route("/review", self.page, methods=["GET"]),
            Route("/api/alerts", self.alerts, methods=["GET"]),
            Route("/clips/{name:path}", self.clip, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return page_response(self.page_html, request, self.server.policy)

    async def alerts(self, request: Request) -> Response:
        db = self.server.db
        if db is None:
            return _error(404, "this server has no event store (start it with --db FILE)")
        try:
            query = alert_query(request.query_params)
        except ConfigError as exc:
            return _error(400, str(exc))
        try:
            rows = await run_in_threadpool(read_alerts, db, query)
        except DataError as exc:
            return _error(503, str(exc))
        for row in rows:
            row["clip_url"] = _url(row.pop("clip_name"))
            row["snapshot_url"] = _url(row.pop("snapshot_name"))
        return JSONResponse({"alerts": rows, "limit": query.limit})

    async def clip(self, request: Request) -> Response:
        folder = self.server.clips_dir
        raw = bytes(request.scope.get("raw_path") or b"").lower()
        name = request.path_params["name"]
        if any(sep in raw for sep in _ENCODED_SEPARATORS) or not CLIP_NAME.fullmatch(name) \
                or ".." in name:
            return _error(400, "a clip is named by its file name alone")
        media_type = _MEDIA_TYPES.get(os.path.splitext(name)[1].lower())
        if folder is None or media_type is None:
            return _error(404, f"no clip {name!r}")
        found = await run_in_threadpool(_regular_file_in, folder, name)
        if found is None:
            return _error(404, f"no clip {name!r}")
        path, info = found
        return _ClipResponse(path, media_type=media_type, stat_result=info)
