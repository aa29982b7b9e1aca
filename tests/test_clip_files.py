"""The files of alert clips: the H.264 writer (also the ``--output`` overlay video), the
source's pixel aspect, a full disk, and retention (``clips.max_gb``, ``clips.max_days``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.errors import ConfigError, DataError
from streamclf.live.video_file import VideoFileSink
from streamclf.media.encode import H264Writer, normal_sar
from streamclf.media.sources import synthetic_frame, synthetic_index
from streamclf.sections import ClipsConfig
from streamclf.sinks.clips import ClipRecorders
from streamclf.sinks.retention import enforce_retention
from tests.clip_support import ANAMORPHIC, DAY, alert_id, probe, sar_of
from tests.conftest import REPO


# -- retention -----------------------------------------------------------------------------
def _entries(folder: Path, ages_days: list[float], size: int = 400) -> list[list[Path]]:
    """A clip and its snapshot per age, each file ``size`` bytes, mtimes set to the age."""
    made = []
    for n, age in enumerate(ages_days, start=1):
        pair = [folder / f"door-{alert_id(n)}.mp4", folder / f"door-{alert_id(n)}.jpg"]
        for path in pair:
            path.write_bytes(b"x" * size)
            os.utime(path, (time.time() - age * DAY,) * 2)
        made.append(pair)
    return made


def test_retention_by_size_deletes_the_oldest_first(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    entries = _entries(tmp_path, [5.0, 4.0, 3.0, 2.0, 1.0])  # 5 x 800 bytes
    foreign = [tmp_path / "notes.txt", tmp_path / "door-old.mp4",
               tmp_path / f"door-{alert_id(9)}.mp4.bak"]
    for path in foreign:
        path.write_bytes(b"y" * 5000)
        os.utime(path, (time.time() - 100 * DAY,) * 2)
    (tmp_path / f"door-{alert_id(8)}.mp4").symlink_to(foreign[0])
    deleted = enforce_retention(tmp_path, max_gb=2000 / 1e9, max_days=14)
    assert deleted == [p for pair in entries[:3] for p in sorted(pair)]  # 4000 -> 1600 B
    assert all(p.exists() for pair in entries[3:] for p in pair)
    assert all(p.exists() for p in foreign) and (tmp_path / f"door-{alert_id(8)}.mp4").exists()
    for path in deleted:
        assert f"deleted {path}" in caplog.text


def test_retention_by_age_and_what_is_being_written_stays(tmp_path: Path) -> None:
    entries = _entries(tmp_path, [40.0, 20.0, 15.0, 13.0, 0.5])
    deleted = enforce_retention(tmp_path, max_gb=20, max_days=14, keep={f"door-{alert_id(2)}"})
    assert deleted == [*sorted(entries[0]), *sorted(entries[2])]
    assert [p.exists() for pair in entries for p in pair] == [False, False, True, True,
                                                              False, False, True, True, True,
                                                              True]
    assert enforce_retention(tmp_path / "missing", 1, 1) == []


# -- the encoder and the overlay video ---------------------------------------------------------
def test_overlay_video_is_h264_with_the_source_pixel_aspect(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    sink = VideoFileSink(path, fps=25.0, size=(341, 255), sar=(64, 51))
    for i in range(25):
        sink.write(synthetic_frame(i, 341, 255))
    sink.close()
    got = probe(path)
    assert (got["codec"], got["pix_fmt"], got["size"]) == ("h264", "yuv420p", (342, 256))
    assert got["sar"] == Fraction(64, 51) and len(got["frames"]) == 25
    assert got["duration"] == pytest.approx(1.0, abs=0.01)
    assert [synthetic_index(f[:255, :341]) for f in got["frames"]] == list(range(25))


def test_source_pixel_aspect_is_read_from_the_file(tai_chi_clip: Path) -> None:
    assert sar_of(tai_chi_clip) == (1, 1)  # not declared: square
    if ANAMORPHIC.is_file():
        assert sar_of(ANAMORPHIC) == (64, 51)
    assert normal_sar((0.0, 1.0)) == (1, 1) and normal_sar((128.0, 102.0)) == (64, 51)
    assert normal_sar((1.0, 100.0)) == (1, 1)


def test_encoder_mistakes_are_streamclf_errors(tmp_path: Path) -> None:
    for bad in ({"size": (0, 10)}, {"fps": 0.0}, {"sar": (0, 1)}):
        args: dict[str, Any] = {"size": (64, 48), "fps": 30.0, **bad}
        with pytest.raises(ConfigError):
            H264Writer(tmp_path / "a.mp4", args.pop("size"), args.pop("fps"), **args)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(DataError, match="cannot open"):
        H264Writer(tmp_path / "dir.mp4", (64, 48), 30.0)
    writer = H264Writer(tmp_path / "b.mp4", (64, 48), 30.0)
    with pytest.raises(DataError, match="uint8"):
        writer.write(np.zeros((48, 64, 3), np.float32))
    writer.close()
    with pytest.raises(DataError, match="after close"):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="folder"):
        ClipRecorders(ClipsConfig(dir=str(tmp_path / "b.mp4" / "sub")))


_FILL_UP = """
import resource, signal, sys
import numpy as np
from streamclf.errors import DataError
from streamclf.media.encode import H264Writer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
writer = H264Writer(sys.argv[1], (320, 240), 30.0)
rng = np.random.default_rng(0)
try:
    for _ in range(300):
        writer.write(rng.integers(0, 255, (240, 320, 3), np.uint8))
except DataError as exc:
    print(exc)
writer.close()  # after a failed write: quiet, the error was reported
print("closed")
"""


def test_a_full_disk_is_one_data_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "full.mp4"
    run = subprocess.run([sys.executable, "-c", _FILL_UP, str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{path}: writing the video failed ([Errno 27] File too large)", "closed"]
