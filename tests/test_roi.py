"""Regions of interest (``roi`` of a stream): the pixel box of fractions and pixels on any
frame size, the ring's transform, the box on the overlay, one clear error for a box off the
frame, and parity: a live run with a roi gives the model exactly what a live run gives it on
the same file cropped beforehand (losslessly, in RGB)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf import ConfigError, Event, EventType, LivePipeline, RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.overlay import FakeSink, OverlayStatus, draw_overlay
from streamclf.media.preprocess import resize_and_crop
from streamclf.media.roi import Roi, crop_roi, resolve_roi, roi_transform
from streamclf.media.sources import open_source

YELLOW = (255, 210, 60)  # the overlay's box colour


@pytest.mark.parametrize(("roi", "size", "box"), [
    ((0.0, 0.0, 1.0, 1.0), (256, 340), (0, 0, 340, 256)),  # the whole frame
    ((0.25, 0.125, 0.5, 0.75), (256, 340), (85, 32, 255, 224)),
    ((0.25, 0.125, 0.5, 0.75), (720, 1280), (320, 90, 960, 630)),  # same fractions, HD
    ((0.0, 0.0, 0.5, 0.5), (257, 341), (0, 0, 171, 129)),  # odd sizes: halves round up ...
    ((0.5, 0.5, 0.5, 0.5), (257, 341), (171, 129, 341, 257)),  # ... so the halves tile
    ((1 / 3, 0.0, 1 / 3, 1.0), (5, 7), (2, 0, 5, 5)),  # 2.33 -> 2, 4.67 -> 5
    ((0.999, 0.999, 0.001, 0.001), (256, 340), (339, 255, 340, 256)),  # under 1 px: 1 px
    ((0.5, 0.5, 1e-4, 1e-4), (100, 100), (50, 50, 51, 51)),
    ((60, 16, 201, 215), (256, 340), (60, 16, 261, 231)),  # pixels, odd width and height
    ((200, 100, 500, 500), (256, 340), (200, 100, 340, 256)),  # past the edge: clamped
    ((339, 255, 10, 10), (256, 340), (339, 255, 340, 256)),  # the last pixel
    ((10.4, 10.5, 20.2, 20.0), (256, 340), (10, 11, 31, 31)),  # edges rounded, halves up
    ((2, 0, 0.2, 1), (4, 4), (2, 0, 3, 1)),  # pixels (one value > 1) under 1 px: 1 px
])
def test_the_box_of_fractions_and_pixels(roi: Roi, size: tuple[int, int],
                                         box: tuple[int, int, int, int]) -> None:
    assert resolve_roi(roi, *size) == box


@pytest.mark.parametrize("roi", [(340, 0, 10, 10), (0, 256, 5, 5), (400, 300, 2, 2),
                                 (1000, 2, 50, 50)])
def test_a_pixel_box_outside_the_frame_is_a_config_error(roi: Roi) -> None:
    with pytest.raises(ConfigError, match=r"outside the 340x256 frame: x must be below 340"):
        resolve_roi(roi, 256, 340)
    frame = np.zeros((256, 340, 3), np.uint8)
    with pytest.raises(ConfigError, match="outside"):
        roi_transform(roi, 182, 182)(frame)


@pytest.mark.parametrize("roi", [(339, 0, 50, 256), (0.999, 0.0, 0.5, 1.0), (0, 0, 340, 5)])
def test_a_box_clamped_to_a_thin_strip_is_refused(roi: Roi) -> None:
    """A box cut down to a strip by the frame's edge would be scaled up to the model's short
    side: a 1x256 strip costs ~25 MB a frame. At most 32:1."""
    with pytest.raises(ConfigError, match=r"strip of the 340x256 frame; .* at most 32:1"):
        resolve_roi(roi, 256, 340)
    assert resolve_roi((0, 0, 320, 10), 256, 340) == (0, 0, 320, 10)  # 32:1 is fine


def test_an_empty_frame_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="0x10"):
        resolve_roi((0.0, 0.0, 1.0, 1.0), 10, 0)


@pytest.fixture(scope="module")
def frame(tai_chi_clip: Path) -> np.ndarray:
    source = open_source(str(tai_chi_clip))
    try:
        got = source.read(5.0)
    finally:
        source.close()
    assert got is not None
    return got[0].rgb()


def test_crop_is_a_view_of_the_box(frame: np.ndarray) -> None:
    region = crop_roi(frame, (60, 16, 201, 215))
    assert region.shape == (215, 201, 3) and np.shares_memory(region, frame)
    np.testing.assert_array_equal(region, frame[16:231, 60:261])


@pytest.mark.parametrize("roi", [(60, 16, 201, 215), (0.25, 0.125, 0.5, 0.75),
                                 (200, 100, 500, 500)])
def test_the_transform_preprocesses_the_region_as_a_whole_frame(frame: np.ndarray,
                                                                roi: Roi) -> None:
    x0, y0, x1, y1 = resolve_roi(roi, *frame.shape[:2])
    region = np.ascontiguousarray(frame[y0:y1, x0:x1])  # a file holding only the region
    out = roi_transform(roi, 182, 182)(frame)
    assert out.shape == (182, 182, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, resize_and_crop(region, 182, 182))
    assert not np.array_equal(out, resize_and_crop(frame, 182, 182))
    np.testing.assert_array_equal(roi_transform(None, 182, 182)(frame),
                                  resize_and_crop(frame, 182, 182))


def test_the_overlay_draws_the_box_under_the_panel() -> None:
    image = np.full((480, 640, 3), 128, np.uint8)
    plain = draw_overlay(image, OverlayStatus())
    for roi in [(400, 300, 200, 150), (0.625, 0.625, 0.3125, 0.3125)]:  # the same box
        out = draw_overlay(image, OverlayStatus(roi=roi))
        assert (out[300, 400:600] == YELLOW).all() and (out[449, 400:600] == YELLOW).all()
        assert (out[300:450, 400] == YELLOW).all() and (out[300:450, 599] == YELLOW).all()
        inside, outside = (slice(302, 448), slice(402, 598)), (slice(452, 480), slice(None))
        np.testing.assert_array_equal(out[inside], image[inside])
        np.testing.assert_array_equal(out[outside], plain[outside])
    off = draw_overlay(image, OverlayStatus(roi=(700, 0, 10, 10)))  # off this frame: no box
    np.testing.assert_array_equal(off, plain)


def _fake() -> FakeBackend:
    return FakeBackend(labels=[f"c{i}" for i in range(400)], script=[[1.0] + [0.0] * 399])


def test_a_box_off_the_frame_ends_its_stream_with_one_error(
        tai_chi_clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pixel box past the source's frame: the stream ends at its first frame with one
    ``error`` naming the box and the frame (no traceback logged); the other stream runs."""
    events: list[Event] = []
    clip = str(tai_chi_clip)
    cfg = RunConfig(streams=[StreamConfig(id="off", source=clip, pace="fast",
                                          roi=(400, 0, 50, 50)),
                             StreamConfig(id="ok", source=clip, pace="fast")])
    with caplog.at_level(logging.INFO), LivePipeline(cfg, sinks=[events.append],
                                                     backend=_fake()) as pipe:
        assert pipe.join(timeout_s=60)
    off = [e for e in events if e.stream == "off"]
    assert [e.type for e in off] == [EventType.SOURCE_OPENED, EventType.ERROR,
                                     EventType.STOPPED]
    message = ("roi [400, 0, 50, 50] (pixels) lies outside the 340x256 frame: x must be "
               "below 340 and y below 256")
    assert off[1].fields["error"] == message
    assert pipe.result.streams["off"].error == message
    assert pipe.result.streams["off"].windows == 0
    assert pipe.result.streams["ok"].windows == 11 and pipe.result.exit_code == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_live_overlay_shows_the_box(tai_chi_clip: Path) -> None:
    sink = FakeSink()
    cfg = RunConfig(streams=[StreamConfig(id="cam0", source=str(tai_chi_clip), pace="fast",
                                          roi=(0.25, 0.125, 0.5, 0.75))])
    with LivePipeline(cfg, backend=_fake(), frame_sinks=lambda _id, _health: [sink]) as pipe:
        assert pipe.join(timeout_s=60)
    frames = sink.frames
    assert len(frames) > 10
    for out in frames:  # box (85, 32)-(254, 223); its bottom edge lies below the panel
        assert (out[223, 85:255] == YELLOW).all() and (out[100:224, 254] == YELLOW).all()


