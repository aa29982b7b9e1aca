"""Alerts: when a stream's stable label is worth telling someone about.

An :class:`AlertTracker` turns one stream's smoothed predictions into ``alert`` events, by
the stream's :class:`~streamclf.sections.AlertRule` (``alerts:`` in its config):

* **start**: a label the rule ``matches`` has been the smoother's stable label, with a
  smoothed score >= ``min_score``, continuously for ``min_duration_s`` of media time (from
  the first prediction that qualified to this one), and the label's cooldown is over;
* **end**: that label stops being the stable label, or the stream resets (a reconnect:
  ``reason: "reset"``) or stops (``reason: "stopped"``); a score that dips under
  ``min_score`` while the label stays stable does not end it;
* ``max_score``: the label's highest smoothed score from the alert's start to its end;
* **cooldown**: no new alert for the same label until ``cooldown_s`` of media time after one
  ended (other labels are not held back).

Events (``alert``, with the stream's ``ts`` and the run's ``seq`` as every event)::

    media_ts     the window's end in the source's timeline, seconds from the first frame
    window_end   the wall-clock capture time of the window's last frame
    alert_id     unique, sortable, file-name safe: 20261202T101500.123Z-0001 (UTC start
                 time, then a counter of this process)
    phase        "start" | "end"
    label, score, max_score
    end only:    reason ("label", "reset", "stopped"), duration_s (media time), and with
                 clips on, clip and snapshot (ClipsConfig.paths: where the clip writer,
                 listening to these events, writes them)

Pure logic: no thread, no I/O, no clock of its own (every time comes with the update), so it
is tested on synthetic predictions.

Thread-safety: not thread-safe; one per stream, used by the thread that publishes the
stream's predictions (the runner calls it under its publish lock).
"""

from __future__ import annotations

import difflib
import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamclf.errors import ConfigError
from streamclf.live.events import make_event
from streamclf.sections import AlertRule, ClipsConfig
from streamclf.types import Event, EventType

__all__ = ["AlertTracker", "new_alert_id"]

_COUNTER = itertools.count(1)
_COUNTER_LOCK = threading.Lock()
#: Media-time slack when comparing durations (window ends are float sums of strides).
_EPS = 1e-6


def new_alert_id(wall_ts: float) -> str:
    """``20261202T101500.123Z-0001``: the UTC time ``wall_ts`` to the millisecond, then a
    counter shared by every tracker of this process (thread-safe). Letters, digits, ``.``
    and ``-`` only, so it is safe in file names and topics; ids sort by start time."""
    whole = math.floor(wall_ts)
    millis = min(999, int((wall_ts - whole) * 1000))
    with _COUNTER_LOCK:
        n = next(_COUNTER)
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(whole))}.{millis:03d}Z-{n:04d}"


@dataclass
class _Open:
    """The alert under way."""

    alert_id: str
    label: str
    started: float  # media time of its start
    score: float
    max_score: float


