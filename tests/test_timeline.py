"""Media time in events, ``streamclf timeline`` and the offline smoothing of the sweep.

* ``media_ts`` of a file's events is its presentation time, whatever ``--pace``;
* the timeline of a video made by chaining real clips at 25 fps: windows on the stride
  grid within one frame, subtitles that real parsers (``srt``, ``webvtt-py``) read;
* the sweep's offline smoothing gives exactly the live run's label changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.analysis.replay import replay, stream_ids
from streamclf.analysis.sweep import offline_changes
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.events import read_events
from streamclf.live.pipeline import LivePipeline
from tests.conftest import REPO, SHARED_DATA
from tests.detection_data import FPS, make_test_set

LABELS = ("walking", "running", "waving")
CLI = [sys.executable, "-m", "streamclf"]
WAVE = SHARED_DATA / "videos" / "torchvision__RATRACE_wave_f_nm_np1_fr_goo_37.avi"
#: A varied script, so labels start and end (cycled over the windows).
SCRIPT = [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
          [0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, check=False)


def frame_times(path: Path) -> np.ndarray:
    """Every frame's presentation time from the first frame's, decoded by PyAV."""
    import av

    with av.open(str(path)) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    return np.array(times) - times[0]


def live_events(path: Path, tmp: Path, pace: str, **stream: Any) -> list[dict[str, Any]]:
    log = tmp / f"{pace}.jsonl"
    config = RunConfig(model="x3d_xs", events=str(log), quiet=True,
                       streams=(StreamConfig(id="v", source=str(path), pace=pace, **stream),))
    LivePipeline(config, backend=FakeBackend(labels=LABELS, script=SCRIPT)).run()
    return read_events(log)


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The detection set's test videos (real clips chained at 25 fps) and segments.csv."""
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip(f"{SHARED_DATA} is not there (the shared real clips)")
    return make_test_set(tmp_path_factory.mktemp("chained")).parent


def test_media_ts_is_the_presentation_time_whatever_the_pace(tmp_path: Path) -> None:
    if not WAVE.is_file():
        pytest.skip(f"{WAVE} is not there (the shared real clips)")
    pts = frame_times(WAVE)
    for pace in ("fast", "realtime"):
        events = live_events(WAVE, tmp_path, pace, stride=0.2, smooth=1, start_after=1)
        preds = [e for e in events if e["type"] == "prediction"]
        changes = [e for e in events if e["type"] in ("label_start", "label_end")]
        assert len(preds) >= 3 and changes, pace
        for e in preds:  # the window's first and last sampled frame, as the file stamps them
            for key in ("media_start", "media_ts"):
                assert np.min(np.abs(pts - e[key])) < 1e-3, (pace, key, e[key])
            assert e["media_ts"] - e["media_start"] == pytest.approx(1.6, abs=1.5 / 30)
        ends = {e["media_ts"] for e in preds}
        for e in changes:  # a change is stamped with its window's media time
            assert e["media_ts"] in ends, (pace, e)
        assert changes[-1]["type"] == "label_end"
        assert changes[-1]["media_ts"] == preds[-1]["media_ts"]  # the stop: the last window
        if pace == "fast":  # lossless: every window on the stride grid from the first
            got = np.array(sorted(ends))
            assert np.allclose(np.diff(got), 0.2, atol=1.01 / 30), got


def test_offline_smoothing_gives_the_live_runs_label_changes(tmp_path: Path,
                                                             tai_chi_clip: Path) -> None:
    """The sweep smooths the replay's raw scores offline with the live Smoother: at the live
    settings its changes are the live run's, event for event."""
    overrides = {"model": "x3d_xs", "stride": 0.3, "smooth": 2, "threshold": 0.45,
                 "start_after": 2}
    (timeline,) = replay([tai_chi_clip], overrides,
                         backend=FakeBackend(labels=LABELS, script=SCRIPT))
    assert len(timeline.windows) > 20 and timeline.error is None
    assert timeline.duration_s == pytest.approx(10.0, abs=0.05)
    offline = offline_changes(timeline.windows, 2, 0.45, 2)
    assert len(offline) >= 4
    assert list(offline) == timeline.changes
    other = offline_changes(timeline.windows, 1, 0.45, 1)
    assert list(other) != timeline.changes  # the settings matter: a real comparison


