"""Pure preprocessing functions on uint8 RGB frames, and the per-model clip transform.

They reproduce pytorchvideo's reference chain for the Kinetics zoo::

    UniformTemporalSubsample(T) -> x / 255 -> Normalize(mean, std)
    -> ShortSideScale(side) -> CenterCrop(crop) -> PackPathway(alpha)

with one deliberate reordering: resizing and cropping happen on the uint8 frame
*before* normalisation. Both bilinear resizing and cropping commute with the
per-channel affine normalisation, so the result is the same up to uint8 rounding
(OpenCV's fixed-point bilinear: within 1/255 per pixel, 0.75/255 measured), and each
frame can be resized once when it is decoded or enters the live ring buffer instead of
once per clip.

All functions are pure and thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import ConfigError, DataError

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec

__all__ = [
    "ClipTransform",
    "center_crop",
    "normalize_clip",
    "pack_pathways",
    "resize_and_crop",
    "short_side_resize",
    "short_side_shape",
    "uniform_indices",
]


def uniform_indices(num_available: int, num_samples: int) -> np.ndarray:
    """Indices of ``num_samples`` evenly spaced frames out of ``num_available``.

    Bit-for-bit the rule of pytorchvideo's ``uniform_temporal_subsample``
    (``torch.linspace(0, n - 1, k).clamp(0, n - 1).long()``): float32 linspace
    computed the way torch does (forward from the start for the first half,
    backward from the end for the second), then truncation. Indices repeat when
    ``num_samples > num_available``.

    Returns:
        ``(num_samples,)`` int64 array of indices in ``[0, num_available - 1]``.

    Raises:
        DataError: ``num_available`` is not positive (no frames).
        ConfigError: ``num_samples`` is not positive.
    """
    if num_available <= 0:
        raise DataError("uniform_indices needs at least one frame")
    if num_samples <= 0:
        raise ConfigError("num_samples must be positive")
    start = np.float32(0.0)
    end = np.float32(num_available - 1)
    if num_samples == 1:
        values = np.array([start], dtype=np.float32)
    else:
        step = np.float32((end - start) / np.float32(num_samples - 1))
        i = np.arange(num_samples)
        half = num_samples // 2
        values = np.where(
            i < half,
            start + step * i.astype(np.float32),
            end - step * (num_samples - 1 - i).astype(np.float32),
        ).astype(np.float32)
    values = np.clip(values, start, end)
    return values.astype(np.int64)


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the short side scaled to ``size``, as pytorchvideo's
    ``short_side_scale`` computes it (the long side is floored)."""
    if width < height:
        return int(np.floor(height / width * size)), size
    return size, int(np.floor(width / height * size))


def short_side_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an ``(H, W, 3)`` uint8 frame so its short side is ``size``.

    OpenCV's ``INTER_LINEAR`` uses half-pixel centres and no antialiasing, the same
    sampling as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    that the reference uses.
    """
    h, w = frame.shape[:2]
    new_h, new_w = short_side_shape(h, w, size)
    if (new_h, new_w) == (h, w):
        return frame
    return cv2_module().resize(frame, (new_w, new_h), interpolation=cv2_module().INTER_LINEAR)


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size x size`` crop of an ``(H, W, C)`` frame (a view, no copy).

    Offsets use ``int(round((H - size) / 2))`` like torchvision's ``center_crop``.

    Raises:
        DataError: the frame is smaller than ``size`` on either side.
    """
    h, w = frame.shape[:2]
    if h < size or w < size:
        raise DataError(f"frame {h}x{w} is smaller than the crop {size}")
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return frame[top : top + size, left : left + size]


def resize_and_crop(frame: np.ndarray, side: int, crop: int) -> np.ndarray:
    """Short-side resize then centre crop: ``(H, W, 3) uint8 -> (crop, crop, 3) uint8``,
    C-contiguous. This is the once-per-frame spatial step."""
    return np.ascontiguousarray(center_crop(short_side_resize(frame, side), crop))


def normalize_clip(
    frames: np.ndarray | Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``(T, H, W, 3) uint8 RGB -> (3, T, H, W) float32`` of ``(x / 255 - mean) / std``.

    Args:
        out: optional preallocated ``(3, T, H, W)`` float32 array to write into.
    """
    clip = frames if isinstance(frames, np.ndarray) else np.stack(frames)
    t, h, w, c = clip.shape
    if out is None:
        out = np.empty((c, t, h, w), dtype=np.float32)
    scale = np.asarray([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    shift = np.asarray([m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
    chw = clip.transpose(3, 0, 1, 2)
    for ch in range(c):
        np.multiply(chw[ch], scale[ch], out=out[ch], dtype=np.float32)
        out[ch] -= shift[ch]
    return out


def pack_pathways(clip: np.ndarray, alpha: int | None) -> list[np.ndarray]:
    """Split a ``(3, T, H, W)`` clip into network inputs.

    Single-pathway models get ``[clip]``. SlowFast gets ``[slow, fast]`` where the
    slow pathway keeps ``T // alpha`` frames chosen by :func:`uniform_indices`, like
    pytorchvideo's ``PackPathway``.
    """
    if not alpha:
        return [clip]
    t = clip.shape[1]
    slow = np.ascontiguousarray(clip[:, uniform_indices(t, t // alpha)])
    return [slow, clip]


class ClipTransform:
    """The per-model clip transform: frames in, network inputs out.

    ``ClipTransform(spec)(frames)`` with ``frames`` a sequence of ``(H, W, 3)`` uint8
    RGB frames (or a ``(T, H, W, 3)`` array) returns one ``(3, T_i, crop, crop)``
    float32 array per pathway (slow first for SlowFast).

    Args:
        spec: the model spec whose contract is applied.
        temporal_subsample: pick ``spec.num_frames`` frames uniformly first (the
            reference behaviour); ``False`` uses the frames as given.

    Frames already ``crop x crop`` are taken as preprocessed (resized and cropped
    upstream, e.g. by the live ring buffer) and are not resized again.
    Thread-safe: holds no mutable state.
    """

    def __init__(self, spec: ModelSpec, temporal_subsample: bool = True) -> None:
        self.spec = spec
        self.temporal_subsample = temporal_subsample

    def spatial(self, frame: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8 -> (crop, crop, 3) uint8``; frames already that size pass through."""
        crop = self.spec.crop_size
        if frame.shape[0] == crop and frame.shape[1] == crop:
            return frame
        return resize_and_crop(frame, self.spec.side_size, crop)

    def select(self, num_frames: int) -> np.ndarray:
        """Indices of the frames this transform keeps out of ``num_frames``."""
        if not self.temporal_subsample:
            return np.arange(num_frames)
        return uniform_indices(num_frames, self.spec.num_frames)

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(frames) == 0:
            raise DataError("no frames to classify")
        chosen = [self.spatial(frames[int(i)]) for i in self.select(len(frames))]
        clip = normalize_clip(np.stack(chosen), self.spec.mean, self.spec.std)
        return pack_pathways(clip, self.spec.slowfast_alpha)
