"""A small labelled set for the detection metrics, made from the shared real clips.

Three classes, each one real 10 s clip of ``../shared/data/videos``. Its first 6 s give the
training clips (``train/<class>/``, ``val/<class>/``); its last 4 s are cut into the test
videos, which chain a segment of each class with a 4 s stretch of a fourth clip that is
none of them (background: where a model can cry wolf). Every part is re-encoded to 320x240
at 25 fps, so segment boundaries fall on frames: ``segments.csv`` holds the exact spans.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import SHARED_DATA

FPS = 25
PART_S = 4.0
CLASSES = {  # class -> its source clip
    "arm_wrestling": "mmaction2__demo_demo.mp4",
    "eating_spaghetti": "VideoQA-NTO__eating_spaghetti.mp4",
    "skateboarding": "mmskeleton__skateboarding.mp4",
}
BACKGROUND = "mmskeleton__ta_chi.mp4"
#: Each test video: its parts in order (a class, or None for the background).
TEST_VIDEOS = {
    "walk1.mp4": ("arm_wrestling", None, "eating_spaghetti", "skateboarding"),
    "walk2.mp4": ("skateboarding", "eating_spaghetti", None, "arm_wrestling"),
}
_SCALE = f"scale=320:240,setsar=1,fps={FPS},format=yuv420p"


def _ffmpeg(*args: str) -> None:
    exe = shutil.which("ffmpeg")
    assert exe is not None, "ffmpeg is needed (apt-get install ffmpeg)"
    subprocess.run([exe, "-v", "error", "-y", *args], check=True, timeout=120)


def _cut(src: Path, start: float, length: float, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-ss", f"{start}", "-i", str(src), "-t", f"{length}", "-an", "-vf", _SCALE,
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", str(out))


def make_train_set(root: Path, per_class: int = 8, length: float = 2.0) -> Path:
    """``root/train/<class>/*.mp4`` (``per_class`` clips spread over 0-5 s) and
    ``root/val/<class>/*.mp4`` (two clips); returns ``root``."""
    videos = SHARED_DATA / "videos"
    for name, file in CLASSES.items():
        for i in range(per_class):
            _cut(videos / file, i * (6.0 - length) / per_class, length,
                 root / "train" / name / f"{i}.mp4")
        for i, start in enumerate((0.3, 2.9)):
            _cut(videos / file, start, length, root / "val" / name / f"{i}.mp4")
    return root


def make_test_set(root: Path) -> Path:
    """The test videos and ``root/segments.csv`` (``video,start_s,end_s,label``)."""
    videos = SHARED_DATA / "videos"
    parts = root / "parts"
    sources: dict[str | None, str] = {**CLASSES, None: BACKGROUND}
    for key, file in sources.items():
        _cut(videos / file, 6.0, PART_S, parts / f"{key or 'background'}.mp4")
    rows = ["video,start_s,end_s,label"]
    for video, order in TEST_VIDEOS.items():
        listing = root / f"{video}.txt"
        listing.write_text("".join(f"file '{parts / (k or 'background')}.mp4'\n"
                                   for k in order))
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                str(root / video))
        for i, key in enumerate(order):
            if key is not None:
                rows.append(f"{video},{i * PART_S:.3f},{(i + 1) * PART_S:.3f},{key}")
    (root / "segments.csv").write_text("\n".join(rows) + "\n")
    return root / "segments.csv"
