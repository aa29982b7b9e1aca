"""Ring buffer, window scheduler and inference worker on synthetic frames."""

from __future__ import annotations

import itertools
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamclf.engine.backends import FakeBackend
from streamclf.engine.batcher import InferenceWorker, StreamSlot
from streamclf.errors import ConfigError
from streamclf.media.clips import span_indices, uniform_indices
from streamclf.media.picture import ArrayPicture
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.types import BufferPolicy, Frame, Window


def frame(seq: int, ts: float, value: int = 0, size: int = 8) -> Frame:
    return Frame(seq=seq, ts=ts, wall_ts=1000.0 + ts,
                 picture=ArrayPicture(np.full((size, size, 3), value % 256, np.uint8)),
                 media_ts=ts)


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="capacity must be >= 2"):
        FrameRing(1, (8, 8, 3))
    with pytest.raises(ConfigError, match="duration must be > 0"):
        WindowScheduler(0.0)
    with pytest.raises(ConfigError, match="stride must be > 0"):
        WindowScheduler(1.0, stride=-0.5)


def test_ring_keeps_newest_and_counts_drops() -> None:
    ring = FrameRing(4, (8, 8, 3))
    for i in range(10):
        assert ring.push(frame(i, i / 30))
    assert len(ring) == 4 and ring.span() == pytest.approx((6 / 30, 9 / 30))
    assert ring.drops == 6 and ring.pushed == 10
    ring.release_before(100.0)
    ring.push(frame(10, 10 / 30))
    assert ring.drops == 6  # released frames are not drops


def test_ring_converts_only_sampled_frames_once_each() -> None:
    calls: list[int] = []

    def shrink(img: np.ndarray) -> np.ndarray:
        calls.append(int(img[0, 0, 0]))
        return img[:4, :4]

    ring = FrameRing(16, (4, 4, 3), transform=shrink)
    for i in range(9):
        ring.push(frame(i, i / 30, value=i))
    assert calls == []  # nothing is converted on entry
    win = ring.window(4 / 30, 1.0, 3)
    assert win is not None and win.frames.shape == (3, 4, 4, 3)
    assert win.seqs == (0, 2, 4) and win.frames[1, 0, 0, 0] == 2
    assert sorted(calls) == [0, 2, 4]  # only the sampled frames
    win = ring.window(8 / 30, 1.0, 3)  # overlaps: frame 4 is reused from the cache
    assert win is not None and win.seqs == (0, 4, 8)
    assert [int(v) for v in win.frames[:, 0, 0, 0]] == [0, 4, 8]
    assert sorted(calls) == [0, 2, 4, 8] and ring.converted == 4


def test_ring_lets_go_of_pictures_once_converted_or_released() -> None:
    ring = FrameRing(16, (8, 8, 3))
    one = frame(0, 0.0).picture.nbytes
    for i in range(6):
        ring.push(frame(i, i / 30))
    cache = ring.nbytes - 6 * one
    assert cache == 16 * 8 * 8 * 3  # the preallocated cache of converted frames
    ring.window(5 / 30, 1.0, 2)  # converts frames 0 and 5: their pictures go
    assert ring.nbytes == cache + 4 * one
    ring.release_before(3 / 30)  # no later window samples frames 1 and 2
    assert ring.nbytes == cache + 2 * one
    ring.reset()
    assert ring.nbytes == cache


def test_ring_byte_cap_drops_the_oldest() -> None:
    one = frame(0, 0.0).picture.nbytes
    cache = 32 * 8 * 8 * 3
    ring = FrameRing(32, (8, 8, 3), max_bytes=cache + 5 * one)
    for i in range(12):
        assert ring.push(frame(i, i / 30))
    assert len(ring) == 5 and ring.drops == 7
    assert ring.nbytes <= ring.max_bytes and ring.peak_bytes <= ring.max_bytes
    with pytest.raises(ConfigError, match="byte cap"):
        FrameRing(8, (8, 8, 3), max_bytes=100)


