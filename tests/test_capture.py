"""CaptureThread: pacing, looping, back-pressure, stop, reconnect (fakes and a real server)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.errors import ConfigError, SourceError, StreamclfError
from streamclf.media.capture import CaptureThread
from streamclf.media.sources import FakeSource, FrameSource, SyntheticSource, open_source
from streamclf.types import Frame
from tests.servers import rtsp_server_or_skip

pytestmark = pytest.mark.timeout(60)
IMG = np.zeros((4, 6, 3), np.uint8)


class Recorder:
    """Collects frames and events from the capture thread."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self.cond = threading.Condition()

    def on_frame(self, frame: Frame) -> bool:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()
        return True

    def on_event(self, kind: str, fields: dict[str, Any]) -> None:
        with self.cond:
            self.events.append((kind, fields, time.monotonic()))
            self.cond.notify_all()

    def kinds(self) -> list[str]:
        with self.cond:
            return [k for k, _, _ in self.events]

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)

    def wait_event(self, kind: str, timeout_s: float) -> tuple[dict[str, Any], float]:
        assert self.wait(lambda: any(k == kind for k, _, _ in self.events), timeout_s), (
            f"no {kind!r} event within {timeout_s} s; got {self.kinds()}")
        with self.cond:
            return next((f, t) for k, f, t in self.events if k == kind)


@pytest.fixture
def make_thread() -> Iterator[Callable[..., tuple[CaptureThread, Recorder]]]:
    """Builds capture threads wired to a Recorder; stops them all after the test."""
    made: list[CaptureThread] = []

    def make(factory: Callable[[], FrameSource], **kwargs: Any) -> tuple[CaptureThread, Recorder]:
        rec = Recorder()
        kwargs.setdefault("on_frame", rec.on_frame)
        thread = CaptureThread(factory, stream_id=f"s{len(made)}", on_event=rec.on_event,
                               **kwargs)
        made.append(thread)
        return thread, rec

    yield make
    for thread in made:
        thread.stop(2.0)


def scripted(
    *sources: FrameSource | BaseException,
) -> tuple[Callable[[], FrameSource], list[float]]:
    """A factory returning (or raising) the given items in turn; records its call times."""
    items, calls = list(sources), []

    def factory() -> FrameSource:
        calls.append(time.monotonic())
        item = items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return factory, calls


def check_frames(frames: list[Frame]) -> None:
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(b.ts > a.ts for a, b in itertools.pairwise(frames))
    assert all(b.wall_ts >= a.wall_ts for a, b in itertools.pairwise(frames))


def test_file_fast_delivers_every_frame_with_media_timestamps(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]], tai_chi_clip: Path,
) -> None:
    thread, rec = make_thread(lambda: open_source(str(tai_chi_clip)), pace="fast")
    thread.start()
    assert thread.finished.wait(20.0)
    assert thread.eof and thread.error is None and not thread.is_alive
    assert len(rec.frames) == thread.frames_read == 300
    check_frames(rec.frames)
    assert rec.frames[0].ts == 0.0 and rec.frames[-1].ts == pytest.approx(299 / 29.97, abs=1e-3)
    image = rec.frames[0].picture.rgb()
    assert image.shape == (256, 340, 3) and image.dtype == np.uint8
    assert rec.kinds() == ["source_opened"]
    opened = rec.events[0][1]
    assert opened["kind"] == "file" and opened["width"] == 340 and opened["is_live"] is False


def test_file_realtime_is_paced(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]], tai_chi_clip: Path,
) -> None:
    thread, rec = make_thread(lambda: open_source(str(tai_chi_clip)), pace="realtime")
    thread.start()
    assert rec.wait(lambda: len(rec.frames) >= 1, 5.0)
    info = thread.source_info
    assert info is not None and info.kind == "file" and info.fps == pytest.approx(29.97, abs=0.01)
    time.sleep(1.0)
    fps = thread.fps
    assert thread.stop() and not thread.eof
    n = len(rec.frames)
    check_frames(rec.frames)
    span = rec.frames[-1].ts - rec.frames[0].ts
    print(f"\nrealtime file: {n} frames, {(n - 1) / span:.1f} fps by ts, measured {fps:.1f} fps")
    assert 24 <= n <= 36
    assert (n - 1) / span == pytest.approx(29.97, rel=0.1)
    assert fps == pytest.approx(29.97, rel=0.15)