def test_stream_ids_are_unique_and_safe() -> None:
    got = stream_ids([Path("a/clip one.mp4"), Path("b/clip one.mp4"), Path("ü.mp4"),
                      Path("x" * 90 + ".mp4")])
    assert got[:2] == ["clip_one", "clip_one-2"] and got[2] == "video"
    assert all(len(s) <= 64 for s in got)


def test_timeline_of_chained_real_clips(chained: Path, tmp_path: Path) -> None:
    import srt
    import webvtt

    video = chained / "walk1.mp4"
    out = tmp_path / "out"
    res = run_cli("timeline", str(video), "--model", "x3d_xs", "--weights", "random",
                  "--backend", "torch", "--device", "cpu", "--stride", "0.5", "--smooth", "1",
                  "--start-after", "1", "--threshold", "0", "--csv", str(out / "t.csv"),
                  "--srt", str(out / "t.srt"), "--vtt", str(out / "t.vtt"), "--plot",
                  str(out / "t.png"), "--json")
    assert res.returncode == 0, res.stderr
    import csv

    with (out / "t.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "start_s", "end_s", "label", "score", "stable_label"]
    ends = np.array([float(r["end_s"]) for r in rows])
    starts = np.array([float(r["start_s"]) for r in rows])
    frame = 1.0 / FPS
    # x3d_xs: 4 frames, one every 12 at 30 fps -> a 1.6 s window; 16 s of video
    assert ends[0] == pytest.approx(1.6, abs=frame + 1e-6)
    assert np.allclose(ends - ends[0], 0.5 * np.arange(len(ends)), atol=frame + 1e-6), ends
    assert np.allclose(ends - starts, 1.6, atol=frame + 1e-6)
    assert 16.0 - 0.5 - frame <= ends[-1] <= 16.0
    assert np.allclose(ends * FPS, np.round(ends * FPS), atol=0.02)  # on frames
    (doc,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert doc["duration_s"] == pytest.approx(16.0, abs=frame) and len(doc["windows"]) == len(rows)

    cues = list(srt.parse((out / "t.srt").read_text()))
    vtt = list(webvtt.read(str(out / "t.vtt")))
    assert cues and len(cues) == len(vtt) == len(doc["segments"])
    for cue, seg, v in zip(cues, doc["segments"], vtt, strict=True):
        assert cue.start.total_seconds() == pytest.approx(seg["start_s"], abs=1e-3)
        assert cue.end.total_seconds() == pytest.approx(seg["end_s"], abs=1e-3)
        assert cue.content == f"{seg['label']} ({seg['score']:.2f})" == v.text
        assert cue.end > cue.start
    stable = [r["stable_label"] for r in rows]
    changes = sum(1 for a, b in pairwise(stable) if a != b and b)
    assert len(cues) == changes + (1 if stable[0] else 0)
    assert (out / "t.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_timeline_refuses_bad_input_before_loading_a_model(tmp_path: Path,
                                                           tai_chi_clip: Path) -> None:
    cases = [
        (["timeline", str(tmp_path / "nope.mp4")], "file not found"),
        (["timeline", str(tai_chi_clip), str(tai_chi_clip), "--srt", str(tmp_path / "a.srt")],
         "{stem}"),
        (["timeline", str(tai_chi_clip), "--csv", str(tai_chi_clip)], "input"),
        (["timeline", str(tai_chi_clip), "--csv", str(tmp_path)], "folder"),
        (["timeline", str(tai_chi_clip), "--weights", str(tmp_path / "w.pt")], "w.pt"),
    ]
    for args, words in cases:
        res = run_cli(*args, timeout=60)
        assert res.returncode == 1, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.stderr, lines
