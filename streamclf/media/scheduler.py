"""``WindowScheduler``: when a stream's next clip is due, on the stream clock.

A window spans the model's clip duration (``num_frames * sampling_rate / 30`` s) and
a new one is due every ``stride`` seconds. Due times are fixed on a grid anchored at
the first moment a full window of history exists, so the cadence does not drift
with inference time.

* ``BufferPolicy.LATEST`` (live): when inference fell behind, the freshest due window
  wins and the skipped ones are counted.
* ``BufferPolicy.LOSSLESS`` (``pace: fast``): every due window is returned, oldest first.

Not thread-safe: one scheduler per stream, driven by the inference thread.
"""

from __future__ import annotations

import math

from streamclf.errors import ConfigError
from streamclf.types import BufferPolicy

__all__ = ["WindowScheduler"]


class WindowScheduler:
    """Decides which window end time to classify next.

    Args:
        duration: window length in seconds.
        stride: seconds between due windows (default: half the duration).
        policy: LATEST (freshest wins, skipped counted) or LOSSLESS (every window).
        frame_interval: the source's frame interval (1/fps); the first window is due
            once the frames held span ``duration - frame_interval`` (a full window).
    """

    def __init__(
        self, duration: float, stride: float | None = None,
        policy: BufferPolicy = BufferPolicy.LATEST, frame_interval: float = 1.0 / 30.0,
    ) -> None:
        if duration <= 0:
            raise ConfigError("duration must be > 0")
        stride = duration / 2.0 if stride is None else stride
        if stride <= 0:
            raise ConfigError("stride must be > 0")
        self.duration = duration
        self.stride = stride
        self.policy = policy
        self.frame_interval = max(0.0, frame_interval)
        self.skipped = 0
        self.emitted = 0
        self._anchor: float | None = None  # due time of window 0
        self._next_index = 0

    def reset(self) -> None:
        """Forget the grid (after a reconnect): the next window needs a full new history."""
        self._anchor = None
        self._next_index = 0

    def peek(self, oldest_ts: float, newest_ts: float) -> bool:
        """Whether :meth:`poll` would return a window now (changes nothing)."""
        if self._anchor is None:
            return newest_ts - oldest_ts + 1e-9 >= self.duration - self.frame_interval
        return math.floor((newest_ts - self._anchor) / self.stride + 1e-9) >= self._next_index

    def poll(self, oldest_ts: float, newest_ts: float) -> float | None:
        """Given the span of frames held, return the end time of the window to cut now:
        the newest frame's time (LATEST) or the grid's due time (LOSSLESS).

        Returns None when no window is due yet.
        """
        if self._anchor is None:
            if newest_ts - oldest_ts + 1e-9 < self.duration - self.frame_interval:
                return None
            self._anchor = newest_ts
            self._next_index = 0
        due_index = math.floor((newest_ts - self._anchor) / self.stride + 1e-9)
        if due_index < self._next_index:
            return None
        if self.policy is BufferPolicy.LOSSLESS:
            chosen = self._next_index
        else:
            chosen = due_index
            self.skipped += due_index - self._next_index
        self._next_index = chosen + 1
        self.emitted += 1
        if self.policy is BufferPolicy.LATEST:
            # Live: the window ends on the newest frame, so the label is as fresh as it can
            # be (the grid only sets the cadence); cutting at the grid time would leave out
            # up to one frame interval of the newest video.
            return newest_ts
        return self._anchor + chosen * self.stride

    def next_window_start(self) -> float | None:
        """Earliest timestamp the next due window can still use (frames before it may go)."""
        if self._anchor is None:
            return None
        return self._anchor + self._next_index * self.stride - self.duration
