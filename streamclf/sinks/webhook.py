"""Forward events to a webhook: one HTTP POST of JSON per event, never blocking the caller.

:class:`WebhookForwarder` keeps a bounded queue and one sender thread. :meth:`submit` never
waits: when the queue is full (the endpoint is down, or slower than the events) the *oldest*
queued event is dropped and counted, so what is kept is the freshest (an alert's ``end``
survives an outage that its ``start`` did not). Each POST has a timeout. A POST that fails
for a reason that may pass (connection refused, timeout, HTTP 408, 429 or 5xx) is retried,
the same body, after a back-off (``backoff_initial_s`` doubling up to ``backoff_max_s``,
each wait times a random factor in 1 +- 0.2) until it is answered or the forwarder closes:
a receiver that is down for a while loses nothing up to the queue's bound (the queue, plus
the one event being retried). Any other answer (a 4xx: the receiver refuses that event) is
not retried: the event is counted in ``rejected``. Failures are logged, the password of the
URL masked: the first, then every 100th.

With a ``secret``, each request carries ``X-Streamclf-Signature: sha256=HEX``, the
HMAC-SHA256 of the exact body with the secret as key, so the receiver can check who sent
it (compare in constant time, e.g. ``hmac.compare_digest``).

Uses the standard library's ``urllib`` (one blocking POST at a time on the sender thread
needs nothing more; no extra dependency).

Example::

    hook = WebhookForwarder("http://127.0.0.1:9000/events", timeout_s=2.0, secret="s3cret")
    hook.start()
    hook.submit({"type": "prediction", "stream": "cam0", ...})
    hook.close(timeout_s=2.0)        # sends what is queued, within the time given
    print(hook.sent, hook.failed, hook.dropped)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from streamclf.errors import ConfigError
from streamclf.live.events import jsonable
from streamclf.masking import mask_credentials
from streamclf.sections import WebhookConfig
from streamclf.types import Event

__all__ = ["SIGNATURE_HEADER", "WebhookForwarder", "check_webhook_url", "sign"]

log = logging.getLogger(__name__)

_LOG_EVERY = 100
#: The header carrying ``sha256=HEX`` when a secret is set.
SIGNATURE_HEADER = "X-Streamclf-Signature"
#: Answers worth retrying: the receiver may take the event later.
_RETRY_STATUS = frozenset({408, 425, 429})


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of ``body`` (hex)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check_webhook_url(url: str) -> str:
    """``url`` if it is an ``http(s)://host[:port]/...`` URL.

    Raises:
        ConfigError: another scheme or no host (the message names ``--webhook``).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook {mask_credentials(url)!r}: use an http:// or https:// URL "
                          "with a host, e.g. http://127.0.0.1:9000/events")
    try:
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        raise ConfigError(f"--webhook {mask_credentials(url)!r}: bad port") from None
    return url


