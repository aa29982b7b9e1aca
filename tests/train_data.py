"""Synthetic action videos for the training tests: classes told apart only by time.

Each clip is a smooth random colour texture whose brightness rises (``brighter``), falls
(``darker``) or stays put (``steady``) over the clip. Every class draws its middle
brightness from the same range, wide enough against the swing that the start levels of all
three classes overlap too (brighter starts in [0.15, 0.55], darker in [0.45, 0.85], steady
in [0.3, 0.7]): neither a single frame's level nor the first frame's says which class a
clip is, only the order of the frames does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["CLASSES", "make_split", "write_clip"]

CLASSES = ("brighter", "darker", "steady")
_SLOPE = {"brighter": 1.0, "darker": -1.0, "steady": 0.0}


def write_clip(
    path: Path, kind: str, rng: np.random.Generator, size: int = 64, seconds: float = 2.0,
    fps: float = 30.0, swing: float = 0.3,
) -> Path:
    """Write one ``kind`` clip (``size x size``, ``seconds`` long) as an MP4 file.

    The level goes from ``mid - swing/2`` to ``mid + swing/2`` (or back, or stays at
    ``mid``), ``mid`` drawn from ``[0.3, 0.7]`` for every class.
    """
    n = round(seconds * fps)
    coarse = rng.uniform(0.3, 1.0, size=(6, 6, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    mid = rng.uniform(0.3, 0.7)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    try:
        for i in range(n):
            level = mid + _SLOPE[kind] * swing * (i / (n - 1) - 0.5)
            frame = np.clip(texture * level * 255.0 * 1.3, 0, 255).astype(np.uint8)
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()
    return path


def make_split(root: Path, per_class: int, seed: int, **clip_args: float) -> list[Path]:
    """``root/<class>/<class>_<i>.mp4`` for every class; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(per_class):
        for kind in CLASSES:
            paths.append(write_clip(root / kind / f"{kind}_{i:03d}.mp4", kind, rng, **clip_args))
    return paths
