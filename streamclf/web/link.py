"""Show a :class:`~streamclf.live.pipeline.LivePipeline` in a :class:`WebHub`, through the
pipeline's own extension points (nothing of the pipeline is replaced):

* :class:`HubSink`, an event sink: every event of every stream reaches ``/events``;
* :func:`mjpeg_frame_sinks`, the pipeline's ``frame_sinks``: each new stream registers in
  the hub with its health (``/api/status``) and gets an
  :class:`~streamclf.web.mjpeg_sink.MjpegSink` among its overlay outputs
  (``/stream.mjpg``); the stream leaves the hub when that sink closes (the stream ended,
  by itself or removed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streamclf.live.events import jsonable
from streamclf.types import Event, StreamHealth
from streamclf.web.hub import WebHub
from streamclf.web.mjpeg_sink import MjpegSink

if TYPE_CHECKING:
    from streamclf.live.overlay import FrameSink
    from streamclf.live.pipeline import FrameSinks

__all__ = ["HubSink", "mjpeg_frame_sinks"]


class HubSink:
    """Event sink: publishes each event's JSON record to the hub (thread-safe)."""

    def __init__(self, hub: WebHub) -> None:
        self.hub = hub

    def write(self, event: Event) -> None:
        self.hub.publish_event(jsonable(event.as_dict()))


def mjpeg_frame_sinks(hub: WebHub, max_fps: float = 15.0) -> FrameSinks:
    """A ``frame_sinks`` factory for :class:`LivePipeline`: registers each stream in the hub
    (health from the runner) and returns its MJPEG sink (JPEGs encoded only while someone
    watches, at most ``max_fps``)."""

    def make(stream: str, health: Callable[[], StreamHealth]) -> Sequence[FrameSink]:
        sink = MjpegSink(hub, stream, max_fps=max_fps)
        hub.add_stream(stream, lambda: health().as_dict(), owner=sink)  # until sink.close()
        return [sink]

    return make
