"""Regions of interest: the part of each source frame the model sees.

A stream's ``roi`` is ``(x, y, w, h)``: fractions of the frame when every value is <= 1,
pixels when any is > 1 (the rule of :func:`streamclf.sections.parse_roi`, which has checked
it already). It is resolved against each frame's own size, to an integer pixel box clamped
to the frame, cut out of the source frame, and then resized and centre-cropped exactly as a
whole frame would be (:func:`~streamclf.media.preprocess.resize_and_crop`)::

    (H, W, 3) uint8 RGB --crop_roi--> (y1 - y0, x1 - x0, 3) --resize_and_crop--> (c, c, 3)

Example::

    transform = roi_transform((0.25, 0.0, 0.5, 1.0), side=182, crop=182)
    transform(frame)   # (182, 182, 3) uint8 of the middle half of the frame

All functions are pure and thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from streamclf.errors import ConfigError
from streamclf.media.preprocess import resize_and_crop

__all__ = ["Roi", "crop_roi", "resolve_roi", "roi_transform"]

#: ``(x, y, w, h)``: fractions of the frame (every value <= 1) or pixels (any > 1).
Roi = tuple[float, float, float, float]


#: The longest side of a resolved box may be at most this many times its shortest: the short
#: side is scaled up to the model's size, so a 1x256 strip would cost ~25 MB a frame.
MAX_ASPECT = 32


def _edge(value: float) -> int:
    """Nearest integer, halves up (``round`` would round halves to even)."""
    return math.floor(value + 0.5)


def resolve_roi(roi: Roi, height: int, width: int) -> tuple[int, int, int, int]:
    """The pixel box ``(x0, y0, x1, y1)`` of ``roi`` in a ``height x width`` frame: columns
    ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``, at least one pixel each way.

    Each edge is rounded to the nearest pixel, halves up: ``x0 = round(x * width)`` and
    ``x1 = round((x + w) * width)`` for fractions (so boxes that tile the frame in fractions
    tile it in pixels, on any frame size, odd ones included), ``round(x)`` and
    ``round(x + w)`` for pixels. The box is then clamped to the frame: a pixel box that
    reaches past the right or bottom edge is cut there.

    Raises:
        ConfigError: a pixel box whose top-left corner lies outside the frame (nothing of
            it is in the frame), a box longer than :data:`MAX_ASPECT` times its width once
            clamped, or a frame size under 1x1.
    """
    if height < 1 or width < 1:
        raise ConfigError(f"roi: the frame is {width}x{height} (width x height): empty")
    x, y, w, h = roi
    pixels = max(roi) > 1.0
    if not pixels:
        x, w, y, h = x * width, w * width, y * height, h * height
    x0, y0 = max(0, _edge(x)), max(0, _edge(y))
    if pixels and (x0 >= width or y0 >= height):
        raise ConfigError(f"roi [{x:g}, {y:g}, {w:g}, {h:g}] (pixels) lies outside the "
                          f"{width}x{height} frame: x must be below {width} and y below "
                          f"{height}")
    x0, y0 = min(x0, width - 1), min(y0, height - 1)  # a fraction ending at the edge
    x1 = min(width, max(x0 + 1, _edge(x + w)))
    y1 = min(height, max(y0 + 1, _edge(y + h)))
    long, short = max(x1 - x0, y1 - y0), min(x1 - x0, y1 - y0)
    if long > MAX_ASPECT * short:  # its short side is scaled to the model's: memory
        raise ConfigError(f"roi [{x:g}, {y:g}, {w:g}, {h:g}] is a {x1 - x0}x{y1 - y0} strip "
                          f"of the {width}x{height} frame; the model needs a box at most "
                          f"{MAX_ASPECT}:1")
    return x0, y0, x1, y1


def crop_roi(frame: np.ndarray, roi: Roi) -> np.ndarray:
    """The region ``roi`` of an ``(H, W, C)`` frame: an ``(y1 - y0, x1 - x0, C)`` view (no
    copy) with the box of :func:`resolve_roi`.

    Raises:
        ConfigError: as :func:`resolve_roi`.
    """
    x0, y0, x1, y1 = resolve_roi(roi, frame.shape[0], frame.shape[1])
    return frame[y0:y1, x0:x1]


def roi_transform(roi: Roi | None, side: int, crop: int) -> Callable[[np.ndarray], np.ndarray]:
    """The once-per-frame spatial step of a stream: ``(H, W, 3) uint8 RGB -> (crop, crop, 3)
    uint8``, C-contiguous. With a ``roi`` the region is cut out first (see the module
    docstring); without one the whole frame is resized and cropped.

    The returned function raises ConfigError for a frame that a pixel ``roi`` lies outside.
    """
    if roi is None:
        return lambda image: resize_and_crop(image, side, crop)
    box = roi
    return lambda image: resize_and_crop(crop_roi(image, box), side, crop)
