"""Pure preprocessing functions on uint8 RGB frames, and the per-model clip transform.

They reproduce pytorchvideo's reference chain for the Kinetics zoo::

    UniformTemporalSubsample(T) -> x / 255 -> Normalize(mean, std)
    -> ShortSideScale(side) -> CenterCrop(crop) -> PackPathway(alpha)

with one deliberate reordering: resizing and cropping happen on the uint8 frame
*before* normalisation. Both bilinear resizing and cropping commute with the
per-channel affine normalisation, so the result is the same up to uint8 rounding
(OpenCV's fixed-point bilinear: within 1/255 per pixel, 0.75/255 measured), and each
frame can be resized once when it is decoded or enters the live ring buffer instead of
once per clip. Which frames are kept (``UniformTemporalSubsample``, and the slow pathway
of ``PackPathway``) is the window rule's, in :mod:`streamclf.media.clips`.

All functions are pure and thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import DataError
from streamclf.media.clips import slow_indices, uniform_indices

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
]


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
    slow pathway keeps the ``T // alpha`` frames of
    :func:`~streamclf.media.clips.slow_indices`, like pytorchvideo's ``PackPathway``.
    """
    if not alpha:
        return [clip]
    slow = np.ascontiguousarray(clip[:, slow_indices(clip.shape[1], alpha)])
    return [slow, clip]


def _check_frame(frame: object, index: int) -> np.ndarray:
    """``frame`` if it is an ``(H, W, 3)`` array with ``H, W >= 1``, else a DataError."""
    shape = getattr(frame, "shape", None)
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or min(
            frame.shape[:2]) < 1:
        what = f"shape {tuple(shape)}" if shape is not None else type(frame).__name__
        raise DataError(f"frame {index} must be an (H, W, 3) RGB image array, got {what}")
    return frame


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
        """Indices of the frames this transform keeps out of ``num_frames`` (the frames of
        one span, in order): :func:`~streamclf.media.clips.uniform_indices`, or all of them."""
        if not self.temporal_subsample:
            return np.arange(num_frames)
        return uniform_indices(num_frames, self.spec.num_frames)

    def prepare(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Temporal selection, then resize and crop of the frames kept:
        ``T x (H, W, 3)`` uint8 RGB -> ``(num_frames, crop, crop, 3)`` uint8 (``(T, ...)``
        without temporal subsampling). Only the selected frames are checked and resized.

        Raises:
            DataError: no frames, or a selected frame that is not an ``(H, W, 3)`` image.
        """
        if len(frames) == 0:
            raise DataError("no frames to classify")
        return np.stack([self.spatial(_check_frame(frames[int(i)], int(i)))
                         for i in self.select(len(frames))])

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        clip = normalize_clip(self.prepare(frames), self.spec.mean, self.spec.std)
        return pack_pathways(clip, self.spec.slowfast_alpha)
