"""Decoding real files: timestamps, rotation, corrupt input, clip windows, sampling modes.

The window rule itself (spans, frames in a span, samples) is tested in test_clips.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamclf.errors import ConfigError, DataError
from streamclf.media.video import iter_frames, probe, read_windows, sample_frames


def test_iter_frames_gives_rgb_and_monotonic_timestamps(tai_chi_clip: Path) -> None:
    stamps = []
    for index, ts, frame in iter_frames(tai_chi_clip):
        assert frame is not None and frame.dtype == np.uint8 and frame.shape == (256, 340, 3)
        stamps.append(ts)
        assert index == len(stamps) - 1
    assert len(stamps) == 300
    assert np.all(np.diff(stamps) > 0)
    assert stamps[1] - stamps[0] == pytest.approx(1001 / 30000, abs=1e-3)


def test_rotation_metadata_is_honoured(rotated_clip: Path) -> None:
    frames = [f for _, _, f in iter_frames(rotated_clip)]
    assert len(frames) == 3
    assert frames[0].shape[:2] == (568, 320)  # stored 568x320 landscape, displayed portrait


def _raw_first_frame(path: Path) -> np.ndarray:
    """First frame as stored, with OpenCV's automatic rotation switched off."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(("degrees", "quarter_turns"), [(0, 0), (90, 3), (180, 2), (270, 1)])
def test_rotations_of_shared_clips(shared_data: Path, degrees: int, quarter_turns: int) -> None:
    path = shared_data / "videos" / "unusual" / f"decord__video_{degrees}.mov"
    shown = next(iter_frames(path))[2]
    assert shown is not None
    stored = _raw_first_frame(path)
    assert stored.shape[:2] == (320, 568)
    np.testing.assert_array_equal(shown, np.rot90(stored, quarter_turns))


def test_corrupted_file_is_reported(corrupted_clip: Path) -> None:
    with pytest.raises(DataError, match="corrupt or truncated"):
        for _ in iter_frames(corrupted_clip):
            pass


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "file not found"),
        (b"", "empty file"),
        (b"this is not a video" * 100, "not a readable"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        probe(path)


def test_truncated_file(tmp_path: Path, tai_chi_clip: Path) -> None:
    data = tai_chi_clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        for _ in iter_frames(cut):
            pass


def test_read_windows_selects_by_timestamp(tai_chi_clip: Path) -> None:
    (frames, stamps), = read_windows(tai_chi_clip, [(4.2, 5.8)], frame_fn=lambda f: f[:2, :2])
    assert all(4.2 <= t < 5.8 for t in stamps)
    assert len(frames) == len(stamps) == 48  # 1.6 s at 29.97 fps
    assert frames[0].shape == (2, 2, 3)


def test_sample_frames_modes(tai_chi_clip: Path) -> None:
    frames, stamps = sample_frames(tai_chi_clip, "uniform_temporal_subsample", num_samples=8)
    assert len(frames) == 8 and stamps[0] == 0.0 and stamps[-1] == pytest.approx(9.976, abs=0.01)
    frames, stamps = sample_frames(tai_chi_clip, "time_step_sample", time_step=2.0)
    assert len(frames) == 5
    assert np.allclose(np.diff(stamps), 2.0, atol=0.04)
    with pytest.raises(ConfigError, match="unknown sample_type 'every_other'"):
        sample_frames(tai_chi_clip, "every_other")
    with pytest.raises(ConfigError, match="time_step > 0"):
        sample_frames(tai_chi_clip, "time_step_sample")
    with pytest.raises(ConfigError, match="num_samples > 0"):
        sample_frames(tai_chi_clip, "uniform_temporal_subsample")


def test_a_file_cut_after_the_sampled_clip_is_caught(
        tmp_path: Path, tai_chi_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An MP4 with its index at the front, cut in half: the centred clip decodes fine, so
    `classify` once exited 0. The end is now checked against the declared length."""
    import shutil
    import subprocess

    from streamclf.cli.main import main
    from streamclf.media.video import check_end

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt install ffmpeg)")
    whole = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tai_chi_clip), "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True, timeout=60)
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    check_end(whole)
    with pytest.raises(DataError, match=r"corrupt or truncated video: its data ends near"):
        check_end(half)
    args = ["classify", str(half), "--weights", "random", "--backend", "torch"]
    assert main(args) == 1
    assert "use --allow-truncated" in capsys.readouterr().err
    assert main([*args, "--allow-truncated"]) == 0
    assert capsys.readouterr().out.startswith(f"{half}: ")