class WebhookForwarder:
    """POSTs each submitted event as ``application/json`` from a background thread.

    Args:
        url: the endpoint (checked with :func:`check_webhook_url`); ``user:pass@`` in it is
            sent as HTTP Basic authentication.
        queue_size: events waiting at most; beyond it the oldest is dropped (counted).
        timeout_s: connect + read timeout of one POST.
        headers: extra request headers (e.g. ``Authorization``).
        secret: signs each body (:data:`SIGNATURE_HEADER`); never logged or shown.
        backoff_initial_s, backoff_max_s: the wait before the first retry of a failed
            POST, doubled at each further failure up to the maximum.

    Counters: ``sent`` (2xx answers), ``failed`` (POST attempts that failed, retried or
    not), ``rejected`` (events a 4xx answer refused: not retried), ``dropped`` (pushed out
    of a full queue, or still queued when :meth:`close` ran out of time).

    Raises:
        ConfigError: a bad URL or limit.

    Thread-safety: :meth:`submit`, :meth:`write`, :meth:`queue_health` and the counters
    may be used from any thread; ``start`` and ``close`` belong to the owner.
    """

    def __init__(self, url: str, queue_size: int = 1000, timeout_s: float = 2.0,
                 headers: Mapping[str, str] | None = None, *, secret: str | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError("webhook queue_size must be an integer >= 1")
        if timeout_s <= 0:
            raise ConfigError("webhook timeout_s must be > 0")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ConfigError("webhook back-off: need 0 < backoff_initial_s <= backoff_max_s")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigError("webhook secret must be a non-empty string")
        self.url = check_webhook_url(url)
        self.timeout_s = timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        parts = urlsplit(self.url)
        self._target = self.url
        if parts.username is not None:  # urllib ignores URL credentials: send them as Basic
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers.setdefault(
                "Authorization", "Basic " + base64.b64encode(user.encode("utf-8")).decode())
            self._target = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self._secret = secret
        self.queue_size = queue_size
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._busy = False  # the sender holds an event (sending or waiting to retry)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="streamclf-webhook", daemon=True)
        self.sent = self.failed = self.dropped = self.rejected = 0
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, config: WebhookConfig, timeout_s: float = 2.0) -> WebhookForwarder:
        """The forwarder a run's ``webhook:`` section describes (``alerts_only`` is the
        caller's filter: attach it with ``types={EventType.ALERT}``)."""
        return cls(config.url, queue_size=config.queue, timeout_s=timeout_s,
                   secret=config.secret)

    def __repr__(self) -> str:  # the URL's password and the secret stay out of logs
        return (f"WebhookForwarder({mask_credentials(self.url)!r}, queue_size="
                f"{self.queue_size}, signed={self._secret is not None})")

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event (a JSON-able mapping); never blocks. False when the queue was
        full and its oldest event was dropped to make room."""
        body = json.dumps(event, allow_nan=False, default=str).encode("utf-8")
        with self._cond:
            full = len(self._queue) >= self.queue_size
            if full:
                self._queue.popleft()
            self._queue.append(body)
            self._cond.notify()
        if full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                log.warning("webhook %s: queue full (%d), dropping the oldest events (the "
                            "endpoint is down or slower than the events)",
                            mask_credentials(self.url), self.queue_size)
            return False
        return True

    def queue_health(self) -> tuple[int, int]:
        """``(events waiting, events dropped)``: shown in the run's sink health."""
        with self._cond:
            waiting = len(self._queue) + (1 if self._busy else 0)
        return waiting, self.dropped + self.rejected

    def write(self, event: Event) -> None:
        """The event-sink side (:mod:`streamclf.live.sinks`): queue ``event``'s JSON record;
        never blocks (attach it ``inline``: it has its own bounded queue)."""
        self.submit(jsonable(event.as_dict()))

    def close(self, timeout_s: float = 2.0) -> bool:
        """Send what is queued for up to ``timeout_s`` (a retry wait is cut short), then
        stop; the rest is dropped (counted). True if the thread ended in time."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._thread.is_alive() and (self._queue or self._busy):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.05, deadline - time.monotonic()))
        with self._cond:
            left_over = len(self._queue)
            self._queue.clear()
        with self._lock:
            self.dropped += left_over
        return not self._thread.is_alive()

    def summary(self) -> str:
        rejected = f", {self.rejected} rejected" if self.rejected else ""
        return f"{self.sent} sent, {self.failed} failed{rejected}, {self.dropped} dropped"

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.1)
                    continue
                body = self._queue.popleft()
                self._busy = True
            try:
                self._send(body)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, body: bytes) -> None:
        """POST ``body`` until it is answered, refused, or the forwarder stops."""
        delay = self.backoff_initial_s
        while True:
            outcome = self._post(body)
            if outcome != "retry":
                return
            wait = delay * random.uniform(0.8, 1.2)
            if self._stop.wait(wait):
                with self._lock:
                    self.dropped += 1  # the event in hand is lost with the forwarder
                return
            delay = min(delay * 2.0, self.backoff_max_s)

    def _post(self, body: bytes) -> str:
        """One POST: ``"sent"``, ``"retry"`` (may pass) or ``"rejected"`` (a 4xx)."""
        headers = dict(self._headers)
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        request = urllib.request.Request(self._target, data=body, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read(65536)
                status: int | None = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            status, reason = None, getattr(exc, "reason", exc)
            error = mask_credentials(f"{type(exc).__name__}: {reason}")
        if status is not None:
            if 200 <= status < 300:
                with self._lock:
                    self.sent += 1
                return "sent"
            error = f"HTTP {status}"
        retry = status is None or status in _RETRY_STATUS or status >= 500
        with self._lock:
            self.failed += 1
            failed = self.failed
            self.last_error = error
            if not retry:
                self.rejected += 1
        if failed == 1 or failed % _LOG_EVERY == 0:
            log.warning("webhook %s: POST failed (%s)%s; %d failed so far",
                        mask_credentials(self.url), error,
                        ", retrying" if retry else ", not retried", failed)
        return "retry" if retry else "rejected"
