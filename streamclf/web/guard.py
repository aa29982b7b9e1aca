"""Who may ask the web view what: the checks every request passes before any endpoint runs.

:class:`Guard` is a plain ASGI middleware (no framework import); :class:`Policy` holds what
it checks against. In order, the first failure answers with a JSON ``{"error": ...}`` and
``Connection: close`` (so no byte after a refused request is ever read as another request):

1. **Framing** (400/411): a request with both ``Content-Length`` and ``Transfer-Encoding``
   (RFC 9112 section 6.1), or a ``POST``/``PUT``/``PATCH`` with neither. Without this a body
   sent without a length would be parsed as the next request on the connection.
2. **Host** (421): must name the bound address, or ``localhost``, with the server's port
   (the port may be left out only on port 80); a wildcard bind (``0.0.0.0``, ``::``) also
   accepts any IP literal and this machine's host names. A DNS-rebinding page reaches us
   under its own name, so it is refused here, on every endpoint, GETs included.
3. **Token** (401): with a token set, every request carries it as ``Authorization: Bearer``,
   ``?token=`` or the ``streamclf_token`` cookie (compared in constant time).
4. **Cross-site** (403): ``Sec-Fetch-Site: cross-site`` is refused on everything but the
   pages (``/``, ``/review``: so a link to a page still works); an ``Origin`` header, when
   present, must be the server's own origin as the ``Host`` names it, unless the request
   carries the token explicitly (header or query: a cookie is sent by the browser, not
   chosen by the page).

Every answer also gets ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer`` (a ``?token=`` URL never leaks through a Referer) and
``X-Frame-Options: DENY``.

Thread-safety: a :class:`Policy` is immutable; a :class:`Guard` holds no per-request state.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["COOKIE", "PAGE_PATHS", "Guard", "Policy", "split_host"]

#: The cookie the page sets when opened with ``?token=``.
COOKIE = "streamclf_token"
#: Paths of the page: the only ones another site may link to.
PAGE_PATHS = frozenset({"/", "/index.html", "/review"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAFE_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Host"`` header value -> ``(name, port)`` (name lowercased, IPv6 without brackets;
    port None when absent); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text_ = value.partition(":")
        port_text = port_text_ if sep else None
        if ":" in port_text_:
            return None
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) <= 65535:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Policy:
    """What :class:`Guard` checks against (immutable).

    Args:
        port: the port the server listens on.
        names: host names (lowercase) a ``Host`` header may carry.
        any_ip: also accept any IP literal (wildcard binds: an IP literal cannot be
            rebound, only a name can).
        token: required on every request when set.
    """

    port: int
    names: frozenset[str]
    any_ip: bool = False
    token: str | None = None

    @classmethod
    def for_bind(cls, host: str, port: int, token: str | None = None,
                 allowed_hosts: Iterable[str] = ()) -> Policy:
        """The policy for a server bound to ``host:port``: ``Host`` may name that address,
        ``localhost`` or any of ``allowed_hosts``; a wildcard bind adds IP literals and
        this machine's names."""
        names = {"localhost", host.strip("[]").lower(), *(h.lower() for h in allowed_hosts)}
        wildcard = host in _WILDCARDS
        if wildcard:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        names.discard("")
        return cls(port=port, names=frozenset(names), any_ip=wildcard, token=token or None)

    def host_ok(self, value: str | None) -> bool:
        parsed = split_host(value) if value is not None else None
        if parsed is None:
            return False
        name, port = parsed
        if (port if port is not None else 80) != self.port:
            return False
        return name in self.names or (self.any_ip and _is_ip(name))

    def origin_ok(self, origin: str, host: str) -> bool:
        """``origin`` is this server as reached through ``host`` (an accepted Host value)."""
        try:
            url = urlsplit(origin)
            port = url.port
        except ValueError:
            return False
        expected = split_host(host)
        if url.scheme not in ("http", "https") or expected is None or not url.hostname:
            return False
        default = 443 if url.scheme == "https" else 80
        return (url.hostname.lower() == expected[0]
                and (port or default) == (expected[1] or 80))

    def offered_tokens(self, headers: dict[str, str], query: dict[str, list[str]],
                       cookies: bool = True) -> list[str]:
        offered = list(query.get("token", []))
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        if cookies:
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(Exception):  # a malformed Cookie header is no cookie
                jar.load(headers.get("cookie", ""))
            if COOKIE in jar:
                offered.append(jar[COOKIE].value)
        return offered

    def token_ok(self, offered: list[str]) -> bool:
        """True without a token; else whether any offered value is the token. Every
        candidate is compared (in constant time each), whatever matched first."""
        if self.token is None:
            return True
        expected = self.token.encode()
        ok = False
        for value in offered:
            ok |= hmac.compare_digest(value.encode("utf-8", "replace"), expected)
        return ok


class Refusal(Exception):
    """A request the guard answers itself (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _headers(scope: Scope) -> tuple[dict[str, str], list[str], list[str]]:
    """Headers (last value wins), plus every Host and Origin value (duplicates are refused)."""
    headers: dict[str, str] = {}
    hosts: list[str] = []
    origins: list[str] = []
    for raw_key, raw_value in scope.get("headers", []):
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[key] = value
        if key == "host":
            hosts.append(value)
        elif key == "origin":
            origins.append(value)
    return headers, hosts, origins


def check(policy: Policy, scope: Scope) -> None:
    """Raise :class:`Refusal` for a request the server must not serve (see the module)."""
    headers, hosts, origins = _headers(scope)
    method, path = scope.get("method", "GET"), scope.get("path", "/")
    has_length, has_te = "content-length" in headers, "transfer-encoding" in headers
    if has_length and has_te:
        raise Refusal(400, "send Content-Length or Transfer-Encoding, not both")
    if method in _BODY_METHODS and not has_length and not has_te:
        raise Refusal(411, f"{method} needs a Content-Length header")
    if len(hosts) != 1 or not policy.host_ok(hosts[0]):
        raise Refusal(421, "this server does not answer to that Host; use the address it "
                           "listens on (or localhost)")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if not policy.token_ok(policy.offered_tokens(headers, query)):
        raise Refusal(401, "token required: send Authorization: Bearer TOKEN or open the "
                           "page with ?token=TOKEN")
    if headers.get("sec-fetch-site") == "cross-site" and path not in PAGE_PATHS:
        raise Refusal(403, "cross-site requests are refused")
    if len(origins) > 1:
        raise Refusal(403, "more than one Origin header")
    if origins and not policy.origin_ok(origins[0], hosts[0]):
        explicit = policy.offered_tokens(headers, query, cookies=False)
        if policy.token is None or not policy.token_ok(explicit):
            raise Refusal(403, "requests from another origin are refused")


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"error": str(refusal)}).encode()
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *_SAFE_HEADERS]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: :func:`check` every HTTP request, answer refusals itself, and add
    the safety headers to every response. Other scope types (lifespan) pass through."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check(self.policy, scope)
        except Refusal as refusal:
            await _refuse(send, refusal)
            return

        async def send_safe(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _SAFE_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_safe)