def test_loop_replays_with_increasing_timestamps(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    opens: list[int] = []

    def factory() -> FrameSource:
        opens.append(1)
        return SyntheticSource(32, 16, 10.0, frames=4)

    thread, rec = make_thread(factory, pace="fast", loop=True)
    thread.start()
    assert rec.wait(lambda: len(rec.frames) >= 10, 5.0)
    thread.stop()
    check_frames(rec.frames)
    assert [f.ts for f in rec.frames[:10]] == pytest.approx([i / 10 for i in range(10)])
    assert len(opens) >= 3 and rec.kinds() == ["source_opened"]
    assert not thread.eof and thread.error is None


def test_loop_realtime_keeps_pace_across_replays(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    thread, rec = make_thread(lambda: SyntheticSource(32, 16, 50.0, frames=5), loop=True)
    thread.start()
    assert rec.wait(lambda: len(rec.frames) >= 16, 5.0)
    thread.stop()
    check_frames(rec.frames)
    gaps = np.diff([f.ts for f in rec.frames[:16]])
    assert gaps.mean() == pytest.approx(0.02, rel=0.25)


def test_back_pressure_is_lossless(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    rec_frames: list[Frame] = []
    offers = [0]

    def refuse_every_other(frame: Frame) -> bool:
        offers[0] += 1
        if offers[0] % 2:
            return False
        rec_frames.append(frame)
        return True

    thread, _ = make_thread(lambda: SyntheticSource(32, 16, 30.0, frames=20), pace="fast",
                            on_frame=refuse_every_other)
    thread.start()
    assert thread.finished.wait(5.0) and thread.eof
    check_frames(rec_frames)
    assert len(rec_frames) == 20 and thread.refusals == 20


@pytest.mark.parametrize("close_unblocks", [True, False])
def test_stop_returns_while_the_source_blocks(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]], close_unblocks: bool,
) -> None:
    src = FakeSource([IMG], end="block", close_unblocks=close_unblocks)
    thread, rec = make_thread(lambda: src)
    thread.start()
    assert rec.wait(lambda: len(rec.frames) == 1, 5.0)
    time.sleep(0.05)  # now blocked in read()
    t0 = time.monotonic()
    stopped = thread.stop(timeout_s=0.5)
    elapsed = time.monotonic() - t0
    assert src.closed.is_set() and elapsed < 0.6
    # A live source is read on the watchdog's helper thread: even a driver stuck in read()
    # (close_unblocks=False) does not hold the capture thread.
    assert stopped and not thread.is_alive
    src.unblock.set()
    assert thread.finished.wait(2.0)
    assert thread.error is None and rec.kinds() == ["source_opened"]  # nothing after stop


def test_stop_interrupts_pacing_and_backoff(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    paced, rec1 = make_thread(lambda: SyntheticSource(32, 16, 0.2))  # a frame every 5 s
    waiting, rec2 = make_thread(lambda: FakeSource([SourceError("down")]),
                                backoff_initial_s=30.0, backoff_max_s=30.0)
    paced.start()
    waiting.start()
    assert rec1.wait(lambda: len(rec1.frames) == 1, 5.0)
    rec2.wait_event("source_lost", 5.0)
    t0 = time.monotonic()
    assert paced.stop() and waiting.stop()
    assert time.monotonic() - t0 < 0.5


def test_reconnect_with_backoff(make_thread: Callable[..., tuple[CaptureThread, Recorder]]) -> None:
    first = FakeSource([IMG, IMG, SourceError("stream lost: rtsp://u:***@cam/x")])
    broken = FakeSource([SourceError("handshake failed")])  # opens, fails before a frame
    second = FakeSource([IMG, IMG], end="block")
    factory, calls = scripted(first, SourceError("refused"), broken, second)
    thread, rec = make_thread(factory, backoff_initial_s=0.05, backoff_max_s=0.15,
                              backoff_jitter=0.0)
    thread.start()
    rec.wait_event("source_restored", 5.0)
    assert rec.wait(lambda: len(rec.frames) == 4, 2.0)
    assert rec.kinds() == ["source_opened", "source_lost", "reconnect_failed", "source_opened",
                           "reconnect_failed", "source_opened", "source_restored"]
    fields = [f for _, f, _ in rec.events]
    assert fields[1] == {"reason": "stream lost: rtsp://u:***@cam/x", "frames_read": 2}
    assert fields[2] == {"attempt": 1, "reason": "refused", "retry_in_s": 0.1}
    assert fields[4] == {"attempt": 2, "reason": "handshake failed", "retry_in_s": 0.15}
    assert fields[6]["attempts"] == 3 and fields[6]["downtime_s"] >= 0.3
    gaps = np.diff(calls)
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.15  # doubled, capped
    assert gaps[2] < 0.15 + 0.15  # capped at 0.15 (plus scheduling slack)
    check_frames(rec.frames)
    assert thread.reconnects == 1 and thread.error is None
    assert first.closed.is_set() and broken.closed.is_set()


def test_backoff_jitter_and_giving_up(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    factory, calls = scripted(FakeSource([IMG, SourceError("lost")]),
                              *[SourceError(f"refused {i}") for i in range(4)])
    thread, rec = make_thread(factory, backoff_initial_s=0.05, backoff_max_s=0.1,
                              backoff_jitter=0.2, max_reconnects=4, rng=random.Random(1))
    thread.start()
    assert thread.finished.wait(5.0)
    nominal = [0.05, 0.1, 0.1, 0.1]
    gaps = np.diff(calls)
    assert len(gaps) == 4
    assert all(0.8 * n <= g < 1.2 * n + 0.1 for g, n in zip(gaps, nominal, strict=True))
    assert isinstance(thread.error, SourceError) and "gave up after 4" in str(thread.error)
    assert rec.kinds()[-2:] == ["reconnect_failed", "error"]
    assert rec.events[-2][1]["retry_in_s"] is None and not thread.eof


def test_max_reconnects_zero_gives_up_at_once(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    factory, calls = scripted(FakeSource([IMG, SourceError("camera unplugged")]))
    thread, rec = make_thread(factory, max_reconnects=0)
    thread.start()
    assert thread.finished.wait(2.0) and not thread.is_alive
    assert rec.kinds() == ["source_opened", "source_lost", "error"]
    assert "camera unplugged" in rec.events[-1][1]["error"]
    assert isinstance(thread.error, SourceError) and len(calls) == 1


def test_failures_that_end_the_thread(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    no_open, rec1 = make_thread(scripted(SourceError("rtsp://a:***@h: refused"))[0])
    file_err, rec2 = make_thread(lambda: FakeSource([IMG, SourceError("decode")], is_live=False))

    def explode(frame: Frame) -> bool:
        raise ValueError("consumer bug")

    crash, _ = make_thread(lambda: FakeSource([IMG]), on_frame=explode)
    for t in (no_open, file_err, crash):
        t.start()
    for t in (no_open, file_err, crash):
        assert t.finished.wait(2.0) and not t.eof
    assert rec1.kinds() == ["error"] and isinstance(no_open.error, SourceError)
    assert rec2.kinds() == ["source_opened", "error"] and isinstance(file_err.error, SourceError)
    assert type(crash.error) is StreamclfError and "consumer bug" in str(crash.error)


def test_event_callback_errors_are_counted(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]],
) -> None:
    def bad_event(kind: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("sink down")

    rec = Recorder()
    thread = CaptureThread(lambda: FakeSource([IMG, IMG]), rec.on_frame, "x", on_event=bad_event)
    thread.start()
    assert thread.finished.wait(2.0) and thread.eof and len(rec.frames) == 2
    assert thread.event_errors == 1


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="pace"):
        CaptureThread(lambda: FakeSource(), lambda f: True, "x", pace="turbo")
    with pytest.raises(ConfigError, match="max_reconnects"):
        CaptureThread(lambda: FakeSource(), lambda f: True, "x", max_reconnects=-1)


@pytest.mark.slow
def test_rtsp_server_killed_and_restarted(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]], tmp_path: Path,
) -> None:
    server = rtsp_server_or_skip(tmp_path)
    try:
        url = server.url
        thread, rec = make_thread(lambda: open_source(url, read_timeout_ms=2000),
                                  backoff_initial_s=0.2, backoff_max_s=0.5)
        thread.start()
        assert rec.wait(lambda: len(rec.frames) >= 45, 10.0)
        fps = thread.fps
        killed = time.monotonic()
        server.kill()
        _, lost_at = rec.wait_event("source_lost", 6.0)
        lost_s = lost_at - killed
        time.sleep(0.5)
        server.start()
        restarted = time.monotonic()
        _, restored_at = rec.wait_event("source_restored", 10.0)
        print(f"\nRTSP live: {fps:.1f} fps; kill detected in {lost_s:.3f} s; "
              f"restored {restored_at - restarted:.2f} s after restart")
        assert fps == pytest.approx(30.0, rel=0.2)
        n = len(rec.frames)
        assert rec.wait(lambda: len(rec.frames) >= n + 10, 5.0)
        check_frames(rec.frames)
        assert thread.reconnects == 1 and thread.error is None
    finally:
        server.close()


@pytest.mark.slow
def test_rtsp_server_hang_is_detected(
    make_thread: Callable[..., tuple[CaptureThread, Recorder]], tmp_path: Path,
) -> None:
    server = rtsp_server_or_skip(tmp_path)
    try:
        url = server.url
        thread, rec = make_thread(lambda: open_source(url, read_timeout_ms=1000),
                                  read_timeout_s=1.0, max_reconnects=0)
        thread.start()
        assert rec.wait(lambda: len(rec.frames) >= 10, 10.0)
        server.pause()
        paused = time.monotonic()
        fields, lost_at = rec.wait_event("source_lost", 6.0)
        print(f"\nRTSP hang detected in {lost_at - paused:.2f} s: {fields['reason']}")
        # The frame watchdog, not FFmpeg's timeout (which needs 2-3 read timeouts here).
        assert lost_at - paused < 1.0 + 0.5 and "frame watchdog" in fields["reason"]
        assert thread.finished.wait(2.0) and isinstance(thread.error, SourceError)
    finally:
        server.close()
