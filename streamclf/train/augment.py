"""Training and validation clip transforms: uint8 frames in, normalised network inputs out.

Training (the Kinetics fine-tuning recipe)::

    UniformTemporalSubsample(T) -> random short-side scale in [crop * 256/224, crop * 320/224]
    -> random crop (crop x crop) -> horizontal flip (p = 0.5) -> colour jitter
    (brightness, contrast, saturation; one draw per clip) -> x / 255 -> Normalize(mean, std)
    -> PackPathway(alpha)

Validation is exactly the inference transform (:class:`streamclf.media.preprocess.ClipTransform`):
uniform subsample, short-side resize to ``side_size``, centre crop, normalise.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a clip's
augmentation is a pure function of ``(frames, rng state)``. All functions are thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from streamclf._lazy import cv2_module
from streamclf.errors import DataError
from streamclf.media.clips import uniform_indices
from streamclf.media.preprocess import (
    ClipTransform,
    normalize_clip,
    pack_pathways,
    short_side_shape,
)

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec

__all__ = [
    "ColorJitter",
    "TrainTransform",
    "ValTransform",
    "color_jitter",
    "hflip",
    "random_crop",
    "random_short_side_scale",
    "train_scale_range",
]

#: The reference recipe scales the short side to [256, 320] for a 224 crop.
_SCALE_LO, _SCALE_HI, _SCALE_CROP = 256, 320, 224
#: ITU-R 601 luma weights (as torchvision's ``rgb_to_grayscale``).
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def train_scale_range(crop_size: int) -> tuple[int, int]:
    """Short-side range of the random scale for ``crop_size``: ``[256, 320]`` for 224,
    proportionally for other crops (``182 -> (208, 260)``)."""
    lo = max(crop_size, round(crop_size * _SCALE_LO / _SCALE_CROP))
    return lo, max(lo, round(crop_size * _SCALE_HI / _SCALE_CROP))


def random_short_side_scale(
    frames: np.ndarray, lo: int, hi: int, rng: np.random.Generator
) -> np.ndarray:
    """Resize every frame of ``(T, H, W, 3)`` uint8 so the short side is one size drawn
    uniformly from ``[lo, hi]`` (bilinear). Returns ``(T, H', W', 3)`` uint8."""
    size = int(rng.integers(lo, hi + 1))
    t, h, w = frames.shape[:3]
    new_h, new_w = short_side_shape(h, w, size)
    if (new_h, new_w) == (h, w):
        return frames
    cv2 = cv2_module()
    out = np.empty((t, new_h, new_w, frames.shape[3]), dtype=np.uint8)
    for i in range(t):
        out[i] = cv2.resize(frames[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out


def random_crop(frames: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size x size`` window, at a random position, cut from every frame of
    ``(T, H, W, C)``. Raises :class:`~streamclf.errors.DataError` if the frames are smaller
    than ``size``."""
    h, w = frames.shape[1:3]
    if h < size or w < size:
        raise DataError(f"frames {h}x{w} are smaller than the crop {size}")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return frames[:, top : top + size, left : left + size]


def hflip(frames: np.ndarray) -> np.ndarray:
    """Mirror ``(T, H, W, C)`` frames left to right (a view)."""
    return frames[:, :, ::-1]


@dataclass(frozen=True)
class ColorJitter:
    """Strengths of the colour jitter: each factor is drawn from ``[1 - s, 1 + s]``."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4


def color_jitter(frames: np.ndarray, jitter: ColorJitter, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation changes, one draw per clip (every frame gets the
    same factors, so changes over time, the thing actions are made of, are kept).

    ``(T, H, W, 3)`` uint8 RGB in, the same shape uint8 out. Contrast blends with the
    clip's mean grey level and saturation with each pixel's grey, as torchvision does
    for single images.
    """
    def draw(strength: float) -> float:
        return float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))

    b, c, s = draw(jitter.brightness), draw(jitter.contrast), draw(jitter.saturation)
    x = frames.astype(np.float32) * b
    if c != 1.0:
        mean = float((x @ _LUMA).mean())
        x = x * c + mean * (1.0 - c)
    if s != 1.0:
        grey = (x @ _LUMA)[..., None]
        x = x * s + grey * (1.0 - s)
    return np.clip(x, 0.0, 255.0).astype(np.uint8)


class TrainTransform:
    """The training clip transform (see the module doc).

    Args:
        num_frames: frames kept (uniformly) from the decoded clip.
        crop_size: side of the square random crop.
        mean, std: normalisation of ``frames / 255`` per RGB channel.
        slowfast_alpha: SlowFast's frame-rate ratio (``None``: one pathway).
        flip: mirror half of the clips left to right.
        jitter: colour jitter strengths (``None``: no jitter).

    ``transform(frames, rng)`` with ``frames`` an ``(N, H, W, 3)`` uint8 RGB array returns
    one ``(3, T_i, crop, crop)`` float32 array per pathway. Thread-safe (no state).
    """

    def __init__(
        self,
        num_frames: int,
        crop_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        slowfast_alpha: int | None = None,
        flip: bool = True,
        jitter: ColorJitter | None = None,
    ) -> None:
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.scale_range = train_scale_range(crop_size)
        self.mean = mean
        self.std = std
        self.slowfast_alpha = slowfast_alpha
        self.flip = flip
        self.jitter = jitter if jitter is not None else ColorJitter()

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        if len(frames) == 0:
            raise DataError("no frames in the clip")
        clip = frames[uniform_indices(len(frames), self.num_frames)]
        lo, hi = self.scale_range
        clip = random_short_side_scale(clip, lo, hi, rng)
        clip = random_crop(clip, self.crop_size, rng)
        if self.flip and rng.random() < 0.5:
            clip = hflip(clip)
        clip = color_jitter(clip, self.jitter, rng)
        normed = normalize_clip(np.ascontiguousarray(clip), self.mean, self.std)
        return pack_pathways(normed, self.slowfast_alpha)


class ValTransform:
    """The validation transform: exactly inference's :class:`ClipTransform` (uniform
    subsample, short-side resize, centre crop, normalise); ``rng`` is ignored. A class
    rather than a lambda so that loader workers can be started by pickling."""

    def __init__(self, spec: ModelSpec) -> None:
        self.inner = ClipTransform(spec)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return self.inner(frames)
