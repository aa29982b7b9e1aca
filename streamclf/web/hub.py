"""``WebHub``: what running streams publish and the web view reads.

Producers (a pipeline's renderer and event log, on their own threads) publish; HTTP
handler threads read. Every method is thread-safe, and every wait has a timeout so a
handler notices :meth:`WebHub.close` (server shutdown) within one wait.

* Frames: the newest overlay JPEG per stream, with a sequence number; readers block in
  :meth:`WebHub.next_frame` until a newer one arrives. Producers ask
  :meth:`WebHub.has_viewers` first, so no JPEG is encoded while nobody watches.
* Events: each subscriber (one per ``/events`` connection) gets a bounded queue; a reader
  too slow to keep up loses its oldest events, never blocks the producer. The last
  :data:`BACKLOG` events are replayed to a new subscriber so the page starts filled.
* Health: each stream registers a callable returning a JSON-able dict (fps, latency,
  drops, source state, current top-k), called when ``/api/status`` is requested.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BACKLOG", "EventSubscription", "WebHub"]

#: Events replayed to a new ``/events`` subscriber.
BACKLOG = 50
_QUEUE_MAX = 500


@dataclass
class _StreamState:
    health: Callable[[], dict[str, Any]]
    owner: object = None
    jpeg: bytes | None = None
    frame_seq: int = 0
    viewers: int = 0


@dataclass
class EventSubscription:
    """One reader's queue of event dicts (see :meth:`WebHub.subscribe`)."""

    stream: str | None
    _hub: WebHub
    _queue: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_QUEUE_MAX))

    def get(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout_s`` or once the hub is closed."""
        with self._hub._cond:
            if not self._queue and not self._hub.closed:
                self._hub._cond.wait(timeout_s)
            return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        with self._hub._cond:
            if self in self._hub._subscribers:
                self._hub._subscribers.remove(self)


class WebHub:
    """Shared state between streams and the web server (thread-safe)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._streams: dict[str, _StreamState] = {}
        self._subscribers: list[EventSubscription] = []
        self._backlog: deque[dict[str, Any]] = deque(maxlen=BACKLOG)
        self.closed = False

    # -- producers ---------------------------------------------------------------------
    def add_stream(self, stream: str, health: Callable[[], dict[str, Any]],
                   owner: object = None) -> None:
        """Register ``stream`` with its health callable (called on an HTTP thread);
        ``owner`` is what may later remove this registration (see :meth:`remove_stream`)."""
        with self._cond:
            self._streams[stream] = _StreamState(health, owner)

    def remove_stream(self, stream: str, owner: object = None) -> None:
        """Forget ``stream`` (its viewers' waits return None). With ``owner``, only if the
        registration is still that owner's: a stream that ended by itself leaves the page,
        but a newer stream that took its id meanwhile stays."""
        with self._cond:
            state = self._streams.get(stream)
            if state is None or (owner is not None and state.owner is not owner):
                return
            del self._streams[stream]
            self._cond.notify_all()

    def has_viewers(self, stream: str) -> bool:
        with self._cond:
            state = self._streams.get(stream)
            return state is not None and state.viewers > 0

    def publish_frame(self, stream: str, jpeg: bytes) -> None:
        """Make ``jpeg`` (one encoded overlay frame) the stream's newest frame."""
        with self._cond:
            state = self._streams.get(stream)
            if state is None:
                return
            state.jpeg = jpeg
            state.frame_seq += 1
            self._cond.notify_all()

    def publish_event(self, event: dict[str, Any]) -> None:
        """Queue one event-log record (``type``, ``stream``, ``ts``, ``seq``, fields)."""
        with self._cond:
            self._backlog.append(event)
            for sub in self._subscribers:
                if sub.stream is None or sub.stream == event.get("stream"):
                    sub._queue.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting reader; later waits return at once."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # -- readers -----------------------------------------------------------------------
    @property
    def streams(self) -> list[str]:
        with self._cond:
            return list(self._streams)

    def resolve(self, stream: str | None) -> str | None:
        """``stream`` if registered; with None, the first registered stream (or None)."""
        with self._cond:
            if stream is None:
                return next(iter(self._streams), None)
            return stream if stream in self._streams else None

    def health(self) -> dict[str, dict[str, Any]]:
        """``{stream: health dict}`` for every registered stream."""
        with self._cond:
            providers = {name: s.health for name, s in self._streams.items()}
        return {name: fn() for name, fn in providers.items()}

    def watch(self, stream: str, delta: int) -> None:
        """Count a viewer of ``stream``'s frames in (+1) or out (-1)."""
        with self._cond:
            state = self._streams.get(stream)
            if state is not None:
                state.viewers = max(0, state.viewers + delta)

    def next_frame(self, stream: str, after: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The stream's newest JPEG if its sequence number is above ``after``, waiting up to
        ``timeout_s`` for one; None on timeout, unknown stream or a closed hub."""
        with self._cond:
            end = None
            while not self.closed:
                state = self._streams.get(stream)
                if state is None:
                    return None
                if state.jpeg is not None and state.frame_seq > after:
                    return state.frame_seq, state.jpeg
                now = time.monotonic()
                end = now + timeout_s if end is None else end
                if now >= end:
                    return None
                self._cond.wait(end - now)
            return None

    def subscribe(self, stream: str | None = None) -> EventSubscription:
        """A new event queue (``stream`` None: every stream), pre-filled with the backlog."""
        with self._cond:
            sub = EventSubscription(stream, self)
            sub._queue.extend(e for e in self._backlog
                              if stream is None or e.get("stream") == stream)
            self._subscribers.append(sub)
            return sub
