"""The backend interface and a scripted fake for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from streamclf.media.clips import slow_indices
from streamclf.media.preprocess import ClipTransform, normalize_clip

__all__ = ["FakeBackend", "InferenceBackend", "batch_pathways"]


def batch_pathways(clips: Sequence[np.ndarray], transform: ClipTransform) -> list[np.ndarray]:
    """Normalise ``B`` clips of ``(T, crop, crop, 3)`` uint8 and stack them per pathway.

    Returns one ``(B, 3, T_i, crop, crop)`` float32 array per network input (slow first
    for SlowFast). Shared by every backend so they all see identical inputs.
    """
    spec = transform.spec
    t = len(clips[0])
    ready = (not transform.temporal_subsample and all(
        c.shape == (t, spec.crop_size, spec.crop_size, 3) for c in clips))
    if not ready:
        inputs = [transform(c) for c in clips]
        return [np.stack([x[p] for x in inputs]) for p in range(len(inputs[0]))]
    # Fast path (clips straight from the ring): normalise each clip directly into its slot
    # of the batch array: one uint8 -> float32 pass, no intermediate copies.
    fast = np.empty((len(clips), 3, t, spec.crop_size, spec.crop_size), dtype=np.float32)
    for b, clip in enumerate(clips):
        normalize_clip(clip, spec.mean, spec.std, out=fast[b])
    if not spec.slowfast_alpha:
        return [fast]
    return [np.ascontiguousarray(fast[:, :, slow_indices(t, spec.slowfast_alpha)]), fast]


@runtime_checkable
class InferenceBackend(Protocol):
    """Runs a model on a batch of preprocessed-size clips.

    ``infer(clips)``: ``clips`` is a sequence of ``(T, crop, crop, 3)`` uint8 RGB arrays
    (frames already resized and cropped, exactly ``num_frames`` each); returns
    ``(probs (B, K) float32, features (B, D) float32)``.

    Implementations are called from one inference thread at a time.
    """

    labels: tuple[str, ...]
    name: str

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


class FakeBackend:
    """Scripted backend: returns ``script[i % len(script)]`` as the probabilities of the
    i-th clip, after sleeping ``delay_s`` per call. Raises ``fail_on`` calls' exceptions.

    Thread-safe counters (``calls``, ``clips``) for assertions.
    """

    name = "fake"

    def __init__(
        self,
        labels: Sequence[str] = ("a", "b", "c"),
        script: Sequence[Sequence[float]] | None = None,
        delay_s: float = 0.0,
        feature_dim: int = 4,
        fail_on: dict[int, Exception] | None = None,
    ) -> None:
        self.labels = tuple(labels)
        k = len(self.labels)
        self.script = [np.asarray(p, dtype=np.float32) for p in (script or [np.eye(k)[0]])]
        self.delay_s = delay_s
        self.feature_dim = feature_dim
        self.fail_on = dict(fail_on or {})
        self._lock = threading.Lock()
        self.calls = 0
        self.clips = 0

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            call = self.calls
            self.calls += 1
            first = self.clips
            self.clips += len(clips)
        if self.delay_s:
            time.sleep(self.delay_s)
        if call in self.fail_on:
            raise self.fail_on[call]
        probs = np.stack([self.script[(first + i) % len(self.script)] for i in range(len(clips))])
        feats = np.stack([np.full(self.feature_dim, c.mean(), np.float32) for c in clips])
        return probs, feats
