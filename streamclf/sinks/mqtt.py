"""Alerts and labels to an MQTT broker (``mqtt:`` of a run, ``--mqtt URL``), for home
automation (Home Assistant, Node-RED, openHAB) and anything else that speaks MQTT.

Topics, under the prefix (default ``streamclf``):

* ``PREFIX/STREAM/alert``: every ``alert`` event (start and end), its event-log JSON object,
  QoS 1 (delivered at least once).
* ``PREFIX/STREAM/label``: the stream's stable label as plain text, ``none`` when there is
  none; retained (a subscriber that comes later gets the current one), QoS 1. Set from
  ``label_start``/``label_end``; ``none`` when a stream opens, so no stale label of an
  earlier run stays behind.
* ``PREFIX/available``: ``online`` once connected, retained; ``offline`` is the connection's
  last will (the broker publishes it when this process dies or loses its connection
  uncleanly) and is published on a clean :meth:`MqttSink.close`.

:class:`MqttSink` is an event sink: :meth:`MqttSink.write` never blocks (attach it
``inline``: it has its own bounded queue and thread). Its thread owns the MQTT client: it
connects (``mqtt://`` plain, ``mqtts://`` TLS with the system's CA certificates, user and
password from the URL), reconnects after a loss with a back-off (``backoff_initial_s``
doubling up to ``backoff_max_s``, times a random factor in 1 +- 0.2), and publishes.
While it is disconnected, alerts wait in a queue of ``queue`` messages: when it is full the
oldest is dropped and counted (:meth:`MqttSink.health`, and the run's sink health through
:meth:`MqttSink.queue_health`); labels are state, not a queue: only each stream's latest is
kept, and sent again after every reconnect. Messages handed to the client and not yet
acknowledged are resent by it after a reconnect (QoS 1), at most ``inflight`` at a time.

The broker's password never appears in logs, errors or ``repr`` (only ``user:***@``).

Why paho-mqtt: the Eclipse reference client for Python, maintained, pure Python, with QoS
1/2, retained messages, last will, TLS and MQTT 3.1.1/5; the protocol is not ours to write.
It is imported when a sink is built, never on ``import streamclf``. We drive its network
loop from our own thread (``loop(timeout)``), not ``loop_start()``, so that every blocking
call has a timeout and stopping is bounded.

Thread-safety: :meth:`write`, :meth:`health`, :meth:`queue_health` from any thread;
:meth:`start` and :meth:`close` from the owner. The paho client is used by the sink's
thread only.

Example::

    sink = MqttSink(MqttConfig(url="mqtt://user:pass@127.0.0.1:1883")).start()
    bus.add_sink(sink, "mqtt", inline=True, types=MqttSink.TYPES)  # LivePipeline does it
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from streamclf._lazy import require
from streamclf.errors import ConfigError
from streamclf.live.events import jsonable
from streamclf.masking import mask_credentials
from streamclf.sections import MqttConfig
from streamclf.types import Event, EventType

__all__ = ["MqttHealth", "MqttSink"]

log = logging.getLogger(__name__)

_LOOP_S = 0.05  # one network-loop wait: also how soon a new alert is picked up


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its TLS handshake fails: paho leaves such a socket open (a file
    descriptor per failed attempt until garbage collection)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


@dataclass(frozen=True)
class MqttHealth:
    """A snapshot of an :class:`MqttSink`: the broker (masked), whether it is connected,
    messages waiting (queued + unacknowledged), acknowledged (``sent``), ``dropped``,
    successful connections so far and the last connection error (masked)."""

    broker: str
    connected: bool
    queued: int
    sent: int
    dropped: int
    connects: int
    last_error: str | None


class MqttSink:
    """Publishes alerts, labels and availability to an MQTT broker (see the module).

    Args:
        config: broker URL, topic prefix and queue bound.
        client_id: the MQTT client id (default ``streamclf-PID-RANDOM``).
        keepalive_s: the MQTT keep-alive; the broker sends the will after 1.5 x this
            without traffic.
        connect_timeout_s: the longest a TCP (and TLS) connect may take.
        backoff_initial_s, backoff_max_s: waits between reconnect attempts.
        inflight: messages handed to the client and not yet acknowledged, at most.

    Raises:
        ConfigError: ``config`` is not an :class:`MqttConfig`, or a bad limit.
        StreamclfError: paho-mqtt is not installed (with the pip command).
    """

    #: The event types this sink uses (attach it with ``types=MqttSink.TYPES``).
    TYPES = frozenset({EventType.ALERT, EventType.LABEL_START, EventType.LABEL_END,
                       EventType.SOURCE_OPENED})

    def __init__(self, config: MqttConfig, *, client_id: str | None = None,
                 keepalive_s: int = 30, connect_timeout_s: float = 3.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 inflight: int = 20) -> None:
        if not isinstance(config, MqttConfig):
            raise ConfigError(f"MqttSink needs an MqttConfig, got {type(config).__name__}")
        if not 0 < backoff_initial_s <= backoff_max_s or connect_timeout_s <= 0 \
                or keepalive_s < 1 or inflight < 1:
            raise ConfigError("mqtt: need 0 < backoff_initial_s <= backoff_max_s, "
                              "connect_timeout_s > 0, keepalive_s >= 1 and inflight >= 1")
        mqtt = require("paho.mqtt.client")
        parts = urlsplit(config.url)
        self.config, self.prefix = config, config.prefix
        self.broker = mask_credentials(config.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._keepalive, self._inflight = int(keepalive_s), int(inflight)
        self._backoff = (float(backoff_initial_s), float(backoff_max_s))
        self._client: Any = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"streamclf-{os.getpid()}-{random.getrandbits(24):06x}",
            protocol=mqtt.MQTTv311, clean_session=True)
        self._client.connect_timeout = float(connect_timeout_s)
        if parts.username is not None:
            self._client.username_pw_set(unquote(parts.username),
                                         None if parts.password is None
                                         else unquote(parts.password))
        if parts.scheme == "mqtts":  # the system's CA certificates, host name checked
            context = ssl.create_default_context()
            context.sslsocket_class = _ClosingSSLSocket
            self._client.tls_set_context(context)
        self._client.will_set(self._topic("available"), "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._ok = mqtt.MQTT_ERR_SUCCESS
        self._lock = threading.Lock()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._labels: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._unacked: set[int] = set()
        self._generation = self._announced = 0  # connections made / announced (online)
        self._stop = threading.Event()
        self._closing: float | None = None  # the close deadline (monotonic), once closing
        self._thread = threading.Thread(target=self._run, name="streamclf-mqtt", daemon=True)
        self.sent = self.dropped = 0
        self.last_error: str | None = None
        self._warned = False
        self._up = False  # logged in (a refused login is not a lost connection)

    def __repr__(self) -> str:
        return f"MqttSink({self.broker!r}, prefix={self.prefix!r})"

    def _topic(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # -- any thread --------------------------------------------------------------------
    def start(self) -> MqttSink:
        """Start connecting (in the background: a broker that is down is retried)."""
        if self._thread.ident is None and self._closing is None:  # once, before close
            self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def write(self, event: Event) -> None:
        """Take one event (never blocks): alerts are queued, label changes kept as state;
        other types are ignored."""
        kind = EventType(event.type)
        with self._lock:
            if kind is EventType.ALERT:
                payload = json.dumps(jsonable(event.as_dict()), allow_nan=False)
                if len(self._outbox) >= self.config.queue:
                    self._outbox.popleft()
                    self.dropped += 1
                    if self.dropped == 1:
                        log.warning("mqtt %s: queue full (%d), dropping the oldest alerts",
                                    self.broker, self.config.queue)
                self._outbox.append((self._topic(event.stream, "alert"),
                                     payload.encode("utf-8")))
            elif kind is EventType.LABEL_START:
                self._set_label(event.stream, str(event.fields.get("label", "none")))
            elif kind is EventType.LABEL_END or (kind is EventType.SOURCE_OPENED
                                                 and event.stream not in self._labels):
                self._set_label(event.stream, "none")

    def _set_label(self, stream: str, label: str) -> None:  # with the lock held
        if stream and self._labels.get(stream) != label:
            self._labels[stream] = label
            self._dirty.add(stream)

    def queue_health(self) -> tuple[int, int]:
        """``(messages waiting, messages dropped)`` for the run's sink health."""
        with self._lock:
            return len(self._outbox) + len(self._unacked), self.dropped

    def health(self) -> MqttHealth:
        with self._lock:
            queued = len(self._outbox) + len(self._unacked)
            return MqttHealth(self.broker, self.connected, queued, self.sent, self.dropped,
                              self._generation, self.last_error)

    def close(self, timeout_s: float = 1.0) -> bool:
        """Send what is queued (while connected, within ``timeout_s``), publish ``offline``,
        disconnect cleanly and stop the thread; what is left is dropped (counted). True if
        the thread ended in time. Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if self._closing is None:
                self._closing = deadline
        if self._thread.is_alive():
            self._thread.join(max(0.1, deadline - time.monotonic() + 0.5))
        self._stop.set()
        with self._lock:
            self.dropped += len(self._outbox)
            self._outbox.clear()
        return not self._thread.is_alive()

    # -- the sink's thread -------------------------------------------------------------
    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            if self._client.socket() is None:
                if self._closing is not None:
                    return  # not connected: nothing more can be sent
                try:
                    self._client.connect(self._host, self._port, keepalive=self._keepalive)
                except (OSError, ValueError) as exc:  # refused, unreachable, TLS, DNS
                    self._failed(f"cannot connect: {type(exc).__name__}: {exc}")
                    if self._wait(delay):
                        return
                    delay = min(delay * 2, self._backoff[1])
                    continue
            rc = self._client.loop(timeout=_LOOP_S)
            if rc != self._ok or self._client.socket() is None:  # lost, or refused at login
                if self._closing is not None or self._wait(delay):
                    return
                delay = min(delay * 2, self._backoff[1])
                continue
            if self._client.is_connected():
                delay = self._backoff[0]
                self._pump()
                if self._closing is not None and self._close_step():
                    return

    def _wait(self, delay: float) -> bool:
        """Back off (cut short by close); True when the sink is stopping."""
        end = time.monotonic() + delay * random.uniform(0.8, 1.2)
        while time.monotonic() < end:
            if self._stop.wait(min(0.05, end - time.monotonic())) or self._closing is not None:
                return True
        return False

    def _failed(self, message: str) -> None:
        message = mask_credentials(message)
        self.last_error = message
        # One warning per outage; the retries of the same outage are debug lines.
        (log.debug if self._warned else log.warning)("mqtt %s: %s (retrying)", self.broker,
                                                     message)
        self._warned = True

    def _publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            self._unacked.add(info.mid)

    def _pump(self) -> None:
        """Announce a new connection, send changed labels, then queued alerts."""
        if self._announced != self._generation:
            self._announced = self._generation
            self._publish(self._topic("available"), "online", retain=True)
            with self._lock:
                self._dirty = set(self._labels)
        with self._lock:
            labels = {s: self._labels[s] for s in self._dirty}
            self._dirty.clear()
        for stream, label in labels.items():
            self._publish(self._topic(stream, "label"), label, retain=True)
        while True:
            with self._lock:
                if not self._outbox or len(self._unacked) >= self._inflight:
                    return
                topic, payload = self._outbox.popleft()
            self._publish(topic, payload)

    def _close_step(self) -> bool:
        """While closing: once everything is acknowledged (or time is up), publish
        ``offline``, wait for its acknowledgement, disconnect. True when done."""
        deadline = self._closing if self._closing is not None else time.monotonic()
        with self._lock:
            busy = bool(self._outbox or self._unacked)
        if busy and time.monotonic() < deadline:
            return False
        info = self._client.publish(self._topic("available"), "offline", qos=1, retain=True)
        end = max(deadline, time.monotonic() + 0.2)  # offline gets a moment of its own
        while not info.is_published() and time.monotonic() < end \
                and self._client.loop(timeout=_LOOP_S) == self._ok:
            pass
        self._client.disconnect()
        self._client.loop(timeout=_LOOP_S)  # sends DISCONNECT: the broker drops the will
        return True

    # -- paho callbacks (on the sink's thread, inside loop()) ----------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._failed(f"the broker refused the connection: {reason}")
            return
        with self._lock:
            self._generation += 1
        self._up = True
        if self._warned:
            log.info("mqtt %s: connected again", self.broker)
        self._warned = False

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self._up and self._closing is None:
            self._failed(f"connection lost ({reason})")
        self._up = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self.sent += 1
