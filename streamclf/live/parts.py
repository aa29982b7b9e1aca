"""What a stream needs opened before it starts: its source (opened once, to fail fast and
learn its size and fps) and its overlay sinks, plus the renderer that reports their
failures as events. Used by :class:`~streamclf.live.pipeline.LivePipeline`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streamclf.config import StreamConfig
from streamclf.errors import SourceError
from streamclf.masking import mask_credentials
from streamclf.media.sources import FrameSource

__all__ = ["LIVE_KINDS", "OpenStream", "StreamParts", "open_stream_parts", "source_options"]

#: Source kinds that are cameras: reconnected when lost, and when down at start.
LIVE_KINDS = frozenset({"rtsp", "http", "webcam"})

log = logging.getLogger(__name__)


#: ``(source_factory, frame sinks, fps hint, close)``: see :func:`open_stream_parts`.
StreamParts = tuple[Callable[[], FrameSource], list[Any], float, Callable[[], None]]
#: How a pipeline opens a stream: :func:`open_stream_parts`, or a test's own.
OpenStream = Callable[[StreamConfig], StreamParts]


def source_options(config: StreamConfig) -> dict[str, Any]:
    """The keyword options :func:`~streamclf.media.sources.open_source` gets for a stream."""
    from streamclf.media.sources import parse_spec

    if parse_spec(config.source)[0] == "synthetic":
        return {"live": config.pace == "realtime"}
    return {"transport": config.transport, "decoder": config.decoder,
            "threads": config.decode_threads, "open_timeout_ms": config.open_timeout_ms,
            "read_timeout_ms": config.read_timeout_ms}


def open_stream_parts(config: StreamConfig) -> StreamParts:
    """Open a stream's source (once, to fail fast and learn its size and fps) and its sinks.

    Returns:
        ``(source_factory, sinks, fps_hint, close)``: the factory's first call returns the
        source opened here; ``close()`` closes what was opened, for a stream that is never
        started.

    Raises:
        SourceError: the source cannot be opened (a live camera without ``output`` is left
            to reconnect instead), or ``output`` needs a frame size it does not declare.
        DataError: the output video cannot be created.
    """
    from streamclf.live.overlay import VideoFileSink, WindowSink
    from streamclf.media.sources import open_source, parse_spec

    kind, _ = parse_spec(config.source)
    options = source_options(config)
    first: list[FrameSource] = []
    try:
        first.append(open_source(config.source, **options))
    except SourceError as exc:
        # A live camera that is down at start is reconnected like a lost one (the capture
        # thread retries; the other streams go on). A file or a bad spec fails now.
        if kind not in LIVE_KINDS or config.output:
            raise
        if config.max_reconnects != 0:
            log.warning("stream %s: %s; reconnecting", config.id, exc)
    info = first[0].info if first else None
    opened: list[Any] = list(first)

    def factory() -> FrameSource:
        return first.pop() if first else open_source(config.source, **options)

    def close() -> None:
        for item in opened:
            item.close()

    if info is None:
        return factory, [], 0.0, close
    try:
        sinks: list[Any] = []
        if config.output:
            if info.width <= 0 or info.height <= 0:
                raise SourceError(f"{mask_credentials(str(config.source))}: the source "
                                  "does not declare its frame size, needed for --output")
            sinks.append(VideoFileSink(config.output, info.fps or 30.0,
                                       (info.width, info.height), sar=info.sar))
        opened.extend(sinks)
        if config.display:
            sinks.append(WindowSink(f"streamclf: {mask_credentials(str(config.source))}"))
    except BaseException:
        close()
        raise
    return factory, sinks, info.fps, close
