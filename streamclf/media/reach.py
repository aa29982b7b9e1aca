"""Is a lost camera back? A cheap TCP probe that cuts the reconnect back-off short.

Reconnect attempts back off (1 s doubling to a cap), so that a dead camera is not hammered
with full RTSP/HTTP opens. Without more, a camera that returns during a long wait is noticed
only at the next attempt: an 8 s outage once cost 7.5 s after the camera was back. So while
waiting, :func:`backoff_wait` tries a TCP connect to the camera's host and port every half
second (a SYN and a close: no RTSP session, no decoder); once it succeeds, the next open
happens at once.

Why half a second, not one: after the camera returns, predictions need the probe's wait, an
open (~0.3 s over RTSP) and one model window of fresh frames (1.6 s for x3d_xs). With a 1 s
probe the worst case is ~2.9 s, too close to the 3 s goal on a busy machine; measured with
0.5 s (tests/test_recovery.py, 8 s and 60 s outages against the real RTSP server): ~2.5 s.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["PROBE_INTERVAL_S", "backoff_wait", "tcp_probe"]

#: Seconds between two reachability probes while backing off.
PROBE_INTERVAL_S = 0.5
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

Probe = Callable[[], bool]


def tcp_probe(url: str, timeout_s: float = 0.5) -> Probe | None:
    """A probe for ``url``'s host and port (``True`` when a TCP connect succeeds within
    ``timeout_s``), or None for what has no network address (files, webcams, synthetic).
    Thread-safe; each call opens and closes one socket."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not host or scheme not in _DEFAULT_PORTS:
        return None
    address = (host, port or _DEFAULT_PORTS[scheme])

    def probe() -> bool:
        try:
            with socket.create_connection(address, timeout=timeout_s):
                return True
        except OSError:
            return False

    return probe


def backoff_wait(stop: threading.Event, seconds: float, probe: Probe | None,
                 interval_s: float = PROBE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait ``seconds``, or less: until ``probe()`` first succeeds (tried every
    ``interval_s``), or ``stop`` is set. Returns True when ``stop`` was set."""
    deadline = clock() + seconds
    while True:
        left = deadline - clock()
        if left <= 0:
            return stop.is_set()
        if stop.wait(min(left, interval_s) if probe is not None else left):
            return True
        if probe is not None and clock() < deadline and probe():
            return stop.is_set()
