"""``FakeSource``: a scripted :class:`~streamclf.media.sources.FrameSource` for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from streamclf.errors import SourceError
from streamclf.media.picture import Picture, as_picture
from streamclf.types import SourceInfo

__all__ = ["FakeSource"]


class FakeSource:
    """A scripted source for tests.

    ``steps`` are played one per ``read()``: an array is returned as a frame (timestamp
    ``k / fps`` for the k-th frame), an exception is raised, ``None`` is an end of stream, and
    :attr:`BLOCK` makes ``read()`` block on :attr:`unblock` (set by ``close()`` when
    ``close_unblocks``, else only by the test: a stuck driver). After the steps run out,
    ``read()`` returns None (``end="eof"``), raises SourceError (``"error"``) or blocks
    (``"block"``).

    Thread-safety: ``close()`` and ``unblock.set()`` from any thread.
    """

    BLOCK = "block"

    def __init__(self, steps: Iterable[np.ndarray | BaseException | str | None] = (),
                 *, fps: float = 30.0, is_live: bool = True, end: str = "eof",
                 close_unblocks: bool = True, name: str = "fake") -> None:
        self._steps = list(steps)
        self._end, self._close_unblocks, self._fps = end, close_unblocks, fps
        self.info = SourceInfo(name=name, kind="fake", fps=fps, width=0, height=0,
                               is_live=is_live)
        self.unblock = threading.Event()
        self.closed = threading.Event()
        self.reads = 0
        self._frames = 0

    def read(self, timeout_s: float = 5.0) -> tuple[Picture, float] | None:
        self.reads += 1
        if self.closed.is_set():
            raise SourceError(f"{self.info.name}: source is closed")
        if self._steps:
            step = self._steps.pop(0)
        else:
            step = {"eof": None, "block": self.BLOCK}.get(
                self._end, SourceError(f"{self.info.name}: scripted failure"))
        if isinstance(step, str):  # BLOCK
            self.unblock.wait()
            raise SourceError(f"{self.info.name}: read interrupted")
        if isinstance(step, BaseException):
            raise step
        if step is None:
            return None
        self._frames += 1
        return as_picture(step), (self._frames - 1) / self._fps

    def close(self) -> None:
        self.closed.set()
        if self._close_unblocks:
            self.unblock.set()
