"""The streaming pipeline end to end: fakes for speed, real processes, files and RTSP."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.events import read_events
from streamclf.live.pipeline import LivePipeline
from streamclf.live.runner import StreamRunner
from streamclf.media.picture import ArrayPicture, Picture
from streamclf.media.sources import FrameSource, SyntheticSource, open_source
from streamclf.types import StreamTotals
from tests.conftest import REPO

LABELS = ("walking", "running", "waving")
CORE = {"type", "stream", "ts", "seq"}


def build(tmp_path: Path, source_factory: Callable[[], FrameSource], backend: FakeBackend,
          **cfg: Any) -> tuple[LivePipeline, StreamRunner]:
    """A one-stream run ("s1", model x3d_xs) on ``backend``, its events in ``ev.jsonl``;
    returns the pipeline and the stream's runner (kept: an ended stream leaves the
    pipeline)."""
    config = RunConfig(model="x3d_xs", events=str(tmp_path / "ev.jsonl"), quiet=True,
                       streams=(StreamConfig(id="s1", source="test", **cfg),))

    def open_parts(_: StreamConfig) -> tuple[Any, list[Any], float, Callable[[], None]]:
        return source_factory, [], 30.0, lambda: None

    pipe = LivePipeline(config, backend=backend, open_stream=open_parts)
    return pipe, pipe.stream("s1")


def totals(pipe: LivePipeline, duration_s: float | None = None) -> StreamTotals:
    """Run ``pipe`` (to the end of its stream, or ``duration_s``); the stream's totals."""
    return pipe.run(duration_s=duration_s).streams["s1"]


