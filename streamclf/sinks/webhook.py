"""Forward events to a webhook: one HTTP POST of JSON per event, never blocking the caller.

:class:`WebhookForwarder` keeps a bounded queue and one sender thread. :meth:`submit` never
waits: when the queue is full (the endpoint is slower than the events) the event is dropped
and counted. Each POST has a timeout; a failed one (connection refused, timeout, a non-2xx
answer) is counted and logged (the first, then every 100th) and the next event is sent as
usual: no retries, so a dead endpoint costs one timeout per event at most, on the sender
thread only.

Example::

    hook = WebhookForwarder("http://127.0.0.1:9000/events", timeout_s=2.0)
    hook.start()
    hook.submit({"type": "prediction", "stream": "cam0", ...})
    hook.close(timeout_s=2.0)        # sends what is queued, within the time given
    print(hook.sent, hook.failed, hook.dropped)
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from streamclf.errors import ConfigError
from streamclf.live.events import jsonable
from streamclf.masking import mask_credentials
from streamclf.types import Event

__all__ = ["WebhookForwarder", "check_webhook_url"]

log = logging.getLogger(__name__)

_LOG_EVERY = 100


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
        url: the endpoint (checked with :func:`check_webhook_url`).
        queue_size: events waiting at most; beyond it new events are dropped (counted).
        timeout_s: connect + read timeout of one POST.
        headers: extra request headers (e.g. ``Authorization``).

    Counters: ``sent`` (2xx answers), ``failed`` (errors, timeouts, non-2xx), ``dropped``
    (queue full, or still queued when :meth:`close` ran out of time).

    Thread-safety: :meth:`submit` and the counters may be used from any thread; ``start``
    and ``close`` belong to the owner.
    """

    def __init__(self, url: str, queue_size: int = 1000, timeout_s: float = 2.0,
                 headers: Mapping[str, str] | None = None) -> None:
        if queue_size < 1:
            raise ConfigError("webhook queue_size must be >= 1")
        if timeout_s <= 0:
            raise ConfigError("webhook timeout_s must be > 0")
        self.url = check_webhook_url(url)
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="streamclf-webhook", daemon=True)
        self.sent = self.failed = self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event (a JSON-able mapping); False if it was dropped (queue full)."""
        body = json.dumps(event, allow_nan=False, default=str).encode("utf-8")
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                log.warning("webhook %s: queue full, dropping events (the endpoint is slower "
                            "than the event rate)", mask_credentials(self.url))
            return False
        return True

    def write(self, event: Event) -> None:
        """The event-sink side (:mod:`streamclf.live.sinks`): queue ``event``'s JSON record;
        never blocks (attach it ``inline``: it has its own bounded queue)."""
        self.submit(jsonable(event.as_dict()))

    def close(self, timeout_s: float = 2.0) -> bool:
        """Send what is queued for up to ``timeout_s``, then stop; the rest is dropped.
        True if the thread ended in time."""
        deadline = time.monotonic() + timeout_s
        while self._thread.is_alive() and not self._queue.empty() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(max(0.05, deadline - time.monotonic()))
        left = self._queue.qsize()
        with self._lock:
            self.dropped += left
        return not self._thread.is_alive()

    def summary(self) -> str:
        return f"{self.sent} sent, {self.failed} failed, {self.dropped} dropped"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                body = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._post(body)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self._headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read(65536)
                ok = 200 <= answer.status < 300
                error = None if ok else f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            ok, error = False, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            ok, error = False, f"{type(exc).__name__}: {reason}"
        with self._lock:
            if ok:
                self.sent += 1
                return
            self.failed += 1
            failed = self.failed
            self.last_error = error
        if failed == 1 or failed % _LOG_EVERY == 0:
            log.warning("webhook %s: POST failed (%s); %d failed so far",
                        mask_credentials(self.url), error, failed)
