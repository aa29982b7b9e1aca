"""The console status line: one event sink, for every kind of run.

It reads the ``prediction`` events (their ``input_fps``, ``latency_ms``, ``drops`` and
labels) and prints, per stream::

    [cam0] in  30.0 fps |  9.8 clips/s | latency 120 ms | drops 0 | walking the dog

On a terminal with one stream the line is rewritten in place on every prediction;
otherwise each stream's latest line is printed every ``every_s`` seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TextIO

from streamclf.types import Event, EventType

__all__ = ["StatusLine"]


class StatusLine:
    """An event sink that writes status lines to ``out``.

    Thread-safety: ``write`` and ``close`` may be called from any thread (one lock); the
    bus calls them from this sink's own queue thread.
    """

    def __init__(self, out: TextIO, every_s: float = 2.0) -> None:
        self.out = out
        self.every_s = every_s
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._lines: dict[str, str] = {}
        self._rate: dict[str, float] = {}
        self._last_ts: dict[str, float] = {}
        self._last_print = time.monotonic()  # the first periodic print after every_s
        self._rewrote = False

    def write(self, event: Event) -> None:
        if event.type is not EventType.PREDICTION:
            return
        f = event.fields
        sid = event.stream
        with self._lock:
            prev = self._last_ts.get(sid)
            if prev is not None and event.ts > prev:
                rate = 1.0 / (event.ts - prev)
                old = self._rate.get(sid, 0.0)
                self._rate[sid] = rate if old == 0 else 0.8 * old + 0.2 * rate
            self._last_ts[sid] = event.ts
            labels, scores = f.get("labels") or ["-"], f.get("scores") or [0.0]
            label = f.get("stable_label") or f"({labels[0]} {float(scores[0]):.2f})"
            self._lines[sid] = (
                f"[{sid}] in {float(f.get('input_fps') or 0.0):5.1f} fps | "
                f"{self._rate.get(sid, 0.0):4.1f} clips/s | "
                f"latency {float(f.get('latency_ms') or 0.0):.0f} ms | "
                f"drops {f.get('drops', 0)} | {str(label)[:40]}")
            self._print()

    def _print(self) -> None:
        now = time.monotonic()
        if self._tty and len(self._lines) == 1:
            (line,) = self._lines.values()
            self.out.write(f"\r{line:<110}")
            self._rewrote = True
        elif now - self._last_print >= self.every_s:
            if self._rewrote:
                self.out.write("\n")
                self._rewrote = False
            for line in self._lines.values():
                self.out.write(f"{line}\n")
        else:
            return
        self._last_print = now
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()

    def close(self) -> None:
        with self._lock:
            if self._rewrote:
                with contextlib.suppress(OSError, ValueError):
                    self.out.write("\n")
                    self.out.flush()
                self._rewrote = False
