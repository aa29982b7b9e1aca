"""Prometheus metrics of a live run, served as ``GET /metrics`` by the web view.

:class:`RunMetrics` holds its own ``CollectorRegistry`` (one per web server, never the
process-wide default one, so two servers in one process never mix their numbers) with:

* from the run's events (it is an event sink: :meth:`RunMetrics.write`):
  ``streamclf_latency_seconds{stream}``, a histogram of each prediction's latency (capture
  of the window's last frame to publication); ``streamclf_alerts_total{stream,label}``,
  alerts started; ``streamclf_alert_active{stream}``, 1 while an alert is under way;
* read at each scrape from the streams' health (:meth:`StreamRunner.health`, through the
  web hub): ``streamclf_input_fps``, ``streamclf_clips_per_second``,
  ``streamclf_inference_fps``, ``streamclf_latency_last_seconds``, ``streamclf_up`` (1 while
  the source delivers), and the counters ``streamclf_frames_total``,
  ``streamclf_windows_total``, ``streamclf_dropped_frames_total``,
  ``streamclf_skipped_windows_total``, ``streamclf_reconnects_total``, each by ``stream``;
* read at each scrape from the event sinks' health (:meth:`LivePipeline.sink_health`, given
  by :meth:`RunMetrics.watch_sinks`): ``streamclf_sink_queue_depth{sink}`` and the counters
  ``streamclf_sink_dropped_events_total``, ``streamclf_sink_delivered_events_total``,
  ``streamclf_sink_errors_total``.

Why prometheus-client: the reference Python client of the Prometheus project; it writes the
text exposition format (and OpenMetrics, when a scraper asks for it) with the escaping and
metric types right, and its metrics are thread-safe. It is imported when a web server is
built, never on ``import streamclf``.

Thread-safety: every method from any thread (events arrive on a sink thread, scrapes on
the web server's worker threads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from streamclf._lazy import require
from streamclf.live.sinks import SinkHealth
from streamclf.types import Event, EventType

__all__ = ["LATENCY_BUCKETS", "RunMetrics"]

#: Latency histogram buckets, seconds: a live label is about one inference old.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

StreamHealthSource = Callable[[], Mapping[str, Any]]
SinkHealthSource = Callable[[], Sequence[SinkHealth]]

#: Stream health fields exposed as gauges / counters: (field, metric, help, scale).
_GAUGES = (("input_fps", "streamclf_input_fps", "frames read per second (recent)", 1.0),
           ("clips_per_s", "streamclf_clips_per_second",
            "windows classified per second (recent)", 1.0),
           ("inference_fps", "streamclf_inference_fps",
            "model calls per second of the shared inference worker", 1.0),
           ("latency_ms", "streamclf_latency_last_seconds",
            "the last prediction's latency", 0.001))
_COUNTERS = (("frames", "streamclf_frames", "frames read"),
             ("windows", "streamclf_windows", "windows classified"),
             ("drops", "streamclf_dropped_frames", "frames dropped by the ring"),
             ("skipped_windows", "streamclf_skipped_windows",
              "due windows skipped for a fresher one"),
             ("reconnects", "streamclf_reconnects", "times the source came back"))


def _as_dict(value: Any) -> Mapping[str, Any]:
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else value  # StreamHealth, or its dict already


class RunMetrics:
    """The metrics of one web server's run (see the module docstring).

    Args:
        streams: ``{stream id: health}`` now (a :class:`~streamclf.types.StreamHealth` or its
            ``as_dict()``), e.g. :meth:`WebHub.health`.

    Raises:
        StreamclfError: prometheus-client is not installed (with the pip command).

    Example::

        metrics = RunMetrics(hub.health)
        pipeline.add_sink(metrics, "metrics", types=RunMetrics.TYPES)
        metrics.watch_sinks(pipeline.sink_health)
        body, content_type = metrics.exposition()
    """

    #: The event types :meth:`write` uses.
    TYPES = frozenset({EventType.PREDICTION, EventType.ALERT})

    def __init__(self, streams: StreamHealthSource) -> None:
        prom = require("prometheus_client")
        self._core = require("prometheus_client.core")
        self._choose_encoder = require("prometheus_client.exposition").choose_encoder
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self._latency = prom.Histogram(
            "streamclf_latency_seconds", "prediction latency: the window's last frame "
            "captured to its prediction published", ["stream"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self._alerts = prom.Counter("streamclf_alerts", "alerts started", ["stream", "label"],
                                    registry=self.registry)
        self._active = prom.Gauge("streamclf_alert_active", "1 while an alert is under way",
                                  ["stream"], registry=self.registry)
        self._streams = streams
        self._sinks: SinkHealthSource | None = None
        self._lock = threading.Lock()
        self.registry.register(_Snapshot(self))

    def watch_sinks(self, sinks: SinkHealthSource | None) -> None:
        """Where the event sinks' health comes from (a run's ``sink_health``); None: none."""
        with self._lock:
            self._sinks = sinks

    def write(self, event: Event) -> None:
        """The event-sink side: latency from ``prediction``, counts from ``alert``."""
        fields = event.fields
        if event.type is EventType.PREDICTION:
            latency = fields.get("latency_ms")
            if isinstance(latency, (int, float)) and latency >= 0:
                self._latency.labels(event.stream).observe(latency / 1000.0)
        elif event.type is EventType.ALERT:
            if fields.get("phase") == "start":
                self._alerts.labels(event.stream, str(fields.get("label"))).inc()
                self._active.labels(event.stream).set(1)
            elif fields.get("phase") == "end":
                self._active.labels(event.stream).set(0)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """``(body, content type)``: the text format, or OpenMetrics when ``accept`` (the
        request's ``Accept`` header) asks for it."""
        encoder, content_type = self._choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _health(self) -> tuple[dict[str, Mapping[str, Any]], Sequence[SinkHealth]]:
        with self._lock:
            sinks = self._sinks
        streams = {sid: _as_dict(h) for sid, h in self._streams().items()}
        return streams, (sinks() if sinks is not None else ())


class _Snapshot:
    """A collector reading stream and sink health when scraped."""

    def __init__(self, owner: RunMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Any]:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        core = self._owner._core
        streams, sinks = self._owner._health()
        for key, name, help_, scale in _GAUGES:
            gauge = core.GaugeMetricFamily(name, help_, labels=["stream"])
            for sid, health in streams.items():
                value = health.get(key)
                if isinstance(value, (int, float)):
                    gauge.add_metric([sid], float(value) * scale)
            yield gauge
        up = core.GaugeMetricFamily("streamclf_up", "1 while the stream's source delivers",
                                    labels=["stream"])
        for sid, health in streams.items():
            up.add_metric([sid], 1.0 if health.get("source_state") == "live" else 0.0)
        yield up
        for key, name, help_ in _COUNTERS:
            counter = core.CounterMetricFamily(name, help_, labels=["stream"])
            for sid, health in streams.items():
                value = health.get(key)
                if isinstance(value, (int, float)):
                    counter.add_metric([sid], float(value))
            yield counter
        depth = core.GaugeMetricFamily("streamclf_sink_queue_depth",
                                       "events waiting for an event sink", labels=["sink"])
        dropped = core.CounterMetricFamily("streamclf_sink_dropped_events",
                                           "events an event sink lost", labels=["sink"])
        delivered = core.CounterMetricFamily("streamclf_sink_delivered_events",
                                             "events given to an event sink", labels=["sink"])
        errors = core.CounterMetricFamily("streamclf_sink_errors",
                                          "calls of an event sink that raised", labels=["sink"])
        for sink in sinks:
            depth.add_metric([sink.name], float(sink.queued))
            dropped.add_metric([sink.name], float(sink.drops))
            delivered.add_metric([sink.name], float(sink.delivered))
            errors.add_metric([sink.name], float(sink.errors))
        yield from (depth, dropped, delivered, errors)
