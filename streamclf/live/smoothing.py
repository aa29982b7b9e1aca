"""Temporal smoothing of per-clip probabilities, with hysteresis for stable labels.

A live classifier's top-1 flickers from clip to clip. :class:`Smoother` averages the
last ``window`` probability vectors and only announces a label once it has led the
average for ``start_after`` updates in a row with a score of at least ``threshold``;
it ends the label when its averaged score falls under ``threshold`` or another label
starts. Each change comes out once, as a :class:`Change`, for the event log.

Example::

    sm = Smoother(["run", "walk", "sit"], window=3, threshold=0.3, start_after=2)
    res = sm.update(np.array([0.7, 0.2, 0.1], np.float32))
    res.labels, res.scores, res.stable_label, res.changes

Thread-safety: a :class:`Smoother` is NOT thread-safe. Use one per stream, owned by the
thread that publishes that stream's predictions (the inference thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from streamclf.errors import ConfigError, ModelError

__all__ = ["Change", "SmoothedResult", "Smoother", "top_k"]

ChangeKind = Literal["label_start", "label_end"]


class Change(NamedTuple):
    """A stable-label change: ``kind`` is ``"label_start"`` or ``"label_end"``.

    ``score`` is the label's smoothed score at the update that caused the change.
    """

    kind: ChangeKind
    label: str
    score: float


@dataclass(frozen=True)
class SmoothedResult:
    """What one :meth:`Smoother.update` produced.

    Attributes:
        labels: top-k labels of the averaged probabilities, best first.
        scores: their averaged scores, descending, each in ``[0, 1]``.
        stable_label: the label currently active after hysteresis, or ``None``.
        changes: the changes this update caused, in order (an end before a start).
        probs: ``(K,)`` float32 averaged probabilities over all labels.
    """

    labels: tuple[str, ...]
    scores: tuple[float, ...]
    stable_label: str | None
    changes: tuple[Change, ...]
    probs: np.ndarray = field(repr=False)


def top_k(
    probs: np.ndarray, labels: Sequence[str], k: int
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The ``k`` best ``(labels, scores)`` of a ``(K,)`` probability vector, best first.

    Ties keep label order (stable sort). ``k`` larger than ``K`` returns all ``K``.
    """
    p = np.asarray(probs).reshape(-1)
    if p.shape[0] != len(labels):
        raise ModelError(f"probs has {p.shape[0]} entries but there are {len(labels)} labels")
    order = np.argsort(-p, kind="stable")[: max(0, k)]
    return tuple(labels[i] for i in order), tuple(float(p[i]) for i in order)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class Smoother:
    """Moving average of class probabilities plus start/end hysteresis.

    Args:
        labels: the model's class names, ``K`` of them, unique and non-empty.
        window: how many of the last probability vectors are averaged (>= 1).
        threshold: minimum smoothed score, in ``[0, 1]``, for a label to start or stay.
        start_after: consecutive updates a label must lead with ``score >= threshold``
            before it starts (>= 1; 1 starts it at once).
        topk: how many labels :attr:`SmoothedResult.labels` holds (>= 1); capped at ``K``
            so that the default of 5 works with smaller label sets.

    Raises:
        ConfigError: an argument is out of range (the message names it).

    Thread-safety: not thread-safe; one instance per stream, used by one thread.
    """

    def __init__(
        self,
        labels: Sequence[str],
        window: int = 3,
        threshold: float = 0.2,
        start_after: int = 2,
        topk: int = 5,
    ) -> None:
        labels = tuple(labels)
        if not labels:
            raise ConfigError("labels must not be empty")
        if not all(isinstance(name, str) for name in labels):
            raise ConfigError("labels must all be strings")
        if len(set(labels)) != len(labels):
            dup = sorted({n for n in labels if labels.count(n) > 1})
            raise ConfigError(f"labels must be unique; repeated: {dup[:5]}")
        self._window = _check_int("window", window, 1)
        self._start_after = _check_int("start_after", start_after, 1)
        self._topk = min(_check_int("topk", topk, 1), len(labels))
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
            raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        self._threshold = float(threshold)
        self._labels = labels
        self._history: deque[np.ndarray] = deque(maxlen=self._window)
        self._active: int | None = None
        self._active_score = 0.0
        self._candidate: int | None = None
        self._streak = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def window(self) -> int:
        return self._window

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def start_after(self) -> int:
        return self._start_after

    @property
    def topk(self) -> int:
        """The effective top-k (the requested value capped at the number of labels)."""
        return self._topk

    @property
    def stable_label(self) -> str | None:
        """The label active now, or ``None``."""
        return None if self._active is None else self._labels[self._active]

    def update(self, probs: np.ndarray) -> SmoothedResult:
        """Add one clip's probabilities and return the smoothed view.

        Args:
            probs: ``(K,)`` float probabilities for this clip (e.g. a softmax), finite,
                each in ``[0, 1]``; copied, so the caller may reuse the array.

        Returns:
            The top-k of the average of the last ``window`` vectors, the stable label
            and the changes this update caused.

        Raises:
            ModelError: ``probs`` has the wrong shape or holds NaN/inf/out-of-range values.
        """
        p = np.asarray(probs, dtype=np.float32)
        if p.shape != (len(self._labels),):
            raise ModelError(f"probs must have shape ({len(self._labels)},), got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ModelError("probs must be finite (got NaN or inf)")
        if p.min() < -1e-4 or p.max() > 1.0 + 1e-4:
            raise ModelError(
                f"probs must be probabilities in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]"
                " (apply a softmax to logits first)"
            )
        self._history.append(p.copy())
        avg = np.clip(np.mean(np.stack(self._history), axis=0, dtype=np.float64), 0.0, 1.0)
        avg = avg.astype(np.float32)

        changes: list[Change] = []
        if self._active is not None:
            self._active_score = float(avg[self._active])
            if self._active_score < self._threshold:
                changes.append(self._end(self._active))

        top = int(np.argmax(avg))
        top_score = float(avg[top])
        if top_score >= self._threshold and top != self._active:
            self._streak = self._streak + 1 if top == self._candidate else 1
            self._candidate = top
        else:
            self._candidate, self._streak = None, 0

        if self._candidate is not None and self._streak >= self._start_after:
            if self._active is not None:
                changes.append(self._end(self._active))
            self._active, self._active_score = top, top_score
            self._candidate, self._streak = None, 0
            changes.append(Change("label_start", self._labels[top], top_score))

        labels, scores = top_k(avg, self._labels, self._topk)
        return SmoothedResult(labels, scores, self.stable_label, tuple(changes), avg)

    def reset(self) -> tuple[Change, ...]:
        """Forget the history (call after a reconnect, so no average spans a gap).

        Returns:
            ``(Change("label_end", label, last_score),)`` when a label was active, so the
            caller can close that segment in the event log; ``()`` otherwise. Calling it at
            shutdown closes an open segment the same way.
        """
        changes = (self._end(self._active),) if self._active is not None else ()
        self._history.clear()
        self._candidate, self._streak = None, 0
        return changes

    def _end(self, active: int) -> Change:
        change = Change("label_end", self._labels[active], self._active_score)
        self._active, self._active_score = None, 0.0
        return change
