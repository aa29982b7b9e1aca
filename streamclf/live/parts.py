"""What a stream needs opened before it starts: its source (opened once, to fail fast and
learn its size and fps) and its overlay sinks, plus the renderer that reports their
failures as events. Used by the single- and multi-stream pipelines' builders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streamclf.config import RunConfig
from streamclf.errors import SourceError
from streamclf.live.events import EventLog, make_event
from streamclf.live.overlay import OverlayRenderer
from streamclf.media.sources import FrameSource, mask_credentials

__all__ = ["StreamParts", "make_renderer", "open_stream_parts"]

log = logging.getLogger(__name__)


def _report_output_error(events: EventLog, stream: str, message: str) -> None:
    """An overlay output failed (e.g. the video file hit a full disk): log it and put an
    ``error`` event (``source: "output"``) in the event log; the stream goes on."""
    log.error("overlay: %s", message)
    events.write(make_event("error", stream, source="output", message=mask_credentials(message)))


StreamParts = tuple[Callable[[], FrameSource], list[Any], float, Callable[[], None]]


def make_renderer(sinks: list[Any], events: EventLog, stream: str) -> OverlayRenderer | None:
    """An overlay renderer for ``sinks`` (None without sinks) whose output failures become
    ``error`` events in ``events``."""
    if not sinks:
        return None
    return OverlayRenderer(sinks, on_error=lambda m: _report_output_error(events, stream, m))


def open_stream_parts(config: RunConfig) -> StreamParts:
    """Open a stream's source (once, to fail fast and learn its size and fps) and its sinks.

    Returns:
        ``(source_factory, sinks, fps_hint, close)``: the factory's first call returns the
        source opened here; ``close()`` closes what was opened, for a stream that is never
        started (see :func:`make_renderer` for the sinks).

    Raises:
        SourceError: the source cannot be opened, or ``output`` needs a frame size it
            does not declare. DataError: the output video cannot be created.
    """
    from streamclf.live.overlay import VideoFileSink, WindowSink
    from streamclf.media.sources import open_source, parse_spec

    kind, _ = parse_spec(config.source)
    options: dict[str, Any] = (
        {"live": config.pace == "realtime"} if kind == "synthetic" else {
            "transport": config.transport,
            "open_timeout_ms": config.open_timeout_ms,
            "read_timeout_ms": config.read_timeout_ms,
        }
    )
    first = [open_source(config.source, **options)]
    info = first[0].info
    opened: list[Any] = list(first)

    def factory() -> FrameSource:
        return first.pop() if first else open_source(config.source, **options)

    def close() -> None:
        for item in opened:
            item.close()

    try:
        sinks: list[Any] = []
        if config.output:
            if info.width <= 0 or info.height <= 0:
                raise SourceError(f"{mask_credentials(str(config.source))}: the source "
                                  "does not declare its frame size, needed for --output")
            sinks.append(VideoFileSink(config.output, info.fps or 30.0,
                                       (info.width, info.height)))
        opened.extend(sinks)
        if config.display:
            sinks.append(WindowSink(f"streamclf: {mask_credentials(str(config.source))}"))
    except BaseException:
        close()
        raise
    return factory, sinks, info.fps, close
