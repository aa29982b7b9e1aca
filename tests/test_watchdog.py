"""The frame watchdog: reads never block past their timeout, even with a stuck driver."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from streamclf.errors import ConfigError, SourceError
from streamclf.media.capture import CaptureThread
from streamclf.media.sources import FakeSource, FrameSource
from streamclf.media.watchdog import WatchdogSource
from streamclf.types import Frame

pytestmark = pytest.mark.timeout(30)
IMG = np.zeros((4, 6, 3), np.uint8)


def test_frames_end_and_errors_pass_through_in_order() -> None:
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    src = WatchdogSource(FakeSource(frames), depth=2)
    got = [src.read(1.0) for _ in range(5)]
    assert [int(g[0].rgb()[0, 0, 0]) for g in got if g is not None] == [0, 1, 2, 3, 4]
    assert [g[1] for g in got if g is not None] == pytest.approx([i / 30 for i in range(5)])
    assert src.read(1.0) is None and src.read(1.0) is None  # the end stays the end
    failing = WatchdogSource(FakeSource([IMG, SourceError("link down")]))
    assert failing.read(1.0) is not None
    for _ in range(2):
        with pytest.raises(SourceError, match="link down"):
            failing.read(1.0)
    with pytest.raises(ConfigError, match="depth must be >= 1, got 0"):
        WatchdogSource(FakeSource(frames), depth=0)


def test_stuck_driver_times_out_and_close_is_prompt() -> None:
    inner = FakeSource([IMG], end="block", close_unblocks=False)  # read() never returns
    src = WatchdogSource(inner)
    assert src.read(1.0) is not None
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no frame for 0\.3 s \(frame watchdog\)"):
        src.read(0.3)
    assert 0.29 <= time.monotonic() - t0 < 0.6
    raised: list[BaseException] = []

    def wait_long() -> None:
        try:
            src.read(30.0)
        except SourceError as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait_long)
    waiter.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    src.close()  # wakes the waiting read, closes the driver, never waits for its read
    waiter.join(2.0)
    assert not waiter.is_alive() and time.monotonic() - t0 < 0.5
    assert "closed" in str(raised[0])
    assert inner.closed.is_set()
    inner.unblock.set()  # the stuck read returns at last; the helper thread ends


def test_a_stalled_live_source_is_lost_and_reconnected() -> None:
    """Capture: a driver that hangs in read() is declared lost after ``read_timeout_s`` and
    replaced, like one whose connection dropped."""
    stuck = FakeSource([IMG, IMG], end="block", close_unblocks=False)
    sources: list[FrameSource] = [stuck, FakeSource([IMG] * 3, end="block")]
    events: list[tuple[str, dict[str, Any], float]] = []
    frames: list[Frame] = []
    done = threading.Event()

    def on_event(kind: str, fields: dict[str, Any]) -> None:
        events.append((kind, fields, time.monotonic()))
        if kind == "source_restored":
            done.set()

    thread = CaptureThread(lambda: sources.pop(0), lambda f: frames.append(f) is None, "s",
                           on_event=on_event, read_timeout_s=0.4, backoff_initial_s=0.05,
                           backoff_max_s=0.05)
    thread.start()
    try:
        assert done.wait(5.0), events
        time.sleep(0.1)
    finally:
        assert thread.stop(1.0)
        stuck.unblock.set()
    kinds = [k for k, _, _ in events]
    assert kinds == ["source_opened", "source_lost", "source_opened", "source_restored"]
    lost = events[1]
    assert "frame watchdog" in lost[1]["reason"] and lost[1]["frames_read"] == 2
    assert 0.35 <= lost[2] - events[0][2] < 0.9  # read_timeout_s after the last frame
    assert len(frames) == 5 and [f.seq for f in frames] == list(range(5))
    assert stuck.closed.is_set() and thread.reconnects == 1
