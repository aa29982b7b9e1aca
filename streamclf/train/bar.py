"""The per-epoch progress bar of ``streamclf train``.

On a terminal it is redrawn in place (``\\r``) at most every ``redraw_s``; on anything
else (a log file, a CI pipe) it writes a plain line every ``line_every_s`` and at the
end, so logs stay readable. Not thread-safe: drive it from the training thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["EpochBar"]


class EpochBar:
    """``epoch 2/10 [#####.....] 12/40 batches  loss 0.812  3.1 s/batch  ETA 1:27``.

    Args:
        epoch, epochs: 1-based epoch number and the run's length.
        total: batches in the epoch.
        stream: where to write (``None``: silent).
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self, epoch: int, epochs: int, total: int, stream: TextIO | None,
        clock: Callable[[], float] = time.monotonic, redraw_s: float = 0.2,
        line_every_s: float = 30.0,
    ) -> None:
        self.label = f"epoch {epoch}/{epochs}"
        self.total = total
        self.stream = stream
        self.clock = clock
        self.tty = bool(stream is not None and stream.isatty())
        self.interval = redraw_s if self.tty else line_every_s
        self.start = clock()
        self.last_write = self.start
        self.done = 0
        self.loss = float("nan")
        self._shown = -1

    def line(self) -> str:
        elapsed = self.clock() - self.start
        per = elapsed / self.done if self.done else float("nan")
        eta = per * (self.total - self.done) if self.done else float("nan")
        width = len(str(self.total))
        text = f"{self.done:>{width}}/{self.total} batches  loss {self.loss:.4f}"
        if self.done:
            text += f"  {per:.2f} s/batch  ETA {_clock(eta)}"
        if self.tty:
            filled = int(20 * self.done / self.total) if self.total else 20
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {text}"
        return f"{self.label} {text}"

    def update(self, done: int, loss: float) -> None:
        """Record ``done`` batches with running mean ``loss``; redraw when due."""
        self.done, self.loss = done, loss
        if self.stream is None:
            return
        if (self.tty and self._shown < 0) or self.clock() - self.last_write >= self.interval:
            self._write(self.stream)

    def close(self) -> None:
        """Show the final state (once) and end the terminal line."""
        if self.stream is None:
            return
        if self._shown != self.done:
            self._write(self.stream)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, stream: TextIO) -> None:
        self.last_write = self.clock()
        self._shown = self.done
        stream.write(f"\r{self.line()}\x1b[K" if self.tty else f"{self.line()}\n")
        stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
