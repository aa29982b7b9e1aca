"""PyAV decoding (media/av_source.py, media/picture.py): the frames, times and errors of real
files and a real RTSP server, and the live engine converting only what windows sample."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from streamclf import LivePipeline, RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.errors import ConfigError, SourceError
from streamclf.media.av_source import AVDecoder, PyAVSource
from streamclf.media.picture import ArrayPicture, AVPicture
from streamclf.media.sources import OpenCVSource, open_source
from tests.conftest import LOCAL_DATA, shared_data_or_skip
from tests.servers import RtspServer, rtsp_server_or_skip

pytestmark = pytest.mark.timeout(120)


def _all(source: object) -> tuple[list[np.ndarray], list[float]]:
    images, stamps = [], []
    try:
        while (got := source.read(5.0)) is not None:  # type: ignore[attr-defined]
            images.append(got[0].rgb())
            stamps.append(got[1])
    finally:
        source.close()  # type: ignore[attr-defined]
    return images, stamps


@pytest.mark.parametrize("name", [
    "mmaction2__tests_data_test.avi",  # MPEG-4 with packed B-frames: timed by DTS
    "unusual/decord__video_90.mov",  # display rotation
    "unusual/decord__unordered.mov",  # out-of-order timestamps
    "kinetics-i3d__v_CricketShot_g04_c01_rgb.gif",
    "torchvision__hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi",  # bad metadata
    "mmaction2__demo_demo_skeleton.mp4",  # 1080p, a frame rate OpenCV reads as 28.05
])
def test_pyav_gives_what_opencv_gave(name: str) -> None:
    """Pixels, timestamps, size, rate and aspect are OpenCV's, on real files."""
    path = shared_data_or_skip() / "videos" / name
    ours = PyAVSource(str(path))
    theirs = OpenCVSource(str(path), kind="file")
    assert (ours.info.width, ours.info.height, ours.info.sar) == (
        theirs.info.width, theirs.info.height, theirs.info.sar)
    assert ours.info.fps == pytest.approx(theirs.info.fps)
    a, ta = _all(ours)
    b, tb = _all(theirs)
    assert len(a) == len(b) > 0
    assert ta == pytest.approx(tb, abs=1e-6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_open_source_picks_the_decoder() -> None:
    clip = str(LOCAL_DATA / "ta_chi.mp4")
    auto = open_source(clip)
    cv = open_source(clip, decoder="opencv")
    try:
        assert isinstance(auto, PyAVSource) and isinstance(cv, OpenCVSource)
        got = auto.read(5.0)
        assert got is not None and isinstance(got[0], AVPicture)
        # YUV 4:2:0 as decoded (its rows padded for SIMD), not RGB
        assert 340 * 256 * 3 // 2 <= got[0].nbytes < 340 * 256 * 3
        other = cv.read(5.0)
        assert other is not None and isinstance(other[0], ArrayPicture)
    finally:
        auto.close()
        cv.close()
    with pytest.raises(SourceError, match="bad decoder 'vlc'"):
        open_source(clip, decoder="vlc")
    with pytest.raises(ConfigError, match="decoder"):
        StreamConfig(source=clip, decoder="vlc")


def test_corrupt_file_is_told_from_its_end() -> None:
    """The frames before the damage come out, then a corrupt-file error (OpenCV only stops)."""
    source = PyAVSource(str(LOCAL_DATA / "corrupted.mp4"))
    frames = 0
    with pytest.raises(SourceError, match=r"corrupt or truncated video: damaged data after 2\.7"):
        while source.read(5.0) is not None:
            frames += 1
    source.close()
    assert frames == 28


def test_truncated_and_bad_files(tmp_path: Path) -> None:
    data = (LOCAL_DATA / "ta_chi.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"corrupt or truncated|not a readable video"):
        source = PyAVSource(str(cut))
        try:
            while source.read(5.0) is not None:
                pass
        finally:
            source.close()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n")
    for name, message in (("missing.mp4", "file not found"), ("empty.mp4", "empty file"),
                          ("text.mp4", "not a readable video")):
        with pytest.raises(SourceError, match=message) as info:
            PyAVSource(str(tmp_path / name))
        assert "\n" not in str(info.value)


def test_data_end_reads_packets_only(tmp_path: Path) -> None:
    clip = AVDecoder(str(LOCAL_DATA / "ta_chi.mp4"), prime=False)
    try:
        assert clip.data_end() == pytest.approx(clip.frame_count / clip.fps - 1 / clip.fps,
                                                abs=0.05)
    finally:
        clip.close()


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    server = rtsp_server_or_skip(tmp_path_factory.mktemp("av-rtsp"))
    yield server
    server.close()


def test_rtsp_through_pyav(rtsp: RtspServer) -> None:
    source = open_source(rtsp.url, read_timeout_ms=2000)
    assert isinstance(source, PyAVSource) and source.info.is_live
    stamps = []
    try:
        for _ in range(20):
            got = source.read(5.0)
            assert got is not None and isinstance(got[0], AVPicture)
            stamps.append(got[1])
        assert got[0].rgb().shape == (256, 340, 3)
    finally:
        source.close()
    assert all(b > a for a, b in itertools.pairwise(stamps))
    with pytest.raises(SourceError, match="closed"):
        source.read(1.0)


def test_the_live_engine_converts_only_sampled_frames() -> None:
    """A 10 s file at pace fast through the one engine: every window is cut, and only the
    frames some window samples are converted (x3d_xs: 4 of each window's ~48)."""
    clip = str(LOCAL_DATA / "ta_chi.mp4")
    config = RunConfig(model="x3d_xs", quiet=True,
                       streams=(StreamConfig(id="cam", source=clip, pace="fast"),))
    pipe = LivePipeline(config, backend=FakeBackend(labels=("a", "b"))).start()
    runner = pipe.stream("cam")
    assert pipe.join(60)
    totals = pipe.stop().streams["cam"]
    assert totals.frames == 300 and totals.windows >= 10 and totals.drops == 0
    assert runner.ring.converted <= 4 * totals.windows
    assert runner.ring.converted < totals.frames / 4
    assert runner.ring.peak_bytes <= runner.ring.max_bytes


@pytest.mark.slow
def test_a_file_gives_the_same_windows_with_either_decoder(tmp_path: Path) -> None:
    """The same file through the engine with PyAV and with OpenCV: the same windows, the
    same pixels (pace fast, so every window is cut)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(LOCAL_DATA / "ta_chi.mp4"),
                    "-t", "4", "-vf", "scale=-2:480", "-c:v", "libx264", str(clip)],
                   check=True, timeout=120)
    seen = {}
    for decoder in ("pyav", "opencv"):
        backend = _Recorder(labels=("a", "b"))
        config = RunConfig(model="x3d_xs", quiet=True, streams=(StreamConfig(
            id="cam", source=str(clip), pace="fast", stride=0.25, decoder=decoder),))
        LivePipeline(config, backend=backend).run()
        seen[decoder] = backend.clips
    assert len(seen["pyav"]) == len(seen["opencv"]) >= 8
    assert all(np.array_equal(a, b) for a, b in zip(seen["pyav"], seen["opencv"], strict=True))


class _Recorder(FakeBackend):
    """A fake backend that keeps every clip it is given."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        super().__init__(labels=labels)
        self.clips: list[np.ndarray] = []

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.clips.extend(np.array(c) for c in clips)
        return super().infer(clips)