class StampedSource:
    """A real source whose frame ``n`` (the ``n``-th read) keeps its media timestamp, appended
    to ``stamps``, but is filled with the colour ``(n // 256, n % 256, 0)``: uniform, so it
    survives the ring's resize and crop, and :meth:`index` reads ``n`` back from any pixel."""

    def __init__(self, source: FrameSource, stamps: list[float]) -> None:
        self.info = source.info
        self._source, self._stamps = source, stamps

    def read(self, timeout_s: float) -> tuple[Picture, float] | None:
        got = self._source.read(timeout_s)
        if got is None:
            return None
        picture, ts = got
        n = len(self._stamps)
        self._stamps.append(ts)
        stamped = np.empty((picture.height, picture.width, 3), np.uint8)
        stamped[...] = (n // 256, n % 256, 0)
        return ArrayPicture(stamped), ts

    def close(self) -> None:
        self._source.close()

    @staticmethod
    def index(frame: np.ndarray) -> int:
        colour = frame.reshape(-1, 3)
        assert (colour == colour[0]).all()
        return int(colour[0, 0]) * 256 + int(colour[0, 1])


class ClipRecorder(FakeBackend):
    """A FakeBackend that keeps a copy of every clip it is given (``(T, H, W, 3)`` uint8)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[np.ndarray] = []

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.seen.extend(np.array(c) for c in clips)
        return super().infer(clips)


def check_contract(events: list[dict]) -> None:
    assert [e["seq"] for e in events] == list(range(len(events)))
    for e in events:
        assert e.keys() >= CORE and isinstance(e["ts"], float)
    assert events[-1]["type"] == "stopped"
    assert {"frames", "windows", "drops"} <= events[-1].keys()
    for p in (e for e in events if e["type"] == "prediction"):
        for key in ("window_start", "window_end", "latency_ms", "inference_ms", "labels",
                    "scores", "raw_labels", "raw_scores"):
            assert key in p
        assert p["window_start"] <= p["window_end"] <= p["ts"]
        assert p["latency_ms"] == pytest.approx((p["ts"] - p["window_end"]) * 1000, abs=0.05)


def test_file_fast_pace_classifies_every_due_window(tmp_path: Path, tai_chi_clip: Path) -> None:
    backend = FakeBackend(labels=LABELS, script=[[0.1, 0.8, 0.1]])
    pipe, _ = build(tmp_path, lambda: open_source(str(tai_chi_clip)), backend, pace="fast")
    result = totals(pipe)
    events = read_events(tmp_path / "ev.jsonl")
    check_contract(events)
    preds = [e for e in events if e["type"] == "prediction"]
    # 10.0 s clip, 1.6 s windows every 0.8 s: the first is due at 1.57 s, then 10 more.
    assert result.frames == 300 and result.windows == len(preds) == 11
    assert result.drops == 0 and result.skipped_windows == 0
    starts = [e for e in events if e["type"] == "label_start"]
    assert [s["label"] for s in starts] == ["running"]  # after 2 consecutive wins
    assert preds[1]["stable_label"] == "running" and preds[0]["stable_label"] is None
    assert events[0]["type"] == "source_opened"
    ends = [e for e in events if e["type"] == "label_end"]
    assert len(ends) == 1 and ends[0]["seq"] == events[-1]["seq"] - 1  # closed before stopped


def test_inference_error_is_an_event_and_the_stream_goes_on(tmp_path: Path,
                                                             tai_chi_clip: Path) -> None:
    """One window's inference raises (as an out-of-memory would): an ``error`` event for that
    window, and every other window is still classified."""
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    backend = FakeBackend(labels=LABELS, script=[[0.1, 0.8, 0.1]], fail_on={3: oom})
    pipe, runner = build(tmp_path, lambda: open_source(str(tai_chi_clip)), backend,
                         pace="fast", backoff_jitter=0.35)
    assert runner.capture._backoff == (1.0, 30.0, 0.35)  # the config's jitter reaches capture
    result = totals(pipe)
    events = read_events(tmp_path / "ev.jsonl")
    check_contract(events)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["where"] == "inference"
    assert "out of memory" in errors[0]["message"]
    preds = [e for e in events if e["type"] == "prediction"]
    assert backend.calls == 11 and len(preds) == 10  # the other 10 of the 11 due windows
    assert preds[2]["seq"] < errors[0]["seq"] < preds[3]["seq"]
    assert result.frames == 300


def test_slow_model_keeps_latency_and_memory_bounded(tmp_path: Path) -> None:
    """A 1 s/clip model on a live 30 fps source: fewer, fresher windows, drops counted."""
    backend = FakeBackend(labels=LABELS, delay_s=1.0)
    pipe, runner = build(tmp_path, lambda: SyntheticSource(320, 240, 30.0, live=True), backend,
                         stride=0.2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = totals(pipe, duration_s=7.0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    events = read_events(tmp_path / "ev.jsonl")
    check_contract(events)
    preds = [e for e in events if e["type"] == "prediction"]
    assert 4 <= len(preds) <= 7
    assert result.skipped_windows > 10  # 0.2 s stride, 1 s per clip
    assert 190 <= result.frames <= 215  # capture never waited for inference
    assert len(runner.ring) <= runner.ring.capacity
    # each label is about one inference time old, never a growing queue
    assert max(p["latency_ms"] for p in preds) < 1000 + 400
    assert grown_mb < 100


def test_stop_is_prompt_even_mid_inference(tmp_path: Path) -> None:
    backend = FakeBackend(labels=LABELS, delay_s=0.6)
    pipe, _ = build(tmp_path, lambda: SyntheticSource(320, 240, 30.0, live=True), backend)
    pipe.start()
    time.sleep(2.5)
    t0 = time.monotonic()
    pipe.stop()
    assert time.monotonic() - t0 < 2.0
    assert read_events(tmp_path / "ev.jsonl")[-1]["type"] == "stopped"


def _wait_for_prediction(path: Path, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and '"prediction"' in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run exited early: {proc.communicate()[1]}")
        time.sleep(0.2)
    raise AssertionError("no prediction in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path: Path, tai_chi_clip: Path, sig: signal.Signals) -> None:
    events, video = tmp_path / "ev.jsonl", tmp_path / "out.mp4"
    with subprocess.Popen(
        [sys.executable, "-m", "streamclf", "run", "--source", str(tai_chi_clip), "--loop",
         "--weights", "random", "--events", str(events), "--output", str(video), "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        try:
            _wait_for_prediction(events, proc, 120)
            t0 = time.monotonic()
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
            elapsed = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    assert elapsed < 2.0 + 0.5  # the 2 s budget + interpreter exit
    log = read_events(events)
    check_contract(log)
    import cv2

    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count >= 30 and (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(
        cv2.CAP_PROP_FRAME_HEIGHT)) == (340, 256)


@pytest.mark.slow
def test_rtsp_live_run(tmp_path: Path) -> None:
    """A real RTSP server streams a real clip in a loop; `streamclf run` on it for ~20 s."""
    from tests.servers import rtsp_server_or_skip

    server = rtsp_server_or_skip(tmp_path)
    events, video = tmp_path / "ev.jsonl", tmp_path / "overlay.mp4"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "streamclf", "run", "--source", server.url, "--duration",
             "20", "--model", "x3d_xs", "--weights", "random", "--events", str(events),
             "--output", str(video), "--quiet", "--threads", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    log = read_events(events)
    check_contract(log)
    assert log[0]["type"] == "source_opened" and log[0]["is_live"] is True
    preds = [e for e in log if e["type"] == "prediction"]
    # x3d_xs: 1.6 s windows every 0.8 s -> about (20 - 1.6) / 0.8 + 1 = 24
    assert 18 <= len(preds) <= 25
    ends = np.array([p["window_end"] for p in preds])
    assert np.all(np.diff(ends) > 0) and np.all(np.diff([p["ts"] for p in preds]) > 0)
    assert np.median(np.diff(ends)) == pytest.approx(0.8, abs=0.1)
    assert all(0 < p["latency_ms"] < 3000 for p in preds)
    assert all(p["window_end"] - p["window_start"] == pytest.approx(1.6, abs=0.15)
               for p in preds)
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames >= 20 * 30 * 0.8
    stopped = log[-1]
    assert stopped["frames"] >= 20 * 30 * 0.9
    print(json.dumps({k: stopped[k] for k in ("frames", "windows", "drops")}))


@pytest.mark.parametrize("fps", [15, 60])
def test_window_span_is_time_based_on_real_clips(tmp_path: Path, tai_chi_clip: Path,
                                                 fps: int) -> None:
    """The same clip re-encoded at 15 and 60 fps gives windows of the same time span."""
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    clip = tmp_path / f"clip{fps}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tai_chi_clip), "-t", "5", "-r",
                    str(fps), "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
                   check=True, timeout=120)
    # The pipeline hands the model each window's frames only; the source below stamps each
    # frame's read index into its pixels, so the frames of a clip name their timestamps.
    stamps: list[float] = []
    backend = ClipRecorder(labels=LABELS)
    pipe, _ = build(tmp_path, lambda: StampedSource(open_source(str(clip)), stamps), backend,
                    pace="fast")
    pipe.run()
    # increasing, so capture took them as they are for the frames' ts (pace: fast)
    assert len(stamps) > 1 and np.all(np.diff(stamps) > 0)
    spans: list[float] = []
    for frames in backend.seen:
        assert len(frames) == 4  # x3d_xs takes 4 frames whatever the fps
        ts = [stamps[StampedSource.index(f)] for f in frames]
        spans.append(ts[-1] - ts[0])
    assert len(spans) >= 4
    # The frames of a 1.6 s window cover 1.6 s (first to last frame plus one frame
    # interval) to within one frame interval, at either frame rate.
    for span in spans:
        assert abs(span + 1.0 / fps - 1.6) <= 1.0 / fps + 1e-3


@pytest.mark.parametrize(("backend", "interval"), [("torch", 0.0005), ("openvino", None),
                                                   ("onnxruntime", None)])
def test_switch_interval_follows_the_backend(backend: str, interval: float | None) -> None:
    """torch holds the GIL op by op, so its streaming process hands the GIL over faster; the
    backends that release it for a whole clip keep the interpreter's default."""
    from streamclf.engine.runtime import _DEFAULT_SWITCH_INTERVAL_S, tune_switch_interval

    before = sys.getswitchinterval()
    try:
        tune_switch_interval(backend)
        assert sys.getswitchinterval() == pytest.approx(interval or _DEFAULT_SWITCH_INTERVAL_S)
    finally:
        sys.setswitchinterval(before)
