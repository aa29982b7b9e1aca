"""Clips for training: decode one clip of the model's duration per video, transform it.

Training takes a random clip of ``clip_s`` seconds per video per epoch, validation the
centred one (the clip ``streamclf classify`` takes); the span and the frames in it follow
the window rule of :mod:`streamclf.media.clips` (a frame folder's frame ``i`` is at
``i / fps``). Every random draw comes from ``numpy.random.default_rng([seed, epoch,
index])``, so a sample's clip and augmentation depend only on those three numbers: the
same with 0 or 8 loader workers, and the same after ``--resume``.

:class:`ClipDataset` is a torch ``Dataset``; it is pickled into the loader's worker
processes and holds no open files (each item opens its video and closes it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamclf._lazy import cv2_module, require
from streamclf.errors import DataError
from streamclf.media.clips import frame_times, span_frames, train_span
from streamclf.media.video import probe, read_windows
from streamclf.train.data import IMAGE_EXTENSIONS, Sample

__all__ = ["Batch", "ClipDataset", "collate", "read_clip", "sample_rng"]

log = logging.getLogger(__name__)

#: ``transform(frames, rng)``: ``(N, H, W, 3)`` uint8 RGB -> one float32 array per pathway.
Transform = Callable[[np.ndarray, np.random.Generator], list[np.ndarray]]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` in ``epoch``: independent of worker count."""
    return np.random.default_rng([seed, epoch, index])


def _read_frame_folder(
    folder: Path, fps: float, clip_s: float, rng: np.random.Generator | None
) -> np.ndarray:
    cv2 = cv2_module()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no frames")
    span = train_span(len(files) / fps, clip_s, rng)
    picked = span_frames(frame_times(len(files), fps), span)
    if not len(picked):
        raise DataError(f"{folder}: no frames in the requested time span")
    frames = []
    for path in (files[int(i)] for i in picked):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{path}: not a readable image")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if any(f.shape != frames[0].shape for f in frames):
        raise DataError(f"{folder}: frames differ in size")
    return np.stack(frames)


def read_clip(
    sample: Sample, clip_s: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Decode the frames of one clip of ``clip_s`` seconds of ``sample``.

    Args:
        rng: draws the clip's start (training); ``None`` takes the centred clip.

    Returns:
        ``(N, H, W, 3)`` uint8 RGB, every frame of the window in order.

    Raises:
        DataError: the video cannot be read, is corrupt, or has no frame in the window.
    """
    if sample.frame_fps is not None:
        return _read_frame_folder(sample.path, sample.frame_fps, clip_s, rng)
    info = probe(sample.path)
    frames, _ = read_windows(sample.path, [train_span(info.duration_s, clip_s, rng)])[0]
    if any(f.shape != frames[0].shape for f in frames):
        raise DataError(f"{sample.path}: frame size changes inside the clip")
    return np.stack(frames)


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        inputs: one ``(B, 3, T_i, H, W)`` float32 tensor per pathway.
        labels: ``(B,)`` int64.
        failed: ``"where: why"`` for each clip of the batch that could not be read.
    """

    inputs: list[Any]
    labels: Any
    failed: list[str]

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])


class ClipDataset:
    """``samples[i]`` -> ``(pathways, label)`` with the clip decoded and transformed.

    Args:
        samples: the clips' sources.
        transform: ``(frames, rng) -> pathways`` (the train or validation transform).
        clip_s: seconds per clip (the model's window).
        seed: run seed; ``epoch`` (set before each pass) is mixed in.
        random_clip: draw the clip's start at random (training) or take the centre.

    A clip that cannot be read yields ``(None, "where: why")`` instead of raising, so one
    bad file costs one clip, not the run; :func:`collate` drops it and reports it.
    """

    def __init__(
        self, samples: Sequence[Sample], transform: Transform, clip_s: float, seed: int,
        random_clip: bool,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.clip_s = clip_s
        self.seed = seed
        self.random_clip = random_clip
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[list[np.ndarray] | None, int | str]:
        sample = self.samples[index]
        rng = sample_rng(self.seed, self.epoch, index)
        try:
            frames = read_clip(sample, self.clip_s, rng if self.random_clip else None)
            return self.transform(frames, rng), sample.label
        except DataError as exc:
            where = f"{sample.where}: " if sample.where != str(sample.path) else ""
            return None, f"{where}{exc}"


def collate(items: list[tuple[list[np.ndarray] | None, int | str]]) -> Batch:
    """Stack the readable clips of a batch into tensors; list the others in ``failed``."""
    torch = require("torch")
    good = [(p, lab) for p, lab in items if p is not None]
    failed = [str(lab) for p, lab in items if p is None]
    if not good:
        return Batch(inputs=[], labels=torch.zeros(0, dtype=torch.int64), failed=failed)
    paths = len(good[0][0])
    inputs = [torch.from_numpy(np.stack([p[i] for p, _ in good])) for i in range(paths)]
    labels = torch.tensor([int(lab) for _, lab in good], dtype=torch.int64)
    return Batch(inputs=inputs, labels=labels, failed=failed)


def worker_init(_worker_id: int) -> None:
    """Loader workers: one thread each for OpenCV and torch (the main process computes)."""
    cv2_module().setNumThreads(1)
    require("torch").set_num_threads(1)
