"""Connect a :class:`~streamclf.live.runner.StreamPipeline` to a :class:`WebHub`.

:func:`attach_pipeline` (call before ``pipeline.start()``) adds three taps and changes
nothing else about the run:

* the event log is wrapped so every record written also goes to the hub (``/events``);
* an :class:`~streamclf.web.mjpeg_sink.MjpegSink` joins the overlay renderer's sinks
  (a renderer is created if the run had none), feeding ``/stream.mjpg``;
* the stream's health (``pipeline.health()`` plus the source state, derived from the
  capture events) backs ``/api/status``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamclf.live.events import make_event
from streamclf.types import Event
from streamclf.web.hub import WebHub
from streamclf.web.mjpeg_sink import MjpegSink

if TYPE_CHECKING:
    from streamclf.live.events import EventLog
    from streamclf.live.runner import StreamPipeline

__all__ = ["EventTap", "attach_pipeline"]

log = logging.getLogger(__name__)
_SOURCE_STATE = {"source_opened": "live", "source_restored": "live", "source_lost": "lost",
                 "reconnect_failed": "reconnecting", "stopped": "stopped"}


class EventTap:
    """An event log that also publishes each written record to a hub.

    Behaves as the wrapped :class:`~streamclf.live.events.EventLog` (other attributes are
    passed through). Thread-safe as the log is; the hub publish is thread-safe too.
    """

    def __init__(self, inner: EventLog, hub: WebHub) -> None:
        self._inner = inner
        self._hub = hub
        self.source_state = "opening"

    def write(self, event: Event) -> dict[str, Any]:
        record = self._inner.write(event)
        self.source_state = _SOURCE_STATE.get(event.type, self.source_state)
        self._hub.publish_event(record)
        return record

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def attach_pipeline(hub: WebHub, pipeline: StreamPipeline, max_fps: float = 15.0) -> None:
    """Show ``pipeline`` in the web view. Call before ``pipeline.start()``."""
    from streamclf.live.overlay import OverlayRenderer

    tap = EventTap(pipeline.events, hub)
    pipeline.events = tap  # type: ignore[assignment]
    sink = MjpegSink(hub, pipeline.stream, max_fps=max_fps)
    if pipeline.renderer is None:
        def on_error(message: str) -> None:
            log.error("overlay: %s", message)
            tap.write(make_event("error", pipeline.stream, where="overlay", message=message))

        pipeline.renderer = OverlayRenderer([sink], on_error=on_error)
    else:
        pipeline.renderer.add_sink(sink)

    def health() -> dict[str, Any]:
        state = tap.source_state
        if state == "live" and pipeline.capture.finished.is_set():
            state = "ended"
        return {"source_state": state, **pipeline.health()}

    hub.add_stream(pipeline.stream, health)
