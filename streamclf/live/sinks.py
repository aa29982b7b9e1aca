"""Event sinks: where a live run's events go, and the bus that numbers and fans them out.

A **sink** is any callable ``sink(event)``, or an object with ``write(event)`` and
optionally ``close()`` (an :class:`~streamclf.live.events.EventLog` is one). Each
:class:`~streamclf.types.Event` published on an :class:`EventBus` gets the run's next
``seq`` and goes to every sink:

* ``inline=True`` sinks are called on the publishing thread, in ``seq`` order, under the
  bus lock. Use it for the JSON Lines log only: it is fast, flushed per line, never raises
  and must never drop an event.
* every other sink gets its own bounded queue and thread, so a slow or stuck consumer (a
  webhook, a browser, a terminal) never slows capture or inference. When its queue is full
  the event is dropped *for that sink* and counted (:meth:`EventBus.sink_health`).

A sink with a queue of its own (attached ``inline``: the webhook, MQTT) may have
``queue_health() -> (waiting, dropped)``; its numbers are added to its :class:`SinkHealth`.

A sink that raises gets one ``error`` event naming it (``where: "sink"``, ``sink: NAME``,
published to the others); its later failures are counted, not reported again.

Example::

    bus = EventBus()
    bus.add_sink(EventLog("events.jsonl"), name="log", inline=True)
    bus.add_sink(lambda ev: print(ev.type, ev.stream), name="print")
    bus.publish(make_event(EventType.SOURCE_OPENED, "cam0"))
    bus.close()  # drains each queue (bounded wait), then closes the sinks
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from streamclf.errors import ConfigError
from streamclf.types import Event, EventType

__all__ = ["DEFAULT_QUEUE", "EventBus", "Sink", "SinkHealth"]

log = logging.getLogger(__name__)

#: Events a queued sink may hold before new ones are dropped for it.
DEFAULT_QUEUE = 10_000


class _Writer(Protocol):
    def write(self, event: Event) -> Any: ...


Sink = Callable[[Event], Any] | _Writer


@dataclass(frozen=True)
class SinkHealth:
    """One sink's counters: events waiting, delivered, dropped (queue full or closed), and
    calls that raised."""

    name: str
    queued: int
    delivered: int
    drops: int
    errors: int


class _SinkSlot:
    """One sink with its filter, counters and (unless inline) its queue and thread."""

    _END = object()

    def __init__(self, sink: Sink, name: str, inline: bool, maxsize: int,
                 types: frozenset[EventType] | None,
                 on_error: Callable[[str, Exception], None]) -> None:
        write = getattr(sink, "write", None)
        self._call: Callable[[Event], Any] = write if callable(write) else sink  # type: ignore[assignment]
        self.sink, self.name, self.inline, self.types = sink, name, inline, types
        self.delivered = self.drops = self.errors = 0
        self._on_error = on_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._run, name=f"streamclf-sink-{name}",
                                            daemon=True)
            self._thread.start()

    def offer(self, event: Event) -> None:
        """Deliver now (inline) or queue; never blocks, never raises."""
        if self.types is not None and event.type not in self.types:
            return
        if self.inline:
            self._deliver(event)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.drops += 1

    def _deliver(self, event: Event) -> None:
        try:
            self._call(event)
            self.delivered += 1
        except Exception as exc:  # a broken sink must not stop the run or the other sinks
            self.errors += 1
            if self.errors == 1:
                self._on_error(self.name, exc)
            else:
                log.debug("sink %s failed again: %s", self.name, exc)

    def _run(self) -> None:
        while True:
            item = self._queue.get()  # close() always puts _END, so this returns
            if item is self._END:
                return
            self._deliver(item)

    def close(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then close the sink."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(self._END, timeout=0.05)
                    break
                except queue.Full:
                    if time.monotonic() >= deadline:
                        break
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # stuck in the sink: what is left is lost
                self.drops += self._queue.qsize()
                log.warning("sink %s did not finish in time; %d events dropped", self.name,
                            self._queue.qsize())
        close = getattr(self.sink, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                log.error("sink %s: close failed: %s", self.name, exc)

    def health(self) -> SinkHealth:
        queued, drops = self._queue.qsize(), self.drops
        own = getattr(self.sink, "queue_health", None)
        if callable(own):  # a sink with a queue of its own (webhook, MQTT) counts there too
            more_queued, more_drops = own()
            queued, drops = queued + more_queued, drops + more_drops
        return SinkHealth(self.name, queued, self.delivered, drops, self.errors)


class EventBus:
    """Numbers events (``seq`` from 0) and hands each one to every sink.

    Thread-safety: every method may be called from any thread. ``publish`` is cheap for
    queued sinks (a non-blocking put) and holds one lock while the inline sinks run, so
    ``seq`` order is the order inline sinks see.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._slots: list[_SinkSlot] = []
        self._seq = 0
        self._closed = False

    @property
    def seq(self) -> int:
        """The ``seq`` the next event gets (= events published so far)."""
        return self._seq

    def add_sink(self, sink: Sink, name: str | None = None, *, inline: bool = False,
                 maxsize: int = DEFAULT_QUEUE,
                 types: Iterable[EventType | str] | None = None) -> None:
        """Add a sink; it gets every event published from now on.

        Args:
            sink: ``sink(event)`` or an object with ``write(event)`` (and ``close()``).
            name: shown in health and in the ``error`` event if it fails (default: its
                class name).
            inline: call it on the publishing thread (see the module docstring).
            maxsize: its queue's length (queued sinks), >= 1.
            types: only these event types (default: all).

        Raises:
            ConfigError: ``maxsize`` < 1, a name already used, or the bus is closed.
        """
        if maxsize < 1:
            raise ConfigError(f"sink queue size must be >= 1, got {maxsize}")
        label = name or type(sink).__name__
        wanted = None if types is None else frozenset(EventType(t) for t in types)
        with self._lock:
            if self._closed:
                raise ConfigError(f"sink {label!r}: the run has ended")
            if any(s.name == label for s in self._slots):
                raise ConfigError(f"a sink named {label!r} is already attached")
            self._slots.append(_SinkSlot(sink, label, inline, maxsize, wanted,
                                         self._sink_failed))

    def remove_sink(self, name: str, timeout_s: float = 1.0) -> bool:
        """Detach (and close) the sink called ``name``; False if there is none."""
        with self._lock:
            slot = next((s for s in self._slots if s.name == name), None)
            if slot is None:
                return False
            self._slots.remove(slot)
        slot.close(time.monotonic() + timeout_s)
        return True

    def publish(self, event: Event) -> Event:
        """Give ``event`` the next ``seq`` and hand it to every sink; returns it numbered.
        After :meth:`close` events are numbered but go nowhere."""
        with self._lock:
            numbered = dataclasses.replace(event, seq=self._seq)
            self._seq += 1
            for slot in self._slots:
                slot.offer(numbered)
        return numbered

    def sink_health(self) -> list[SinkHealth]:
        with self._lock:
            return [s.health() for s in self._slots]

    def close(self, timeout_s: float = 2.0) -> None:
        """Let each queued sink finish what it holds (all within ``timeout_s``), then close
        every sink. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slots, self._slots = self._slots, []
        deadline = time.monotonic() + timeout_s
        for slot in sorted(slots, key=lambda s: s.inline):  # the log closes last
            with contextlib.suppress(Exception):
                slot.close(deadline)

    def _sink_failed(self, name: str, exc: Exception) -> None:
        log.error("sink %s failed: %s: %s", name, type(exc).__name__, exc)
        from streamclf.live.events import make_event

        self.publish(make_event(EventType.ERROR, "", where="sink", sink=name,
                                message=f"{type(exc).__name__}: {exc}"))
