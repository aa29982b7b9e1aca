"""A progress line for batch commands: done / total, rate, ETA, failures.

On a terminal the line is redrawn in place (``\\r``) at most every ``redraw_s``; on
anything else (a log file, a CI pipe) a plain line is written every ``line_every_s``
seconds and once at the end, so logs stay readable.

Not thread-safe: call it from one thread (the one that collects results).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``75.2 -> "1:15"``, ``3725 -> "1:02:05"``; ``"?"`` when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports ``done / total`` on ``stream`` (stderr in the CLI).

    Args:
        total: how many items the job has.
        stream: where to write; ``None`` disables the output (``--quiet``).
        unit: what an item is called (``"videos"``).
        clock: monotonic seconds (injected for tests).
        redraw_s: minimum time between two in-place redraws on a terminal.
        line_every_s: time between two plain lines when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None,
        unit: str = "videos",
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
        redraw_s: float = 0.2,
        line_every_s: float = 10.0,
    ) -> None:
        self.total = total
        self.stream = stream
        self.unit = unit
        self.prefix = prefix
        self.clock = clock
        self.tty = bool(stream is not None and stream.isatty())
        self.interval = redraw_s if self.tty else line_every_s
        self.start = clock()
        self.last_write = self.start
        self.done = 0
        self.failed = 0
        self._shown: tuple[int, int] | None = None

    def line(self) -> str:
        """The current status, e.g. ``12/32 videos  4.1 videos/s  ETA 0:05  1 failed``."""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = format_eta((self.total - self.done) / rate) if rate > 0 else "?"
        width = len(str(self.total))
        text = (f"{self.done:>{width}}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  "
                f"ETA {eta}")
        if self.tty:
            filled = int(20 * self.done / self.total) if self.total else 20
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {text}"
        return f"{text}  {self.failed} failed" if self.failed else text

    def update(self, done: int, failed: int = 0) -> None:
        """Record progress; writes once ``interval`` has passed since the last write (and
        at once the first time on a terminal)."""
        self.done, self.failed = done, failed
        if self.stream is None:
            return
        if (self.tty and self._shown is None) or self.clock() - self.last_write >= self.interval:
            self._write(self.stream)

    def close(self) -> None:
        """Write the final state unless it is already shown (and end a terminal's line)."""
        if self.stream is None:
            return
        if self._shown != (self.done, self.failed):
            self._write(self.stream)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, stream: TextIO) -> None:
        self.last_write = self.clock()
        self._shown = (self.done, self.failed)
        text = f"{self.prefix}{self.line()}"
        stream.write(f"\r{text}\x1b[K" if self.tty else f"{text}\n")
        stream.flush()