class AlertTracker:
    """Alert start/end events of one stream (see the module docstring for the rule).

    Args:
        stream: the stream id the events carry.
        rule: when to alert.
        labels: the model's class names, in the order of the probability vectors.
        clips: when set, ``end`` events carry ``clip`` and ``snapshot`` paths from
            :meth:`ClipsConfig.paths`.

    Raises:
        ConfigError: ``rule`` is not an :class:`AlertRule`, ``labels`` is empty, or the rule
            names a label the model does not have (with the closest one it has).

    Thread-safety: not thread-safe (one per stream, one publishing thread).

    Example::

        tracker = AlertTracker("door", AlertRule(labels=["falling"], min_duration_s=1.0),
                               labels)
        for event in tracker.update(media_ts, result.stable_label, result.probs,
                                    ts=time.time(), window_end=window.wall_end):
            bus.publish(event)
        for event in tracker.finish("stopped", ts=time.time()):  # at the end
            bus.publish(event)
    """

    def __init__(self, stream: str, rule: AlertRule, labels: Sequence[str],
                 clips: ClipsConfig | None = None) -> None:
        if not isinstance(rule, AlertRule):
            raise ConfigError(f"alerts need an AlertRule, got {type(rule).__name__}")
        if not labels:
            raise ConfigError("alerts need the model's labels")
        self.stream, self.rule, self.clips = stream, rule, clips
        self._index = {name: i for i, name in enumerate(labels)}
        for label in () if rule.labels == "any" else rule.labels:
            if label not in self._index:  # a typo would never alert: say so at once
                close = difflib.get_close_matches(label, list(self._index), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"alerts of stream {stream!r}: {label!r} is not a label of "
                                  f"the model{hint}")
        self._open: _Open | None = None
        self._run: tuple[str, float] | None = None  # (label, media time it qualified from)
        self._cooldown_until: dict[str, float] = {}
        self._media = 0.0  # the latest media time seen
        self._window_end = 0.0
        self.started = 0  # alerts started so far

    @property
    def active(self) -> str | None:
        """The label of the alert under way, or None."""
        return None if self._open is None else self._open.label

    def update(self, media_ts: float, stable_label: str | None, probs: np.ndarray, *,
               ts: float, window_end: float) -> list[Event]:
        """One published prediction: the alert events it causes (an end before a start).

        Args:
            media_ts: the window's end, seconds from the stream's first frame.
            stable_label: the smoother's stable label after this prediction (None: none).
            probs: ``(K,)`` the smoothed probabilities (the stable label's score is read here).
            ts: the events' ``ts`` (wall-clock seconds: the prediction's publish time).
            window_end: the wall-clock capture time of the window's last frame.
        """
        self._media, self._window_end = float(media_ts), float(window_end)
        out: list[Event] = []
        score = self._score(probs, stable_label)
        opened = self._open
        if opened is not None:
            if stable_label == opened.label:
                opened.score = score
                opened.max_score = max(opened.max_score, score)
            else:
                opened.score = self._score(probs, opened.label)
                out.append(self._end("label", ts))
        qualifies = stable_label is not None and self.rule.matches(stable_label) \
            and score >= self.rule.min_score
        if not qualifies:
            self._run = None
        elif self._run is None or self._run[0] != stable_label:
            self._run = (str(stable_label), self._media)
        if self._open is None and self._run is not None:
            label, since = self._run
            if self._media - since + _EPS >= self.rule.min_duration_s and \
                    self._media + _EPS >= self._cooldown_until.get(label, -math.inf):
                out.append(self._start(label, score, ts))
        return out

    def finish(self, reason: str, ts: float) -> list[Event]:
        """End the alert under way (the stream reset or stopped); forget the label's run of
        predictions, as the smoother forgets its history. ``[]`` when none is open."""
        self._run = None
        return [self._end(reason, ts)] if self._open is not None else []

    # -- internals ---------------------------------------------------------------------
    def _score(self, probs: np.ndarray, label: str | None) -> float:
        if label is None or label not in self._index:
            return 0.0
        return float(np.asarray(probs).reshape(-1)[self._index[label]])

    def _start(self, label: str, score: float, ts: float) -> Event:
        self._open = opened = _Open(new_alert_id(ts), label, self._media, score, score)
        self.started += 1
        return self._event(opened, "start", ts)

    def _end(self, reason: str, ts: float) -> Event:
        opened, self._open = self._open, None
        if opened is None:  # callers check first; nothing to end
            raise RuntimeError("no alert under way")
        self._cooldown_until[opened.label] = self._media + self.rule.cooldown_s
        return self._event(opened, "end", ts, reason)

    def _event(self, opened: _Open, phase: str, ts: float, reason: str | None = None) -> Event:
        fields: dict[str, object] = {
            "media_ts": round(self._media, 3), "window_end": round(self._window_end, 6),
            "alert_id": opened.alert_id, "phase": phase, "label": opened.label,
            "score": round(opened.score, 4), "max_score": round(opened.max_score, 4),
        }
        if phase == "end":
            fields["reason"] = reason
            fields["duration_s"] = round(max(0.0, self._media - opened.started), 3)
            if self.clips is not None:
                fields["clip"], fields["snapshot"] = self.clips.paths(self.stream,
                                                                      opened.alert_id)
        return make_event(EventType.ALERT, self.stream, round(ts, 6), **fields)
