"""Overlay drawing, video/window/fake sinks and the non-blocking renderer thread."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf._lazy import cv2_module
from streamclf.errors import DataError, StreamclfError
from streamclf.live import overlay
from streamclf.live.overlay import (
    FakeSink,
    OverlayRenderer,
    OverlayStatus,
    VideoFileSink,
    WindowSink,
    draw_overlay,
)
from streamclf.types import Prediction

STATUS = OverlayStatus(
    labels=("tai chi", "dancing ballet", "stretching arm", "yoga", "playing ice hockey"),
    scores=(0.81, 0.07, 0.05, 0.03, 0.01), stable_label="tai chi", input_fps=29.97,
    inference_fps=8.3, latency_ms=143.2, drops=12, stream="rtsp://***@cam1/stream",
)


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h * w)
    return rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("h", "w"), [(240, 320), (480, 640), (720, 1280), (1080, 1920)])
def test_draw_returns_new_annotated_array(h: int, w: int) -> None:
    image = _image(h, w)
    before = image.copy()
    out = draw_overlay(image, STATUS)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    panel = (slice(int(0.05 * h), int(0.3 * h)), slice(int(0.03 * w), int(0.25 * w)))
    changed = np.any(out[panel] != image[panel], axis=-1).mean()
    assert changed > 0.9  # the panel darkens (and writes over) the top-left corner
    corner = (slice(h - h // 5, h), slice(w - w // 5, w))
    np.testing.assert_array_equal(out[corner], image[corner])  # the rest is left alone


def test_panel_is_semi_transparent() -> None:
    image = np.full((480, 640, 3), 200, np.uint8)
    out = draw_overlay(image, OverlayStatus())
    background = out[:200, :200][np.all(out[:200, :200] < 200, axis=-1)]
    assert background.size and 0 < int(np.median(background)) < 120  # darker, not black


def test_draw_handles_empty_and_odd_values() -> None:
    odd = OverlayStatus(labels=("só", "b" * 300), scores=(math.nan, 1.7), input_fps=math.inf,
                        inference_fps=None, latency_ms=math.nan, drops=0, stream="")
    for status in (OverlayStatus(), odd):
        assert draw_overlay(_image(240, 320), status).shape == (240, 320, 3)


def test_tiny_image_is_returned_unannotated() -> None:
    image = _image(20, 30)
    out = draw_overlay(image, STATUS)
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.mark.parametrize("bad", [np.zeros((240, 320), np.uint8),
                                 np.zeros((240, 320, 4), np.uint8),
                                 np.zeros((240, 320, 3), np.float32), [[1, 2, 3]]])
def test_draw_rejects_bad_images(bad: Any) -> None:
    with pytest.raises(StreamclfError, match="uint8 RGB"):
        draw_overlay(bad, STATUS)


def test_status_from_prediction() -> None:
    pred = Prediction("cam0", 10.0, 12.0, 12.25, 5.0, ("a",), (0.9,), ("a",), (0.8,),
                      np.zeros(4, np.float32), "a")
    st = OverlayStatus.from_prediction(pred, input_fps=30.0, inference_fps=4.0, drops=2)
    assert st.labels == ("a",) and st.stable_label == "a" and st.stream == "cam0"
    assert st.latency_ms == pytest.approx(250.0) and st.drops == 2


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_video_file_sink_roundtrip(tmp_path: Path, ext: str) -> None:
    cv2 = cv2_module()
    path = tmp_path / "sub" / f"out.{ext}"
    sink = VideoFileSink(path, fps=15.0, size=(160, 120))
    for i in range(12):
        size = (120, 160) if i % 2 else (240, 320)  # other sizes are resized
        sink.write(draw_overlay(np.full((*size, 3), 20 * i, np.uint8), STATUS))
    sink.close()
    sink.close()
    assert sink.frames_written == 12
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 12
    assert all(f.shape == (120, 160, 3) for f in frames)
    with pytest.raises(DataError, match="after close"):
        sink.write(np.zeros((120, 160, 3), np.uint8))


def test_video_file_sink_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\.mp4 or \.avi"):
        VideoFileSink(tmp_path / "out.mkv", fps=30.0, size=(64, 48))
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(DataError, match="cannot open"):
        VideoFileSink(tmp_path / "dir.mp4", fps=30.0, size=(64, 48))
    with pytest.raises(StreamclfError, match="fps"):
        VideoFileSink(tmp_path / "a.mp4", fps=0.0, size=(64, 48))
    with pytest.raises(StreamclfError, match="size"):
        VideoFileSink(tmp_path / "a.mp4", fps=30.0, size=(64, 0))


def test_window_sink_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(StreamclfError, match="DISPLAY"):
        WindowSink("view")


class _FakeCv2:
    """The few cv2 calls WindowSink makes (method names are cv2's)."""

    WINDOW_NORMAL, COLOR_RGB2BGR = 0, 4

    def __init__(self, gui: bool, key: int = -1) -> None:
        self.gui, self.key = gui, key
        self.calls: list[tuple[str, str]] = []

    def namedWindow(self, title: str, flags: int) -> None:
        if not self.gui:
            raise RuntimeError("The function is not implemented. Rebuild the library")
        self.calls.append(("namedWindow", title))

    def imshow(self, title: str, image: np.ndarray) -> None:
        self.calls.append(("imshow", title))

    def waitKey(self, delay: int) -> int:
        return self.key

    def cvtColor(self, image: np.ndarray, code: int) -> np.ndarray:
        return image[..., ::-1]

    def destroyWindow(self, title: str) -> None:
        self.calls.append(("destroyWindow", title))


def test_window_sink_with_fake_gui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    headless = _FakeCv2(gui=False)
    monkeypatch.setattr(overlay, "cv2_module", lambda: headless)
    with pytest.raises(StreamclfError, match="no GUI support"):
        WindowSink("view")

    gui = _FakeCv2(gui=True, key=ord("q"))
    monkeypatch.setattr(overlay, "cv2_module", lambda: gui)
    quits: list[bool] = []
    sink = WindowSink("view", on_quit=lambda: quits.append(True))
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert gui.calls == [("namedWindow", "view"), ("imshow", "view"), ("destroyWindow", "view")]
    assert quits == [True]


@pytest.mark.timeout(20)
def test_renderer_never_blocks_and_counts_drops() -> None:
    slow = FakeSink(delay_s=0.05)
    renderer = OverlayRenderer([slow]).start()
    image = _image(240, 320)
    t0 = time.monotonic()
    for _ in range(1000):
        renderer.submit(image, STATUS)
    submit_s = time.monotonic() - t0
    assert submit_s < 0.5  # 1000 submits while the sink takes 50 ms a frame
    t0 = time.monotonic()
    assert renderer.stop(timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0
    assert renderer.drops > 900
    assert renderer.rendered + renderer.drops == 1000  # every frame drawn or counted
    assert len(slow.frames) == renderer.rendered and slow.closed
    assert renderer.errors == 0


@pytest.mark.timeout(20)
def test_renderer_draws_what_was_queued() -> None:
    sink = FakeSink()
    renderer = OverlayRenderer([sink], queue_size=4)
    for i in range(4):
        renderer.submit(np.full((120, 160, 3), i, np.uint8), STATUS)
    assert renderer.stop()  # never started: stop drains the queue, then closes
    assert len(sink.frames) == 4 and sink.closed and renderer.drops == 0
    assert sink.frames[0].shape == (120, 160, 3)
    renderer.submit(np.zeros((120, 160, 3), np.uint8), STATUS)  # after stop: dropped
    assert renderer.drops == 1
    assert renderer.stop()  # idempotent


@pytest.mark.timeout(20)
def test_failing_sink_is_removed_and_reported() -> None:
    good, bad = FakeSink(), FakeSink(fail_at=1)  # bad fails from its 2nd write
    messages: list[str] = []
    renderer = OverlayRenderer([bad, good], on_error=messages.append, queue_size=8)
    for _ in range(5):
        renderer.submit(_image(120, 160), STATUS)
    renderer.start()
    assert renderer.stop()
    assert len(good.frames) == 5 and len(bad.frames) == 1
    assert renderer.errors == 1 and renderer.active_sinks == 0  # all closed at stop
    assert bad.closed and good.closed
    assert len(messages) == 1 and "FakeSink failed" in messages[0] and "fake sink" in messages[0]


@pytest.mark.timeout(20)
def test_stop_returns_in_time_with_a_stuck_sink() -> None:
    stuck = FakeSink(delay_s=1.0)
    messages: list[str] = []
    renderer = OverlayRenderer([stuck], on_error=messages.append).start()
    renderer.submit(_image(120, 160), STATUS)
    renderer.submit(_image(120, 160), STATUS)
    deadline = time.monotonic() + 5
    while stuck.writes == 0 and time.monotonic() < deadline:  # wait for the first write
        time.sleep(0.01)
    t0 = time.monotonic()
    assert renderer.stop(timeout_s=0.3) is False
    assert time.monotonic() - t0 < 0.8
    assert "did not stop" in messages[-1]
    renderer._thread.join(timeout=5)  # the stuck write ends; queued frames are dropped
    assert stuck.closed and renderer.drops == 1 and len(stuck.frames) == 1


def test_bad_frame_is_counted_not_fatal() -> None:
    sink = FakeSink()
    messages: list[str] = []
    renderer = OverlayRenderer([sink], on_error=messages.append, queue_size=4)
    renderer.submit(np.zeros((10, 10), np.uint8), STATUS)
    renderer.submit(_image(120, 160), STATUS)
    assert renderer.stop()
    assert renderer.errors == 1 and len(sink.frames) == 1 and "cannot draw" in messages[0]


def test_on_error_callback_failure_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def boom(message: str) -> None:
        raise RuntimeError("callback bug")

    renderer = OverlayRenderer([FakeSink(fail_at=0)], on_error=boom)
    renderer.submit(_image(120, 160), STATUS)
    assert renderer.stop()
    assert renderer.errors == 1
    assert "on_error callback failed" in caplog.text


def test_queue_size_validated() -> None:
    with pytest.raises(StreamclfError, match="queue_size"):
        OverlayRenderer([], queue_size=0)