def test_lossless_ring_refuses_until_released() -> None:
    ring = FrameRing(3, (8, 8, 3), policy=BufferPolicy.LOSSLESS)
    for i in range(3):
        assert ring.push(frame(i, float(i)))
    assert not ring.push(frame(3, 3.0))
    ring.release_before(1.0)
    assert ring.push(frame(3, 3.0)) and ring.drops == 0


def test_ring_reset_starts_new_epoch() -> None:
    ring = FrameRing(8, (8, 8, 3))
    ring.push(frame(0, 0.0))
    ring.reset()
    assert ring.span() is None and ring.epoch == 1
    ring.push(frame(1, 5.0))
    win = ring.window(5.0, 2.0, 2)
    assert win is not None and win.epoch == 1 and win.seqs == (1, 1)


@pytest.mark.parametrize("fps", [15.0, 30.0, 60.0])
def test_windows_span_the_same_time_at_any_fps(fps: float) -> None:
    duration, n = 1.6, 4  # x3d_xs: 4 frames x 12 at 30 fps
    ring = FrameRing(int(fps * 4), (8, 8, 3))
    for i in range(int(fps * 3)):
        ring.push(frame(i, i / fps))
    end = (int(fps * 3) - 1) / fps
    win = ring.window(end, duration, n)
    assert win is not None
    span = win.ts[-1] - win.ts[0]
    assert abs(span - duration) <= 1.0 / fps + 1e-6
    assert win.ts[-1] == pytest.approx(end)


def test_span_indices_match_offline_rule() -> None:
    ts = np.arange(100) / 30.0
    picks = span_indices(ts, (1.0, 2.6), 4)
    inside = np.flatnonzero((ts >= 1.0) & (ts < 2.6))
    np.testing.assert_array_equal(picks, inside[uniform_indices(len(inside), 4)])
    assert span_indices(ts, (10.0, 11.0), 4) is None


def test_scheduler_latest_skips_and_counts() -> None:
    sched = WindowScheduler(duration=1.0, stride=0.5)
    assert sched.poll(0.0, 0.5) is None  # not a full window yet
    assert sched.poll(0.0, 1.0) == pytest.approx(1.0)
    assert sched.poll(0.0, 1.2) is None
    # 1.5, 2.0, 2.5 skipped; the window ends on the newest frame (freshest label)
    assert sched.poll(0.5, 3.1) == pytest.approx(3.1)
    assert sched.skipped == 3 and sched.emitted == 2


def test_scheduler_lossless_returns_every_window() -> None:
    sched = WindowScheduler(duration=1.0, stride=0.5, policy=BufferPolicy.LOSSLESS,
                            frame_interval=0.1)
    assert sched.poll(0.0, 0.8) is None  # not a full window yet
    # window 0 ends on the frame one duration after the oldest: 0.0 + 1.0 - 0.1
    got = [sched.poll(0.0, 1.0)]
    got += [sched.poll(0.0, 3.1) for _ in range(4)]
    assert got == pytest.approx([0.9, 1.4, 1.9, 2.4, 2.9])
    assert sched.poll(0.0, 3.1) is None
    assert sched.skipped == 0


