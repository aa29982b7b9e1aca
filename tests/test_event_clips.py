"""Alert clips and snapshots (``clips:``): what a clip holds, that it plays in a real headless
Chromium, the pre-roll's memory bound at 720p, and that a slow writer never slows capture
(the files themselves and retention: ``test_clip_files.py``). Alerts are synthetic ``alert``
events published on the run's bus beside real sources (files at real-time pace, the
synthetic camera), so these tests do not depend on the alert rules."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf._lazy import cv2_module
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.errors import ConfigError
from streamclf.live.events import make_event
from streamclf.live.pipeline import LivePipeline
from streamclf.media.encode import H264Writer
from streamclf.media.picture import ArrayPicture
from streamclf.media.sources import (
    SyntheticSource,
    open_source,
    synthetic_frame,
    synthetic_index,
)
from streamclf.sections import ClipsConfig
from streamclf.sinks import clips as clips_module
from streamclf.sinks.clips import ClipRecorders, StreamClipRecorder
from streamclf.types import Frame, SourceInfo
from tests.clip_support import ANAMORPHIC, DAY, alert_id, probe, sar_of, wait_until
from tests.conftest import SHARED_DATA
from tests.servers import static_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LABELS = ("walking", "running", "waving")


class Feeder:
    """Synthetic camera frames straight into a stream's tap: frame ``i`` is at ``i / fps``
    on the stream clock and ``wall(i)`` on the wall clock, and shows ``i`` in its top band."""

    def __init__(self, recorder: StreamClipRecorder, tap: Callable[[Frame], None],
                 size: tuple[int, int], fps: float = 30.0) -> None:
        self.recorder, self.tap, self.size, self.fps = recorder, tap, size, fps

    def wall(self, i: int) -> float:
        return 1_000.0 + i / self.fps

    def frames(self, start: int, stop: int) -> None:
        w, h = self.size
        for i in range(start, stop):
            self.tap(Frame(i, i / self.fps, self.wall(i), ArrayPicture(synthetic_frame(i, w, h)),
                           i / self.fps))
            assert wait_until(lambda: self.recorder.inbox.held == 0, 5.0)


def attach(clips: ClipRecorders, stream: str, info: SourceInfo) -> tuple[StreamClipRecorder,
                                                                         Callable[[Frame], None]]:
    factory, tap = clips.attach(stream, lambda: type("Src", (), {"info": info})())
    factory()  # what the capture thread does: the recorder learns the source's aspect
    return clips.recorder(stream), tap


# -- the clip and the snapshot ---------------------------------------------------------------
def test_clip_spans_pre_alert_post_and_the_snapshot_is_the_best_window(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    folder = tmp_path / "clips"
    folder.mkdir()
    old = folder / f"cam0-{alert_id(1)}.mp4"  # a clip of 30 days ago: retention deletes it
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 30 * DAY,) * 2)
    foreign = folder / "holiday.mp4"  # not the writer's name: never touched
    foreign.write_bytes(b"mine")
    os.utime(foreign, (time.time() - 30 * DAY,) * 2)
    config = ClipsConfig(dir=str(folder), pre_s=1.01, post_s=0.51, max_days=14)
    clips = ClipRecorders(config)
    size = (321, 241)  # odd: padded to 322x242 for yuv420p
    info = SourceInfo("cam", "rtsp", 30.0, *size, is_live=True, sar=(4, 3))
    recorder, tap = attach(clips, "cam0", info)
    feed = Feeder(recorder, tap, size)
    aid = alert_id(7)

    def publish(kind: str, **fields: Any) -> None:
        clips.write(make_event(kind, "cam0", **fields))

    feed.frames(0, 60)
    publish("alert", alert_id=aid, phase="start", label="running", score=0.5, max_score=0.5,
            window_end=feed.wall(59), media_ts=59 / 30)
    feed.frames(60, 75)
    for i, score, stable in ((66, 0.7, "running"), (70, 0.9, "running"), (72, 0.8, "running"),
                             (73, 0.99, "waving")):  # another stable label does not count
        publish("prediction", labels=["waving", "running"], scores=[score, score - 0.01],
                stable_label=stable, window_end=feed.wall(i))
    feed.frames(75, 90)
    publish("alert", alert_id=aid, phase="end", label="running", score=0.3, max_score=0.89,
            reason="label", window_end=feed.wall(89), media_ts=89 / 30)
    feed.frames(90, 130)
    clip, snapshot = (Path(p) for p in config.paths("cam0", aid))
    assert wait_until(lambda: clip in clips.writer.saved)
    clips.close()

    got = probe(clip)
    assert got["codec"] == "h264" and got["pix_fmt"] == "yuv420p"
    assert got["size"] == (322, 242) and got["sar"] == Fraction(4, 3)
    shown = [synthetic_index(f[:241, :321]) for f in got["frames"]]
    # From 1.01 s before the start (frame 59 -> frame 29) to 0.51 s after the end (89 -> 104).
    assert shown == list(range(29, 105))
    assert got["duration"] == pytest.approx(76 / 30, abs=0.02)
    data = snapshot.read_bytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    image = cv2_module().imdecode(np.frombuffer(data, np.uint8), cv2_module().IMREAD_COLOR)
    assert image.shape == (241, 321, 3)  # the source's own size
    assert synthetic_index(image[:, :, ::-1]) == 70  # the window that scored 0.89
    assert not old.exists() and foreign.read_bytes() == b"mine"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [clip.name, snapshot.name, foreign.name])
    assert f"deleted {old}" in caplog.text
    assert recorder.inbox_drops == 0 and clips.writer.drops == 0


def test_preroll_stays_within_its_mb_bound_with_a_720p_source(tmp_path: Path) -> None:
    # A tight bound: 720p frames as JPEG (this pattern is a hard one) fill 4 MB in < 1 s.
    clips = ClipRecorders(ClipsConfig(dir=str(tmp_path), pre_s=3.0, preroll_mb=4))
    recorder, tap = attach(clips, "hd", SourceInfo("hd", "rtsp", 30.0, 1280, 720, True))
    feed = Feeder(recorder, tap, (1280, 720))
    peak = 0
    for i in range(60):
        feed.frames(i, i + 1)
        peak = max(peak, recorder.preroll.nbytes)
    assert recorder.preroll.evicted_for_bytes > 0  # the bound was reached ...
    assert 3_000_000 < peak <= 4_000_000  # ... and held
    clips.close()
    # The default 64 MB holds the default pre_s (3 s) of 720p, which frames kept as they are
    # (2.76 MB each) could not: 64 MB of them are 0.8 s.
    clips = ClipRecorders(ClipsConfig(dir=str(tmp_path), pre_s=3.0))
    recorder, tap = attach(clips, "hd", SourceInfo("hd", "rtsp", 30.0, 1280, 720, True))
    feed = Feeder(recorder, tap, (1280, 720))
    feed.frames(0, 100)
    assert recorder.preroll.seconds >= 3.0 and recorder.preroll.evicted_for_bytes == 0
    assert recorder.preroll.nbytes <= 64_000_000
    clips.close()


def test_clips_keep_at_most_their_own_rate_and_convert_nothing_else(tmp_path: Path) -> None:
    """``clips.fps`` 10 on a 30 fps camera: a third of the frames are converted and kept."""
    converted: list[int] = []

    class Counting(ArrayPicture):
        def rgb(self) -> np.ndarray:
            image = super().rgb()
            converted.append(synthetic_index(image))
            return image

    clips = ClipRecorders(ClipsConfig(dir=str(tmp_path), pre_s=3.0, fps=10.0))
    recorder, tap = attach(clips, "cam", SourceInfo("cam", "rtsp", 30.0, 320, 240, True))
    for i in range(60):
        tap(Frame(i, i / 30, 1_000.0 + i / 30, Counting(synthetic_frame(i, 320, 240)), i / 30))
        assert wait_until(lambda: recorder.inbox.held == 0, 5.0)
    assert converted == list(range(0, 60, 3))
    assert len(recorder.preroll) == 20
    clips.close()
    with pytest.raises(ConfigError, match="fps"):
        ClipsConfig(fps=-1.0)


# -- the live pipeline -------------------------------------------------------------------------
def _pipeline(tmp_path: Path, open_parts: Callable[[StreamConfig], Any], clips: ClipsConfig,
              stream: str = "cam0") -> LivePipeline:
    config = RunConfig(model="x3d_xs", events=str(tmp_path / "ev.jsonl"), quiet=True,
                       clips=clips, streams=(StreamConfig(id=stream, source="test"),))
    return LivePipeline(config, backend=FakeBackend(labels=LABELS, script=[[0.1, 0.8, 0.1]]),
                        open_stream=open_parts)


def _synthetic_camera(_: StreamConfig) -> tuple[Any, list[Any], float, Callable[[], None]]:
    return lambda: SyntheticSource(320, 240, 30.0, live=True), [], 30.0, lambda: None


class SleepyWriter(H264Writer):
    """A clip writer on a slow disk: 0.1 s per frame (3 fps where 30 come in)."""

    def write(self, image: np.ndarray, ts: float | None = None) -> None:
        time.sleep(0.1)
        super().write(image, ts)


@pytest.mark.slow
def test_a_slow_writer_never_slows_capture(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_module, "H264Writer", SleepyWriter)
    clips = ClipsConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=0.5, preroll_mb=0.5)
    pipe = _pipeline(tmp_path, _synthetic_camera, clips).start()
    runner, recorders = pipe.stream("cam0"), pipe.clips
    assert recorders is not None
    try:
        assert wait_until(lambda: runner.health().frames >= 45, 10)
        aid = alert_id(3)
        pipe.bus.publish(make_event("alert", "cam0", alert_id=aid, phase="start",
                                    label="running", score=0.9, max_score=0.9,
                                    window_end=time.time()))
        f0, t0 = runner.health().frames, time.monotonic()
        time.sleep(3.0)
        f1, t1 = runner.health().frames, time.monotonic()
        pipe.bus.publish(make_event("alert", "cam0", alert_id=aid, phase="end",
                                    label="running", score=0.1, max_score=0.9, reason="label",
                                    window_end=time.time()))
        time.sleep(1.0)
    finally:
        t_stop = time.monotonic()
        pipe.stop()
        stop_s = time.monotonic() - t_stop
    rate = (f1 - f0) / (t1 - t0)
    assert rate == pytest.approx(30.0, abs=2.0)  # the camera's rate, clip or no clip
    assert recorders.writer.drops > 0  # the writer fell behind: frames dropped, counted
    assert stop_s < 2.0
    clip = Path(clips.paths("cam0", aid)[0])
    assert recorders.writer.saved == [clip]  # what was written is a complete file
    got = probe(clip)
    assert got["codec"] == "h264" and 0 < len(got["frames"]) < 100


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed "
                    "(.ci/run installs it with apt-get install chromium)")
@pytest.mark.parametrize("which", ["ta_chi", "anamorphic"])
def test_clips_play_in_headless_chromium(tmp_path: Path, tai_chi_clip: Path,
                                         which: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    source = tai_chi_clip if which == "ta_chi" else ANAMORPHIC
    if not source.is_file():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    sar = Fraction(1) if which == "ta_chi" else Fraction(64, 51)
    assert sar_of(source) == (sar.numerator, sar.denominator)
    folder = tmp_path / "clips"
    clips = ClipsConfig(dir=str(folder), pre_s=1.0, post_s=1.0)

    def real_file(config: StreamConfig) -> Any:
        return lambda: open_source(str(source)), [], 30.0, lambda: None

    pipe = _pipeline(tmp_path, real_file, clips, stream="hall")  # paced like a camera
    aid = alert_id(11)
    clip, snapshot = (Path(p) for p in clips.paths("hall", aid))
    with pipe:
        runner = pipe.stream("hall")
        assert wait_until(lambda: runner.health().frames >= 75, 15)  # 2.5 s in
        start = time.time()
        pipe.bus.publish(make_event("alert", "hall", alert_id=aid, phase="start",
                                    label="running", score=0.5, max_score=0.5,
                                    window_end=start))
        time.sleep(2.0)
        end = time.time()
        pipe.bus.publish(make_event("alert", "hall", alert_id=aid, phase="end",
                                    label="running", score=0.1, max_score=0.8,
                                    reason="label", window_end=end))
        assert wait_until(clip.is_file, 15) and wait_until(snapshot.is_file, 5)
    expected = 1.0 + (end - start) + 1.0
    assert probe(clip)["duration"] == pytest.approx(expected, abs=0.5)

    (folder / "index.html").write_text(
        f'<video id="v" src="{clip.name}" muted preload="auto"></video>'
        f'<img id="i" src="{snapshot.name}">', encoding="utf-8")
    with static_server(folder) as port, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/index.html")
        page.wait_for_function("document.getElementById('v').readyState >= 2 && "
                               "document.getElementById('i').complete", timeout=20_000)
        video = page.evaluate("(() => { const v = document.getElementById('v');"
                              " const i = document.getElementById('i');"
                              " return {duration: v.duration, error: v.error && v.error.code,"
                              " w: v.videoWidth, h: v.videoHeight,"
                              " iw: i.naturalWidth, ih: i.naturalHeight}; })()")
        browser.close()
    assert video["error"] is None
    assert video["duration"] == pytest.approx(expected, abs=0.5)
    # The browser shows the source's picture: its pixel aspect applied (340x256 at 64:51
    # is 427x256 on screen); the snapshot is the source's own frame size.
    assert video["h"] == 256 and abs(video["w"] - 340 * sar) <= 1
    assert (video["iw"], video["ih"]) == (340, 256)
