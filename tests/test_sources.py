"""Frame sources against real servers (GStreamer RTSP, stdlib MJPEG), files and fakes."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.errors import SourceError
from streamclf.masking import mask_credentials
from streamclf.media.sources import (
    FakeSource,
    FrameSource,
    OpenCVSource,
    SyntheticSource,
    open_source,
    parse_spec,
    synthetic_index,
)
from tests.servers import MjpegServer, RtspServer, rtsp_server_or_skip

pytestmark = pytest.mark.timeout(60)
SECRET = "s3cr3tPW"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def rtsp(workdir: Path) -> Iterator[RtspServer]:
    server = rtsp_server_or_skip(workdir)
    yield server
    server.close()


@pytest.fixture(scope="module")
def mjpeg() -> Iterator[MjpegServer]:
    import cv2

    src = SyntheticSource(160, 120, 30.0)
    jpegs = []
    for _ in range(60):
        picture, _ts = src.read(1.0)  # type: ignore[misc]
        ok, buf = cv2.imencode(".jpg", picture.rgb()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        jpegs.append(buf.tobytes())
    with MjpegServer(jpegs, fps=30.0) as server:
        yield server


def read_n(source: FrameSource, n: int) -> tuple[list[np.ndarray], list[float]]:
    images, stamps = [], []
    for _ in range(n):
        got = source.read(5.0)
        assert got is not None
        images.append(got[0].rgb())
        stamps.append(got[1])
    return images, stamps


def test_rtsp_tcp_reads_frames_with_increasing_timestamps(rtsp: RtspServer) -> None:
    env_before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    t0 = time.monotonic()
    src = open_source(rtsp.url)
    try:
        opened = time.monotonic() - t0
        assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") == env_before  # restored
        assert isinstance(src, FrameSource)
        assert src.info.kind == "rtsp" and src.info.is_live
        assert src.info.fps == pytest.approx(30.0, abs=1.0)
        assert (src.info.width, src.info.height) == (340, 256)
        read_n(src, 5)  # let the stream settle before timing it
        t1 = time.monotonic()
        images, stamps = read_n(src, 45)
        rate = 44 / (time.monotonic() - t1)
    finally:
        src.close()
    print(f"\nRTSP/TCP: open {opened:.3f} s, {rate:.1f} fps read, declared {src.info.fps}")
    assert opened < 5.0
    assert all(im.shape == (256, 340, 3) and im.dtype == np.uint8 for im in images)
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert np.diff(stamps).mean() == pytest.approx(1 / 30, rel=0.1)
    assert 20.0 < rate < 45.0  # served in real time, not as a burst
    with pytest.raises(SourceError, match="closed"):
        src.read(1.0)


def test_rtsp_transport_is_selectable(workdir: Path) -> None:
    server = rtsp_server_or_skip(workdir, tcp_only=True)
    try:
        with pytest.raises(SourceError, match=r"cannot open rtsp source"):
            open_source(server.url, transport="udp", open_timeout_ms=3000)
        src = open_source(server.url)  # TCP by default
        assert src.read(5.0) is not None
        src.close()
    finally:
        server.close()


def test_rtsp_url_with_credentials_is_masked(rtsp: RtspServer) -> None:
    url = rtsp.url.replace("rtsp://", f"rtsp://admin:{SECRET}@")
    src = open_source(url)
    try:
        assert src.info.name == rtsp.url.replace("rtsp://", "rtsp://admin:***@")
        assert src.read(5.0) is not None
    finally:
        src.close()


def test_unreachable_rtsp_fails_fast_without_leaking_password(
    capfd: pytest.CaptureFixture[str],
) -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        open_source(f"rtsp://admin:{SECRET}@127.0.0.1:9/x", open_timeout_ms=2000)
    assert time.monotonic() - t0 < 4.0
    assert SECRET not in str(err.value) and "admin:***@" in str(err.value)
    out, errout = capfd.readouterr()
    assert SECRET not in out + errout  # nor in FFmpeg's/OpenCV's own log lines


def test_mjpeg_over_http(mjpeg: MjpegServer) -> None:
    src = open_source(mjpeg.url)
    try:
        assert src.info.kind == "http" and src.info.is_live
        t0 = time.monotonic()
        images, stamps = read_n(src, 30)
        rate = 29 / (time.monotonic() - t0)
    finally:
        src.close()
    print(f"\nMJPEG: {rate:.1f} fps read")
    assert images[0].shape == (120, 160, 3) and images[0].dtype == np.uint8
    indices = [synthetic_index(im) for im in images]
    assert all((b - a) % 60 == 1 for a, b in itertools.pairwise(indices))
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_file_source_reads_to_a_clean_end(tai_chi_clip: Path) -> None:
    src = open_source(str(tai_chi_clip))
    assert src.info == src.info.__class__(str(tai_chi_clip), "file", src.info.fps, 340, 256, False)
    assert src.info.fps == pytest.approx(29.97, abs=0.01)
    stamps = []
    while (got := src.read(5.0)) is not None:
        stamps.append(got[1])
    assert len(stamps) == 300 and stamps[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert src.read(5.0) is None  # stays at the end
    src.close()
    src.close()  # idempotent


def test_synthetic_source_is_deterministic_and_numbered() -> None:
    a, b = SyntheticSource(64, 48, 25.0, frames=5), open_source("synthetic:64x48@25", frames=5)
    assert b.info.name == "synthetic:64x48@25" and b.info.fps == 25.0 and not b.info.is_live
    for n in range(5):
        (pa, ta), (pb, tb) = a.read(1.0), b.read(1.0)  # type: ignore[misc]
        ia, ib = pa.rgb(), pb.rgb()
        assert ia.shape == (48, 64, 3) and ia.dtype == np.uint8
        assert np.array_equal(ia, ib) and synthetic_index(ia) == n and ta == tb == n / 25.0
    assert a.read(1.0) is None
    first, second = SyntheticSource(64, 48).read(1.0), SyntheticSource(64, 48).read(1.0)
    assert first is not None and second is not None and np.array_equal(
        first[0].rgb(), second[0].rgb())


def test_live_synthetic_source_paces_and_close_wakes_it() -> None:
    src = SyntheticSource(32, 16, 50.0, live=True)
    t0 = time.monotonic()
    read_n(src, 11)
    assert 0.17 < time.monotonic() - t0 < 0.6
    slow = SyntheticSource(32, 16, 0.5, live=True)
    slow.read(1.0)
    threading.Timer(0.1, slow.close).start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="closed"):
        slow.read(5.0)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (0, ("webcam", 0)),
        ("0", ("webcam", 0)),
        (" 2 ", ("webcam", 2)),
        ("/dev/video0", ("webcam", "/dev/video0")),
        ("rtsp://cam/live", ("rtsp", "rtsp://cam/live")),
        ("RTSPS://cam/live", ("rtsp", "RTSPS://cam/live")),
        ("http://cam/video.mjpg", ("http", "http://cam/video.mjpg")),
        ("https://cam/x", ("http", "https://cam/x")),
        ("synthetic", ("synthetic", "synthetic")),
        ("synthetic:640x480@30", ("synthetic", "synthetic:640x480@30")),
        ("clips/a.mp4", ("file", "clips/a.mp4")),
        ("file:///data/a.mp4", ("file", "/data/a.mp4")),
    ],
)
def test_parse_spec(spec: str | int, expected: tuple[str, Any]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("ftp://host/clip.mp4", {}, "unsupported URL scheme 'ftp'"),
        (f"ftp://bob:{SECRET}@host/x", {}, "bob:\\*\\*\\*@host"),
        ("/nonexistent/clip.mp4", {}, "file not found"),
        ("synthetic:abc", {}, "bad synthetic spec"),
        ("synthetic:8x8@30", {}, "a width of 24 to 7680"),
        ("tests/data/README.md", {}, "not a readable video"),
        ("rtsp://127.0.0.1:9/x", {"transport": "quic"}, "bad RTSP transport 'quic'"),
    ],
)
def test_open_source_errors(spec: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message) as err:
        open_source(spec, **options)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("spec", [0, "7", "/dev/video7"])
def test_absent_webcam_fails_quickly(spec: str | int) -> None:
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a camera")
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open webcam source"):
        open_source(spec)
    assert time.monotonic() - t0 < 2.0


def test_webcam_path_through_a_fake_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    calls: list[tuple[Any, ...]] = []

    class FakeCapture:
        def __init__(self, *args: Any) -> None:
            calls.append(args)
            self.n = 0

        def isOpened(self) -> bool:
            return True

        def get(self, prop: int) -> float:
            return {cv2.CAP_PROP_FPS: 15.0, cv2.CAP_PROP_FRAME_WIDTH: 8.0,
                    cv2.CAP_PROP_FRAME_HEIGHT: 4.0}.get(prop, 0.0)  # POS_MSEC stays 0

        def read(self) -> tuple[bool, np.ndarray]:
            self.n += 1
            bgr = np.zeros((4, 8, 3), np.uint8)
            bgr[..., 0] = self.n  # blue channel
            return True, bgr

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    src = open_source("1")
    assert calls == [(1, cv2.CAP_V4L2)]
    assert src.info.kind == "webcam" and src.info.is_live and src.info.fps == 15.0
    images, stamps = read_n(src, 3)
    assert [int(im[0, 0, 2]) for im in images] == [1, 2, 3]  # BGR -> RGB
    assert stamps == pytest.approx([0.0, 1 / 15, 2 / 15])  # forced increasing
    src.close()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://user:pass@host/x", "rtsp://user:***@host/x"),
        ("rtsp://user:p@ss:w@host:554/x?a=1", "rtsp://user:***@host:554/x?a=1"),
        ("rtsp://user@host/x", "rtsp://user@host/x"),
        ("rtsp://host/x@y", "rtsp://host/x@y"),
        ("rtsp://admin:pa/ss#1?@cam:554/live", "rtsp://admin:***@cam:554/live"),
        ("source 'rtsp://u:s3cr@t/x@cam/1' lost", "source 'rtsp://u:***@cam/1' lost"),
        ("http://cam/v.mjpg?user=a&pwd=secret&fps=5", "http://cam/v.mjpg?user=a&pwd=***&fps=5"),
        ("lost rtsp://a:b@h/1 and http://c:d@h/2", "lost rtsp://a:***@h/1 and http://c:***@h/2"),
        ("clips/a.mp4", "clips/a.mp4"),
        ("rtsp://alice:my secret@host/x", "rtsp://alice:***@host/x"),  # a space in it
        ("classify rtsp://alice:secret@host/x.mp4: cannot open",
         "classify rtsp://alice:***@host/x.mp4: cannot open"),
        ("rtsp://cam:554/x failed, ask admin@site.org",  # prose after a URL: untouched
         "rtsp://cam:554/x failed, ask admin@site.org"),
        ("a\nrtsp://u:p@h/1\nmail b@c", "a\nrtsp://u:***@h/1\nmail b@c"),
        ("://x:y@z", "://x:y@z"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_masking_is_linear_in_the_length() -> None:
    """A 60 KB hostile source once took ~3 s with the interpreter lock held (a backtracking
    pattern), freezing every stream. Ten times the text must cost about ten times the time,
    not a hundred: best of three, generous bound."""
    def cost(n: int, make: Callable[[int], str]) -> float:
        text = make(n)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            mask_credentials(text)
            best = min(best, time.perf_counter() - t0)
        return best

    for make in (lambda n: "rtsp://" + "a:" * (n // 2), lambda n: "rtsp://u:" + "x" * n,
                 lambda n: "a" * n + "://", lambda n: ":" * n + "@",
                 lambda n: "rtsp://a:b " * (n // 10), lambda n: "?password=" * (n // 10)):
        small, big = cost(20_000, make), cost(200_000, make)
        assert big < 30 * max(small, 1e-4), (make(20)[:20], small, big)
        assert mask_credentials(make(60_000)).count("\n") == 0


def test_fake_source_script() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    src = FakeSource([img, SourceError("boom"), img, None], fps=10.0)
    assert src.read(1.0)[1] == 0.0  # type: ignore[index]
    with pytest.raises(SourceError, match="boom"):
        src.read(1.0)
    assert src.read(1.0)[1] == 0.1  # type: ignore[index]
    assert src.read(1.0) is None
    blocked = FakeSource(end="block")
    threading.Timer(0.1, blocked.close).start()
    with pytest.raises(SourceError):
        blocked.read(1.0)


def test_close_from_another_thread_is_safe(tai_chi_clip: Path) -> None:
    src = OpenCVSource(str(tai_chi_clip))
    done = threading.Event()

    def reader() -> None:
        try:
            while src.read(1.0) is not None:
                pass
        except SourceError:
            done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.05)
    src.close()
    thread.join(5.0)
    assert done.is_set() and not thread.is_alive()


@pytest.mark.parametrize(("spec", "needle"), [
    ("synthetic:64x64@100000", "at most 240"),  # once a MemoryError (a 60 GB ring)
    ("synthetic:100000x64@30", "bad synthetic spec"),
    ("synthetic:" + "9" * 5000 + "x1", "bad synthetic spec"),
    ("synthetic:8000x64@30", "a width of 24 to 7680"),
    ("synthetic:64x64@0", "fps above 0"),
])
def test_synthetic_sizes_and_rates_are_bounded(spec: str, needle: str) -> None:
    with pytest.raises(SourceError, match=needle) as info:
        open_source(spec)
    assert len(str(info.value)) < 200