@pytest.mark.parametrize("policy", list(BufferPolicy))
def test_scheduler_late_first_poll_anchor_depends_on_policy(policy: BufferPolicy) -> None:
    """The first poll comes when 3.1 s are already held: LOSSLESS starts the grid at the
    oldest frame and returns every window since; LATEST starts it at the newest frame."""
    sched = WindowScheduler(duration=1.0, stride=0.5, policy=policy, frame_interval=0.1)
    assert sched.peek(0.0, 3.1)
    got = []
    while (due := sched.poll(0.0, 3.1)) is not None:
        got.append(due)
    assert not sched.peek(0.0, 3.1)
    if policy is BufferPolicy.LOSSLESS:
        assert got == pytest.approx([0.9, 1.4, 1.9, 2.4, 2.9])
        assert sched.next_window_start() == pytest.approx(3.4 - 1.0)
    else:
        assert got == pytest.approx([3.1])
        assert sched.next_window_start() == pytest.approx(3.6 - 1.0)
    assert sched.skipped == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    fps=st.floats(5, 120), duration=st.floats(0.3, 4.0), stride=st.floats(0.1, 2.0),
    jitter=st.floats(0.0, 0.3), resets=st.lists(st.integers(0, 300), max_size=3),
    poll_every=st.integers(1, 4), seed=st.integers(0, 2**16),
)
def test_windows_never_span_a_reset_and_stay_in_time(
    fps: float, duration: float, stride: float, jitter: float, resets: list[int],
    poll_every: int, seed: int,
) -> None:
    """The live path as the pipeline drives it: the capture thread resets the ring when the
    source is lost or restored (a 5 s gap here), the consumer polls every few frames and
    resets its scheduler when it sees the new epoch."""
    rng = np.random.default_rng(seed)
    ring = FrameRing(int(fps * (duration + stride)) + 8, (2, 2, 3))
    sched = WindowScheduler(duration, stride, frame_interval=1.0 / fps)
    epoch_of: dict[int, int] = {}
    widest: dict[int, float] = {}  # epoch -> widest interval between two of its frames
    seen_epoch, last_end, t = 0, -math.inf, 0.0
    for seq in range(300):
        if seq in resets:
            ring.reset()
            t += 5.0
        step = (1.0 + jitter * rng.uniform(-1, 1) * 0.5) / fps
        t += step
        if epoch_of.get(seq - 1) == ring.epoch:
            widest[ring.epoch] = max(widest.get(ring.epoch, 0.0), step)
        ring.push(Frame(seq, t, t, ArrayPicture(np.zeros((2, 2, 3), np.uint8)), t))
        epoch_of[seq] = ring.epoch
        if seq % poll_every:
            continue
        if ring.epoch != seen_epoch:  # the consumer notices the reconnect
            seen_epoch, last_end = ring.epoch, -math.inf
            sched.reset()
        span = ring.span()
        assert span is not None
        due = sched.poll(*span)
        if due is None:
            continue
        win = ring.window(due, duration, 4)
        assert win is not None and win.epoch == seen_epoch
        assert {epoch_of[s] for s in win.seqs} == {win.epoch}  # never spans a reconnect
        assert all(b >= a for a, b in itertools.pairwise(win.ts))  # monotonic in a window
        assert win.ts[-1] == due > last_end  # ends on the newest frame, always moving on
        last_end = due
        # The window spans its target duration to within one frame interval.
        interval = max(widest.get(win.epoch, 0.0), 1.0 / fps)
        assert duration - interval - 1e-6 <= win.ts[-1] - win.ts[0] <= duration + 1e-6


def test_worker_with_slow_backend_keeps_latency_bounded() -> None:
    """A 0.5 s/clip model on a 30 fps feed: skipped windows counted, latency bounded,
    ring size fixed, and stop() returns within 2 s."""
    backend = FakeBackend(delay_s=0.5)
    ring = FrameRing(60, (8, 8, 3))
    sched = WindowScheduler(duration=1.0, stride=0.2)
    published: list[tuple[Window, float]] = []
    slot = StreamSlot("cam", ring, sched, 4,
                      publish=lambda w, p, f, ms: published.append((w, time.monotonic())))
    worker = InferenceWorker(backend)
    worker.add_stream(slot)
    worker.start()
    stop = threading.Event()

    def feed() -> None:
        seq, t0 = 0, time.monotonic()
        while not stop.is_set() and seq < 30 * 4:
            ring.push(Frame(seq, time.monotonic(), time.time(),
                            ArrayPicture(np.zeros((8, 8, 3), np.uint8)), 0.0))
            worker.notify()
            seq += 1
            stop.wait(max(0.0, t0 + seq / 30 - time.monotonic()))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    feeder.join(10)
    t0 = time.monotonic()
    assert worker.stop(2.0)
    assert time.monotonic() - t0 < 2.0
    assert 4 <= len(published) <= 8
    assert sched.skipped > 0
    assert len(ring) <= 60
    for win, done in published:
        # published within about one inference time of the window's due time
        assert done - win.ts[-1] < 0.5 + 0.35


