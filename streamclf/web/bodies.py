"""Bounded request bodies: a size cap enforced while reading, an idle timeout per chunk,
and JSON that cannot blow the stack.

Bodies are read chunk by chunk from the ASGI ``receive`` channel, never trusting the
declared ``Content-Length`` (it may lie either way), so a body costs at most its cap in
memory and a client that stops sending is answered (408) instead of holding a handler.
JSON nesting is measured by a linear scan before :func:`json.loads` runs, because the
standard parser recurses once per level: thirty thousand ``[`` raise ``RecursionError``.

Thread-safety: pure functions and per-request coroutines; nothing shared.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from streamclf.errors import DataError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "ClientGone", "RequestError", "check_declared",
           "iter_body",
           "json_depth", "parse_json_object", "read_body"]

#: Largest JSON body accepted (a stream description is a few hundred bytes).
MAX_JSON_BYTES = 64 * 1024
#: Deepest JSON nesting accepted (a stream description is 1 deep).
MAX_JSON_DEPTH = 20
_SPECIAL = re.compile(rb'["\\\[\]{}]')

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class RequestError(DataError):
    """A request the server refuses: ``status`` is the HTTP answer; ``close`` says the
    connection must be closed after it (the body was not read to its end)."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


class ClientGone(Exception):
    """The client disconnected before its body was complete (nobody to answer)."""


async def iter_body(receive: Receive, limit: int, idle_s: float,
                    what: str = "body") -> AsyncIterator[bytes]:
    """The request body in chunks as they arrive.

    Raises:
        RequestError: 413 as soon as more than ``limit`` bytes arrived; 408 when no chunk
            came for ``idle_s`` seconds.
        ClientGone: the client disconnected.
    """
    received = 0
    while True:
        try:
            with anyio.fail_after(idle_s):
                message = await receive()
        except TimeoutError:
            raise RequestError(408, f"the {what} stopped arriving (nothing for {idle_s:g} s)",
                               close=True) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise RequestError(413, f"{what} larger than {_size(limit)}")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def check_declared(content_length: str | None, limit: int, what: str = "body") -> None:
    """Refuse (413) a body whose declared ``Content-Length`` is over ``limit`` before reading
    a byte of it (the reader enforces the limit again, whatever was declared)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise RequestError(413, f"{what} larger than {_size(limit)}")


async def read_body(receive: Receive, limit: int, idle_s: float, what: str = "body") -> bytes:
    """The whole body (at most ``limit`` bytes); raises as :func:`iter_body`."""
    parts = [chunk async for chunk in iter_body(receive, limit, idle_s, what)]
    return b"".join(parts)


def _size(limit: int) -> str:
    mb = limit / (1024 * 1024)
    return f"{mb:g} MB" if mb >= 1 else f"{limit // 1024} KB"


def json_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, by one linear scan (no recursion);
    brackets inside strings do not count. Malformed input gives some number, never an
    error (the parser rejects it afterwards)."""
    depth = deepest = 0
    in_string = False
    escaped = -1  # the position a backslash escapes
    for match in _SPECIAL.finditer(data):
        pos = match.start()
        if pos == escaped:
            continue
        char = data[pos:pos + 1]
        if in_string:
            if char == b"\\":
                escaped = pos + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(data: bytes, what: str = "body",
                      max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from ``data`` (UTF-8).

    Raises:
        RequestError: 400 for malformed JSON, ``NaN``/``Infinity``, nesting deeper than
            ``max_depth``, or anything but an object.
    """
    depth = json_depth(data)
    if depth > max_depth:
        raise RequestError(400, f"{what}: JSON nested {depth} deep; at most {max_depth}")
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError(400, f"{what} must be JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"{what} must be a JSON object, got {type(value).__name__}")
    return value
