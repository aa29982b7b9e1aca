"""``WindowScheduler``: when a stream's next clip is due, on the stream clock.

A window spans the model's clip duration (``num_frames * sampling_rate / 30`` s) and
a new one is due every ``stride`` seconds. Due times are fixed on a grid, so the cadence
does not drift with inference time. Where the grid starts (the *anchor*, the end time of
window 0) depends on the policy:

* ``BufferPolicy.LATEST`` (live): the grid is anchored on the newest frame held at the
  first poll that sees a full window of history; when inference fell behind, the freshest
  due window wins and the skipped ones are counted (``skipped``). Each window ends on the
  newest frame (the freshest label); the grid only sets the cadence.
* ``BufferPolicy.LOSSLESS`` (``pace: fast``): the grid is anchored on the *oldest* frame held
  at the first poll: window 0 ends at ``oldest_ts + duration - frame_interval`` (the first
  full window of the stream), then one every ``stride``. Every due window is returned, oldest
  first, ending at its grid time; none is ever skipped. So the windows of a file depend only
  on its frames, never on when the consumer first looked: an instant source may have filled
  the ring long before the first poll, and the result is the same windows as ``pace:
  realtime`` (where the first full window is seen as it completes). For this to be lossless
  the ring must still hold the frames of the first window at the first poll (a LOSSLESS
  :class:`~streamclf.media.ring.FrameRing` does: it refuses pushes, it never evicts a frame
  not released) and the consumer must release only frames older than
  :meth:`WindowScheduler.next_window_start` (as the inference worker does).

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
        policy: LATEST (grid anchored on the newest frame at the first poll; freshest
            wins, skipped counted) or LOSSLESS (grid anchored on the oldest frame at the
            first poll; every window, none skipped). See the module docstring.
        frame_interval: the source's frame interval (1/fps); the first window is due
            once the frames held span ``duration - frame_interval`` (a full window).

    Counters: ``emitted`` (windows returned by :meth:`poll`), ``skipped`` (due windows passed
    over because a fresher one was due: LATEST only, always 0 with LOSSLESS).
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
        """Forget the grid (after a reconnect): the next window needs a full new history,
        and the next :meth:`poll` that sees one anchors a new grid."""
        self._anchor = None
        self._next_index = 0

    def peek(self, oldest_ts: float, newest_ts: float) -> bool:
        """Whether :meth:`poll` would return a window now (changes nothing)."""
        anchor = self._anchor if self._anchor is not None else self._first_anchor(
            oldest_ts, newest_ts)
        if anchor is None:
            return False
        return self._due_index(anchor, newest_ts) >= self._next_index

    def poll(self, oldest_ts: float, newest_ts: float) -> float | None:
        """Given the span of frames held, return the end time of the window to cut now:
        the newest frame's time (LATEST) or the grid's due time (LOSSLESS).

        The first poll that sees a full window of history anchors the grid: on
        ``newest_ts`` (LATEST) or on ``oldest_ts + duration - frame_interval`` (LOSSLESS:
        the first full window of the frames held, so with a lossless ring the first frame of
        the stream, however late this first poll comes). A LOSSLESS scheduler then returns
        one window per call, oldest due first, until it has caught up with ``newest_ts``.

        Returns None when no window is due yet.
        """
        if self._anchor is None:
            anchor = self._first_anchor(oldest_ts, newest_ts)
            if anchor is None:
                return None
            self._anchor = anchor
            self._next_index = 0
        due_index = self._due_index(self._anchor, newest_ts)
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

    def _first_anchor(self, oldest_ts: float, newest_ts: float) -> float | None:
        """Where a grid started now would be anchored, or None without a full window yet."""
        if newest_ts - oldest_ts + 1e-9 < self.duration - self.frame_interval:
            return None
        if self.policy is BufferPolicy.LOSSLESS:
            # Window 0 is the first full window of the frames held, not the newest one: the
            # windows a slow first poll would otherwise miss are all still in the ring.
            return min(newest_ts, oldest_ts + self.duration - self.frame_interval)
        return newest_ts

    def _due_index(self, anchor: float, newest_ts: float) -> int:
        """Index of the newest grid window that ``newest_ts`` completes (-1: none yet)."""
        return math.floor((newest_ts - anchor) / self.stride + 1e-9)

    def next_window_start(self) -> float | None:
        """Earliest timestamp the next due window can still use (frames before it may go)."""
        if self._anchor is None:
            return None
        return self._anchor + self._next_index * self.stride - self.duration