def test_worker_survives_a_failing_window() -> None:
    backend = FakeBackend(fail_on={0: RuntimeError("out of memory")})
    ring = FrameRing(64, (8, 8, 3))
    errors: list[str] = []
    got: list[Window] = []
    slot = StreamSlot("cam", ring, WindowScheduler(0.5, 0.25), 2,
                      publish=lambda w, p, f, ms: got.append(w))
    worker = InferenceWorker(backend, on_error=lambda s, e: errors.append(f"{s}: {e}"))
    worker.add_stream(slot)
    worker.start()
    for i in range(60):
        ring.push(frame(i, i / 30))
        worker.notify()
        time.sleep(0.002)
    deadline = time.monotonic() + 3
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(2.0)
    assert errors == ["cam: out of memory"] and len(got) >= 2


@given(
    capacity=st.integers(2, 12),
    lossless=st.booleans(),
    ops=st.lists(st.one_of(
        st.tuples(st.just("push"), st.floats(0.0, 0.5)),  # time step to the next frame
        st.tuples(st.just("release"), st.floats(0.0, 1.0)),  # fraction of the held span
        st.tuples(st.just("reset"), st.just(0.0)),
    ), max_size=80),
)
def test_ring_matches_a_reference_model(capacity: int, lossless: bool,
                                        ops: list[tuple[str, float]]) -> None:
    """The ring against a plain-list model of its contract, over any sequence of pushes,
    releases and resets: it holds the newest ``capacity`` strictly newer frames in order,
    counts a drop exactly when a frame not yet released is evicted, and a LOSSLESS ring
    refuses a push instead of evicting such a frame."""
    policy = BufferPolicy.LOSSLESS if lossless else BufferPolicy.LATEST
    ring = FrameRing(capacity, (1, 1, 3), policy=policy)
    held: list[tuple[int, float]] = []  # (seq, ts) oldest first
    released, drops, epoch, t, seq = -math.inf, 0, 0, 0.0, 0
    for op, x in ops:
        if op == "push":
            t += x
            image = np.full((1, 1, 3), seq % 256, np.uint8)
            accepted = ring.push(Frame(seq, t, t, ArrayPicture(image), t))
            if held and t <= held[-1][1]:
                assert accepted  # not newer: skipped, reported as taken
            elif len(held) == capacity and held[0][1] >= released and lossless:
                assert not accepted
            else:
                assert accepted
                if len(held) == capacity:
                    drops += held[0][1] >= released
                    held.pop(0)
                held.append((seq, t))
            seq += 1
        elif op == "release" and held:
            released = max(released, held[0][1] + x * (held[-1][1] - held[0][1]))
            ring.release_before(released)
        elif op == "reset":
            ring.reset()
            held, released, epoch = [], -math.inf, epoch + 1
        assert len(ring) == len(held) <= capacity and ring.drops == drops
        assert ring.epoch == epoch
        assert ring.span() == ((held[0][1], held[-1][1]) if held else None)
        if held:  # a window over everything held returns those frames, oldest first
            win = ring.window(held[-1][1], held[-1][1] - held[0][1] + 1.0, len(held))
            assert win is not None and win.seqs == tuple(s for s, _ in held)
            assert [int(f[0, 0, 0]) for f in win.frames] == [s % 256 for s, _ in held]
