"""The web view's two endless responses: ``/stream.mjpg`` (MJPEG) and ``/events`` (SSE).

Both read the :class:`~streamclf.web.hub.WebHub`, whose waits block a thread for at most
:data:`WAIT_S`; they run on worker threads of their own capacity limiter, so viewers never
take the threads the API endpoints use. A response ends when the client leaves (Starlette
cancels it), when its stream leaves the hub, or within one wait of
:meth:`WebHub.close` (server stop). At most :data:`MAX_VIEWERS` run at once (503 beyond).

Thread-safety: the counters are touched only on the event loop's thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from streamclf.web.hub import WebHub

__all__ = ["BOUNDARY", "MAX_VIEWERS", "WAIT_S", "Streams"]

#: Every streaming loop re-checks for shutdown at least this often (seconds).
WAIT_S = 0.5
#: An SSE comment is sent after this long without an event, so proxies keep the line open.
HEARTBEAT_S = 10.0
#: Streaming responses served at once.
MAX_VIEWERS = 32
BOUNDARY = "streamclf-frame"
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class Streams:
    """Builds the MJPEG and SSE responses for one hub (one instance per server)."""

    def __init__(self, hub: WebHub) -> None:
        self.hub = hub
        self.viewers = 0
        self._limiter = anyio.CapacityLimiter(MAX_VIEWERS)

    def _stream_or_404(self, wanted: str | None) -> str | JSONResponse:
        stream = self.hub.resolve(wanted)
        if stream is None:
            what = f"no stream {wanted[:64]!r}" if wanted else "no stream is running"
            return _error(404, what, streams=self.hub.streams)
        return stream

    def _refusal(self, wanted: str | None, need_stream: bool) -> Response | str | None:
        """The one check before a live view: the stream (404 if unknown; with
        ``need_stream`` False, None stays None), then the viewer cap (503). Returns the
        refusal, or the stream to show."""
        stream: Response | str | None = wanted
        if need_stream or wanted is not None:
            stream = self._stream_or_404(wanted)
            if isinstance(stream, Response):
                return stream
        if self.viewers >= MAX_VIEWERS:
            return _error(503, f"{MAX_VIEWERS} live views are open already; close one")
        return stream

    def mjpeg(self, wanted: str | None) -> Response:
        """``multipart/x-mixed-replace`` JPEG frames of ``wanted`` (None: the first)."""
        stream = self._refusal(wanted, need_stream=True)
        if isinstance(stream, Response):
            return stream
        assert stream is not None  # need_stream: a name or a refusal
        return StreamingResponse(self._frames(stream), headers=_HEADERS,
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    async def _frames(self, stream: str) -> AsyncIterator[bytes]:
        hub = self.hub
        self.viewers += 1
        hub.watch(stream, +1)
        try:
            seq = 0
            while not hub.closed:
                got = await anyio.to_thread.run_sync(hub.next_frame, stream, seq, WAIT_S,
                                                     limiter=self._limiter)
                if got is None:
                    if hub.resolve(stream) is None:
                        return  # the stream ended or was removed
                    continue
                seq, jpeg = got
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
        finally:
            hub.watch(stream, -1)
            self.viewers -= 1

    def events(self, wanted: str | None) -> Response:
        """Server-Sent Events: one ``data:`` line per event-log object, ``id:`` its ``seq``
        (``wanted``: only that stream's events; None: every stream's)."""
        refused = self._refusal(wanted, need_stream=False)
        if isinstance(refused, Response):
            return refused
        return StreamingResponse(self._events(wanted), headers=_HEADERS,
                                 media_type="text/event-stream; charset=utf-8")

    async def _events(self, wanted: str | None) -> AsyncIterator[bytes]:
        self.viewers += 1
        sub = self.hub.subscribe(wanted)
        try:
            yield b"retry: 1000\n\n"
            last = time.monotonic()
            while not self.hub.closed:
                event = await anyio.to_thread.run_sync(sub.get, WAIT_S, limiter=self._limiter)
                if event is None:
                    if time.monotonic() - last >= HEARTBEAT_S:
                        last = time.monotonic()
                        yield b": ping\n\n"
                    continue
                data = json.dumps(event, separators=(",", ":"), allow_nan=False)
                last = time.monotonic()
                yield f"id: {event.get('seq', '')}\ndata: {data}\n\n".encode()
        finally:
            sub.close()
            self.viewers -= 1
