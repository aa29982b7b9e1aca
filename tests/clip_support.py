"""Helpers of the alert clip tests (``test_event_clips.py``, ``test_clip_files.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from streamclf.media.sources import open_source
from tests.conftest import SHARED_DATA

DAY = 86_400.0
#: A source with non-square pixels (ffprobe: 340x256, SAR 64:51), from the shared clips.
ANAMORPHIC = SHARED_DATA / "videos" / "mmaction2__demo_demo.mp4"


def alert_id(n: int) -> str:
    return f"20261202T1015{n % 60:02d}.000Z-{n:04d}"


def probe(path: Path) -> dict[str, Any]:
    """What a decoder sees in ``path``: codec, pixel format, size, SAR, duration, frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "size": (stream.width, stream.height), "sar": stream.sample_aspect_ratio,
                "duration": (container.duration or 0) / 1e6, "frames": frames}


def wait_until(cond: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    return cond()


def sar_of(path: Path) -> tuple[int, int]:
    """The pixel aspect the source opened for ``path`` declares."""
    source = open_source(str(path))
    try:
        return source.info.sar
    finally:
        source.close()