class _Recording:
    """Delegates to ``backend`` and keeps every clip it was given and the scores returned."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.labels, self.name = backend, backend.labels, backend.name
        self.clips: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self.backend.infer(clips)
        self.clips.extend(np.array(c) for c in clips)
        self.probs.extend(np.array(p) for p in probs)
        return probs, feats


def _live(source: Path, roi: Roi | None, backend: Any) -> _Recording:
    recording = _Recording(backend)
    cfg = RunConfig(streams=[StreamConfig(id="cam0", source=str(source), pace="fast",
                                          roi=roi)])
    with LivePipeline(cfg, backend=recording) as pipe:
        assert pipe.join(timeout_s=300)
    assert pipe.result.streams["cam0"].error is None
    return recording


def _decode(path: Path) -> list[tuple[np.ndarray, float]]:
    source = open_source(str(path))
    frames: list[tuple[np.ndarray, float]] = []
    try:
        while (got := source.read(5.0)) is not None:
            frames.append((got[0].rgb(), got[1]))
    finally:
        source.close()
    return frames


def _crop_losslessly(src: Path, box: tuple[int, int, int, int], out: Path) -> Path:
    """``src`` as streamclf decodes it (RGB), cut to ``box``, encoded with libx264rgb at
    ``qp 0`` in RGB (``rgb24``) with the source's timestamps; checked bit-exact after
    decoding. (H.264 in YUV is not: the RGB -> YUV -> RGB round trip moves pixels.)"""
    av = pytest.importorskip("av")
    x0, y0, x1, y1 = box
    frames = _decode(src)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264rgb", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = x1 - x0, y1 - y0, "rgb24"
        stream.options = {"qp": "0"}
        stream.time_base = Fraction(1, 30000)
        for image, ts in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[y0:y1, x0:x1]),
                                               format="rgb24")
            frame.pts, frame.time_base = round(ts * 30000), Fraction(1, 30000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    cropped = _decode(out)
    assert len(cropped) == len(frames) == 300
    for (got, got_ts), (image, ts) in zip(cropped, frames, strict=True):
        assert got_ts == ts and np.array_equal(got, image[y0:y1, x0:x1])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("roi", [(60, 16, 201, 215), (0.25, 0.125, 0.5, 0.75)],
                         ids=["pixels-odd-downscaled", "fractions-upscaled"])
def test_a_roi_run_equals_a_run_on_the_file_cropped_beforehand(
        tai_chi_clip: Path, sensitive_backend: Any, tmp_path: Path, roi: Roi) -> None:
    cropped = _crop_losslessly(tai_chi_clip, resolve_roi(roi, 256, 340), tmp_path / "c.mp4")
    with_roi = _live(tai_chi_clip, roi, sensitive_backend)
    precropped = _live(cropped, None, sensitive_backend)
    assert len(with_roi.clips) == len(precropped.clips) == 11  # the same windows ...
    for got, want in zip(with_roi.clips, precropped.clips, strict=True):
        np.testing.assert_array_equal(got, want)  # ... of the same model inputs
    for got, want in zip(with_roi.probs, precropped.probs, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert len({int(np.argmax(p)) for p in with_roi.probs}) > 1  # scores follow the frames
