"""``Picture``: one decoded frame, converted to RGB only when someone asks for it.

Sources hand out pictures, not RGB arrays, so that work is done once and only when needed
(architecture rule 2): a window of x3d_xs samples 4 of the ~48 frames in its 1.6 s, and the
ring converts just those; the overlay, MJPEG and event clips convert just the frames they
show, at their own rates. A frame no one looks at is decoded and never converted.

* :class:`ArrayPicture`: a frame that is an RGB array already (webcams read by OpenCV, the
  synthetic pattern, tests). ``rgb()`` returns it.
* :class:`AVPicture`: a decoded PyAV ``VideoFrame`` kept as the decoder gave it (YUV 4:2:0
  for H.264: 1.5 bytes a pixel, 1.38 MB at 1280x720 against 2.76 MB as RGB). ``rgb()``
  converts it with FFmpeg's swscale to ``rgb24`` at full size, then applies the stream's
  display rotation.

Why convert at full size, then resize with OpenCV (two passes) rather than let swscale
scale and convert in one: measured on 720p H.264 frames, one swscale pass to 323x182 costs
0.65 ms against ~1.1 ms for the two passes, but swscale widens its filter when it shrinks
(anti-aliasing), so its pixels differ from the reference chain's bilinear resize by 1.5
levels on average and up to 39; the two passes give exactly the pixels OpenCV's
``read()`` + ``cvtColor`` + ``resize`` gave (the same swscale conversion), so the zoo's
parity with pytorchvideo holds and the same file gives the same windows as before.

Thread-safety: a picture is immutable; ``rgb()`` may be called from any thread (each call
converts anew and returns a fresh array the caller owns, except :class:`ArrayPicture`,
whose array must not be written).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["AVPicture", "ArrayPicture", "Picture", "as_picture"]


@runtime_checkable
class Picture(Protocol):
    """A decoded frame: its size, the bytes it holds, and its ``(H, W, 3)`` uint8 RGB image.

    ``width``/``height`` are the displayed size (after rotation). ``nbytes`` is what keeping
    the picture costs in memory.
    """

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def rgb(self) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB, C-contiguous."""
        ...


class ArrayPicture:
    """A picture that is already an ``(H, W, 3)`` uint8 RGB array (not copied)."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    @property
    def width(self) -> int:
        return int(self._array.shape[1])

    @property
    def height(self) -> int:
        return int(self._array.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self._array.nbytes)

    def rgb(self) -> np.ndarray:
        return self._array

    def __repr__(self) -> str:
        return f"ArrayPicture({self.width}x{self.height})"


class AVPicture:
    """A PyAV ``VideoFrame`` converted on demand.

    Args:
        frame: the decoded frame (any pixel format swscale reads).
        rotation: clockwise degrees to turn it for display (0, 90, 180 or 270), from the
            stream's display matrix, as OpenCV's FFmpeg backend applies it.
    """

    __slots__ = ("_frame", "_nbytes", "_rotation")

    def __init__(self, frame: Any, rotation: int = 0) -> None:
        self._frame = frame
        self._rotation = rotation % 360
        self._nbytes = int(sum(plane.buffer_size for plane in frame.planes))

    @property
    def width(self) -> int:
        w = int(self._frame.width)
        return int(self._frame.height) if self._rotation in (90, 270) else w

    @property
    def height(self) -> int:
        h = int(self._frame.height)
        return int(self._frame.width) if self._rotation in (90, 270) else h

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def rgb(self) -> np.ndarray:
        image = self._frame.to_ndarray(format="rgb24")
        if self._rotation == 90:
            image = np.rot90(image, k=-1)
        elif self._rotation == 180:
            image = image[::-1, ::-1]
        elif self._rotation == 270:
            image = np.rot90(image, k=1)
        return np.ascontiguousarray(image) if self._rotation else image

    def __repr__(self) -> str:
        return f"AVPicture({self.width}x{self.height}, {self._frame.format.name})"


def as_picture(image: np.ndarray | Picture) -> Picture:
    """``image`` as a picture: an array is wrapped (an ``(H, W, 3)`` uint8 RGB image)."""
    return ArrayPicture(image) if isinstance(image, np.ndarray) else image
