"""``pace: fast`` is lossless: every due window of a file is classified, on every run.

With an instant source (``pace: fast``: the capture reads as fast as the ring accepts) the
ring can fill up before the inference thread first polls its scheduler. The window grid must
then still start at the first frame (as it does with ``pace: realtime``), not at whatever the
first poll happens to see, and no window may be skipped or lost to the ring.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from streamclf.engine.backends import FakeBackend
from streamclf.engine.batcher import InferenceWorker, StreamSlot
from streamclf.errors import SourceError
from streamclf.media.capture import CaptureThread
from streamclf.media.picture import ArrayPicture
from streamclf.media.ring import FrameRing
from streamclf.media.scheduler import WindowScheduler
from streamclf.media.sources import FakeSource, FrameSource, open_source
from streamclf.types import BufferPolicy, Frame, Window

pytestmark = pytest.mark.timeout(120)

FPS = 30.0
FI = 1.0 / FPS  # frame interval
DURATION, STRIDE = 1.6, 0.8  # x3d_xs: 4 frames x 12 at 30 fps, default stride
SECONDS = 5.0
N_FRAMES = int(SECONDS * FPS)  # 150 frames: ts 0 .. 149/30
RUNS = 25
W, H = 32, 24


def expected_dues(n_frames: int, fps: float = FPS, duration: float = DURATION,
                  stride: float = STRIDE, first_ts: float = 0.0) -> list[float]:
    """The lossless grid of a file of ``n_frames`` (T = n_frames / fps seconds): the first
    window ends on the frame ``duration`` after the first frame (``first_ts + duration -
    1/fps``), then one every ``stride``; ``floor((T - duration) / stride) + 1`` windows."""
    total = n_frames / fps
    if total + 1e-9 < duration:
        return []
    count = math.floor((total - duration) / stride + 1e-9) + 1
    anchor = first_ts + duration - 1.0 / fps
    return [anchor + k * stride for k in range(count)]


def frame(seq: int, fps: float = FPS, size: int = 4) -> Frame:
    return Frame(seq=seq, ts=seq / fps, wall_ts=1000.0 + seq / fps,
                 picture=ArrayPicture(np.full((size, size, 3), seq % 256, np.uint8)),
                 media_ts=seq / fps)


def take(ring: FrameRing, sched: WindowScheduler, num_frames: int = 4) -> Window | None:
    """What the inference worker does for one stream: the real ``StreamSlot.take``."""
    return StreamSlot("s", ring, sched, num_frames, publish=lambda *_: None).take()


# -- the scheduler alone, deterministic ------------------------------------------------------
def test_expected_count_matches_the_formula() -> None:
    assert len(expected_dues(N_FRAMES)) == math.floor((SECONDS - DURATION) / STRIDE) + 1 == 5


def test_lossless_first_poll_on_a_full_ring_anchors_on_the_oldest_frame() -> None:
    """5 s of 30 fps frames are all in the ring before the first poll (an instant source
    and a late consumer): polling then yields every window of the file, on the grid that
    starts at the first frame, oldest first, with nothing skipped or dropped."""
    ring = FrameRing(N_FRAMES + 8, (4, 4, 3), policy=BufferPolicy.LOSSLESS)
    sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS, frame_interval=FI)
    for i in range(N_FRAMES):
        assert ring.push(frame(i))
    windows = []
    for _ in range(3 * N_FRAMES):  # poll far more often than there are windows
        win = take(ring, sched)
        if win is not None:
            windows.append(win)
    want = expected_dues(N_FRAMES)
    assert [w.due_ts for w in windows] == pytest.approx(want)
    assert len(windows) == sched.emitted == 5
    assert sched.skipped == 0 and ring.drops == 0
    # The first window starts on the first frame; each spans a full window of frames.
    assert windows[0].seqs[0] == 0
    for win in windows:
        assert win.ts[-1] == pytest.approx(win.due_ts)
        assert win.ts[-1] - win.ts[0] == pytest.approx(DURATION - FI, abs=1e-6)


@pytest.mark.parametrize("first_poll_after", [1, 47, 48, 60, 100, N_FRAMES])
def test_lossless_grid_does_not_depend_on_when_the_first_poll_comes(
    first_poll_after: int,
) -> None:
    """The same file gives the same windows whether the consumer first looks after 1 frame,
    just before a full window (47), on it (48) or after the whole file."""
    ring = FrameRing(N_FRAMES + 8, (4, 4, 3), policy=BufferPolicy.LOSSLESS)
    sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS, frame_interval=FI)
    dues: list[float] = []
    for i in range(N_FRAMES):
        assert ring.push(frame(i))
        if i + 1 >= first_poll_after:
            while (win := take(ring, sched)) is not None:
                dues.append(win.due_ts)
    while (win := take(ring, sched)) is not None:
        dues.append(win.due_ts)
    assert dues == pytest.approx(expected_dues(N_FRAMES))


@pytest.mark.parametrize("capacity", [int((DURATION + STRIDE) * FPS) + 2,
                                      int(DURATION * FPS) + 2])
def test_lossless_tight_ring_back_pressure_keeps_every_window(capacity: int) -> None:
    """A ring that holds barely one window: the producer is refused until the consumer has
    cut the windows that need the oldest frames, and then every window is still there."""
    ring = FrameRing(capacity, (4, 4, 3), policy=BufferPolicy.LOSSLESS)
    sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS, frame_interval=FI)
    dues: list[float] = []
    i = refusals = 0
    while i < N_FRAMES:
        if ring.push(frame(i)):
            i += 1
            continue
        refusals += 1
        win = take(ring, sched)
        assert win is not None, "ring full and nothing due: the lossless run would hang"
        dues.append(win.due_ts)
    while (win := take(ring, sched)) is not None:
        dues.append(win.due_ts)
    assert refusals > 0
    assert dues == pytest.approx(expected_dues(N_FRAMES))
    assert ring.drops == 0 and sched.skipped == 0


@pytest.mark.parametrize("real_fps", [60.0, 120.0])
def test_lossless_ring_sized_for_a_lower_declared_rate_grows_instead_of_hanging(
        real_fps: float) -> None:
    """The runner sizes the ring from the rate the file declares; a file really at 2x or 4x
    that rate once filled it with needed frames while no window was due (a hang). The ring
    now grows, and every window of the file is still cut, nothing dropped."""
    declared_capacity = int(DURATION * FPS) + 2  # one window at the declared 30 fps
    n_frames = int(SECONDS * real_fps)

    def run(capacity: int) -> tuple[FrameRing, list[tuple[int, ...]]]:
        ring = FrameRing(capacity, (4, 4, 3), policy=BufferPolicy.LOSSLESS,
                         window_s=DURATION + 2 / FPS)
        sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS, frame_interval=FI)
        windows: list[tuple[int, ...]] = []
        i = 0
        while i < n_frames:
            if ring.push(frame(i, fps=real_fps)):
                i += 1
                continue
            win = take(ring, sched)
            assert win is not None, "ring full and nothing due: the lossless run would hang"
            windows.append(win.seqs)
        while (win := take(ring, sched)) is not None:
            windows.append(win.seqs)
        return ring, windows

    ring, windows = run(declared_capacity)
    roomy, want = run(n_frames + 1)  # holds the whole file: never full
    assert ring.capacity > declared_capacity and roomy.capacity == n_frames + 1
    assert windows == want and len(want) == len(expected_dues(n_frames, fps=real_fps))
    assert ring.drops == 0
    # The old ring (no growth) refuses the frame that would need it, with nothing due.
    old = FrameRing(declared_capacity, (4, 4, 3), policy=BufferPolicy.LOSSLESS)
    pushed = 0
    while old.push(frame(pushed, fps=real_fps)):
        pushed += 1
    assert take(old, WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS,
                                     frame_interval=FI)) is None


def test_lossless_ring_growth_is_bounded_then_drops_rather_than_hangs() -> None:
    # The byte cap counts the pictures held and the converted cache: 32 of each fit.
    ring = FrameRing(8, (4, 4, 3), policy=BufferPolicy.LOSSLESS, window_s=100.0,
                     max_bytes=2 * 32 * 4 * 4 * 3)
    for i in range(100):
        assert ring.push(frame(i))
    assert ring.capacity == 32 and len(ring) >= 31 and ring.drops == 100 - len(ring)
    assert ring.peak_bytes <= ring.max_bytes


def test_latest_first_poll_still_anchors_on_the_newest_frame() -> None:
    """Live (LATEST) is unchanged: a late first poll starts the grid at the newest frame
    (fresh labels matter more than old windows), and later stale windows are skipped and
    counted."""
    ring = FrameRing(N_FRAMES + 8, (4, 4, 3))
    sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LATEST, frame_interval=FI)
    for i in range(N_FRAMES):
        ring.push(frame(i))
    newest = (N_FRAMES - 1) / FPS
    assert sched.poll(0.0, newest) == pytest.approx(newest)
    assert sched.poll(0.0, newest) is None
    assert sched.poll(0.0, newest + 3 * STRIDE) == pytest.approx(newest + 3 * STRIDE)
    assert sched.emitted == 2 and sched.skipped == 2


# -- capture thread + ring + scheduler + worker, as the pipeline wires them ----------------
class Run:
    """One ``pace: fast`` stream: capture -> LOSSLESS ring -> worker (fake model)."""

    def __init__(self, factory: Callable[[], FrameSource], capacity: int,
                 backend: FakeBackend | None = None) -> None:
        self.ring = FrameRing(capacity, (H, W, 3), policy=BufferPolicy.LOSSLESS, stream="f")
        self.sched = WindowScheduler(DURATION, STRIDE, BufferPolicy.LOSSLESS, frame_interval=FI)
        self.windows: list[Window] = []
        self.worker = InferenceWorker(backend or FakeBackend(), idle_wait_s=0.05)
        self.worker.add_stream(StreamSlot("f", self.ring, self.sched, 4,
                                          publish=lambda w, p, f, ms: self.windows.append(w)))
        self.capture = CaptureThread(factory, on_frame=self._on_frame, stream_id="f",
                                     pace="fast")

    def _on_frame(self, frame: Frame) -> bool:  # as StreamPipeline._on_frame
        accepted = self.ring.push(frame)
        if accepted:
            self.worker.notify()
        return accepted

    def finished(self) -> bool:
        """The drain rule: the source ended (end of file or failure) and nothing is due or
        in the model any more. An error does not cut the drain short."""
        return self.capture.finished.is_set() and self.worker.idle("f")

    def run(self, timeout_s: float = 20.0) -> None:
        self.worker.start()
        self.capture.start()
        deadline = time.monotonic() + timeout_s
        try:
            while not self.finished():
                assert time.monotonic() < deadline, "the lossless run did not finish"
                time.sleep(0.002)
        finally:
            self.capture.stop(2.0)
            assert self.worker.stop(2.0)


def synthetic(frames: int) -> Callable[[], FrameSource]:
    return lambda: open_source(f"synthetic:{W}x{H}@{FPS:g}", frames=frames)


@pytest.mark.parametrize("capacity", [
    math.ceil((DURATION + 2 * STRIDE) * FPS * 2) + 8,  # the pipeline's sizing (whole file fits)
    int((DURATION + STRIDE) * FPS) + 2,  # tight: the capture waits for the consumer
])
def test_fast_pace_file_gives_every_window_on_every_run(capacity: int) -> None:
    """25 runs of a 5 s instant source: exactly the file's 5 due windows every time, on the
    grid anchored at the first frame, with every frame of each window present."""
    want = expected_dues(N_FRAMES)
    counts: list[int] = []
    for _ in range(RUNS):
        run = Run(synthetic(N_FRAMES), capacity)
        run.run()
        counts.append(len(run.windows))
        assert run.capture.eof and run.capture.error is None
        assert run.capture.frames_read == N_FRAMES
        assert [w.due_ts for w in run.windows] == pytest.approx(want), counts
        assert run.ring.drops == 0 and run.sched.skipped == 0
        for win in run.windows:  # frames sampled from the full window, in order
            assert win.ts[-1] == pytest.approx(win.due_ts)
            assert win.ts[0] == pytest.approx(win.due_ts - DURATION + FI)
    assert counts == [len(want)] * RUNS


class GatedBackend(FakeBackend):
    """A model that holds its first window until ``gate()`` is true (or 10 s passed)."""

    def __init__(self, gate: Callable[[], bool]) -> None:
        super().__init__(delay_s=0.002)
        self._gate = gate

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        deadline = time.monotonic() + 10.0
        while not self._gate() and time.monotonic() < deadline:
            time.sleep(0.002)
        return super().infer(clips)


def test_fast_pace_slow_model_and_tight_ring_stay_lossless() -> None:
    """A model slower than the file with a ring barely larger than a window: the capture is
    refused and waits (the model holds its first window until it does), and still no window
    is lost."""
    runs: list[Run] = []
    backend = GatedBackend(lambda: runs[0].capture.refusals > 0)
    runs.append(Run(synthetic(N_FRAMES), int((DURATION + STRIDE) * FPS) + 2, backend))
    run = runs[0]
    run.run()
    assert run.capture.refusals > 0
    assert [w.due_ts for w in run.windows] == pytest.approx(expected_dues(N_FRAMES))
    assert run.ring.drops == 0 and run.sched.skipped == 0


@pytest.mark.parametrize("frames_before_failure", [100, 130])
def test_fast_pace_truncated_file_classifies_every_window_before_the_failure(
    frames_before_failure: int,
) -> None:
    """A file that fails mid-way (truncated / corrupt): ``error`` is set, yet every frame read
    before the failure reaches the ring, and draining until the worker is idle classifies
    every window those frames complete, as ``pace: realtime`` would."""
    img = np.zeros((H, W, 3), np.uint8)
    want = expected_dues(frames_before_failure)
    for _ in range(5):
        run = Run(lambda: FakeSource([img] * frames_before_failure
                                     + [SourceError("corrupt or truncated video")],
                                     fps=FPS, is_live=False),
                  int((DURATION + STRIDE) * FPS) + 2)
        run.run()
        assert isinstance(run.capture.error, SourceError) and not run.capture.eof
        assert run.capture.frames_read == frames_before_failure == run.ring.pushed
        assert [w.due_ts for w in run.windows] == pytest.approx(want)
        assert run.ring.drops == 0


def test_capture_finished_is_set_after_the_last_frame_is_accepted() -> None:
    """The contract the pipeline's drain relies on: when ``finished`` is set (with ``error``
    or ``eof``), every frame read has been accepted by ``on_frame`` - even one the consumer
    refused several times - so nothing is still on its way to the ring."""
    img = np.zeros((H, W, 3), np.uint8)
    accepted: list[int] = []
    offers = [0]
    lock = threading.Lock()

    def slow_consumer(frame: Frame) -> bool:
        with lock:
            offers[0] += 1
            if offers[0] % 3:
                return False
            accepted.append(frame.seq)
            return True

    capture = CaptureThread(
        lambda: FakeSource([img] * 20 + [SourceError("truncated")], is_live=False),
        on_frame=slow_consumer, stream_id="f", pace="fast")
    capture.start()
    assert capture.finished.wait(5.0)
    with lock:
        assert accepted == list(range(20))
    assert capture.frames_read == 20 and isinstance(capture.error, SourceError)
    assert capture.refusals == 40
