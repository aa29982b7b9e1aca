"""Offline classification: frames or a file in, top-k labels, scores and an embedding out.

Example::

    from streamclf import ActionClassifier
    clf = ActionClassifier("x3d_xs", weights="kinetics400")
    labels, scores, features = clf(frames)      # frames: list of (H, W, 3) uint8 RGB
    result = clf.classify_file("video.mp4", clips=3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from streamclf.engine.backends.factory import create_backend
from streamclf.errors import ConfigError
from streamclf.media.preprocess import ClipTransform
from streamclf.media.video import check_end, read_clips, sample_frames
from streamclf.models.labels import ClassMap
from streamclf.models.loader import LoadedModel, load_model

__all__ = ["ActionClassifier", "ClassificationResult", "classify_file"]


class ClassificationResult(NamedTuple):
    """Top-k class names, their probabilities (high to low), and the clip embedding.

    ``features`` is a ``(feature_dim,)`` float32 array: the input of the model's final
    linear layer (2048-d for X3D, 2304-d for SlowFast R50, 768-d for MViT/TimeSformer).
    """

    labels: list[str]
    scores: list[float]
    features: np.ndarray


class ActionClassifier:
    """Classify clips with one zoo model.

    Args:
        model_name: a name from ``streamclf models``.
        weights: ``"kinetics400"`` (download once), a checkpoint path, or ``"random"``.
        skip_preprocess: use the given frames as they are in time (no uniform temporal
            subsampling to the model's frame count). Frames not already ``crop x crop``
            are still resized and centre-cropped; normalisation always applies.
        classmap: replaces the label list (dict name->index, list, or file).
        topk: how many labels to return.
        device: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        backend: ``torch`` (default), ``onnxruntime``, ``openvino`` or ``auto`` (fastest
            measured here); ``precision``: ``fp32`` or what the backend offers.
        threads: inference threads of the onnxruntime/openvino backends (``None``: their
            default); torch's are process-wide (``torch.set_num_threads``).

    Not thread-safe: share one instance between threads only behind a lock, except
    :meth:`decode_file`, which several threads may run at once.

    Raises:
        ConfigError: ``topk`` below 1, a bad device, backend or precision, or a class map
            that does not fit the checkpoint.
        ModelError: unknown model name (WeightsError: the checkpoint cannot be obtained or
            does not fit).
    """

    def __init__(
        self,
        model_name: str = "x3d_xs",
        weights: str | os.PathLike[str] = "kinetics400",
        skip_preprocess: bool = False,
        classmap: ClassMap | None = None,
        topk: int = 5,
        device: str = "auto",
        backend: str = "torch",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise ConfigError(f"topk must be an integer >= 1, got {topk!r}")
        self.model: LoadedModel = load_model(model_name, weights, classmap, device)
        self.spec = self.model.spec
        self.topk = min(int(topk), self.spec.num_classes)
        self.transform = ClipTransform(self.spec, temporal_subsample=not skip_preprocess)
        self.backend = create_backend(self.model, backend, precision, threads).backend

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def prepare(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Temporal selection + resize/crop: frames -> ``(T, crop, crop, 3)`` uint8.

        Raises:
            DataError: no frames, or a frame that is not an ``(H, W, 3)`` image.
        """
        return self.transform.prepare(frames)

    def infer(
        self, clips: Sequence[Sequence[np.ndarray] | np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run a batch of clips; returns ``(probs (B, K), features (B, D))`` float32."""
        return self.backend.infer([self.prepare(c) for c in clips])

    def top(self, probs: np.ndarray, features: np.ndarray) -> ClassificationResult:
        """Top-k of one ``(K,)`` probability vector, paired with its ``(D,)`` embedding."""
        order = np.argsort(-probs, kind="stable")[: self.topk]
        return ClassificationResult(
            labels=[self.spec.labels[i] for i in order],
            scores=[float(probs[i]) for i in order],
            features=features.astype(np.float32, copy=False),
        )

    def __call__(self, frames: Sequence[np.ndarray] | np.ndarray) -> ClassificationResult:
        """Classify one clip: ``T x (H, W, 3)`` uint8 RGB frames (or a ``(T, H, W, 3)`` array)."""
        probs, feats = self.infer([frames])
        return self.top(probs[0], feats[0])

    def classify_clips(
        self, clips: Sequence[Sequence[np.ndarray] | np.ndarray]
    ) -> ClassificationResult:
        """Average the probabilities (and embeddings) of several clips of one video."""
        probs, feats = self.infer(clips)
        return self.top(probs.mean(axis=0), feats.mean(axis=0))

    def classify_file(
        self,
        path: str | os.PathLike[str],
        clips: int = 1,
        sample_type: str | None = None,
        num_samples: int | None = None,
        time_step: float | None = None,
        allow_truncated: bool = False,
    ) -> ClassificationResult:
        """Classify a video file.

        By default: ``clips`` windows of the model's duration (num_frames x
        sampling_rate / 30 s, in the video's own time), one centred or several evenly
        spread, probabilities averaged; a shorter video is used whole (the window rule of
        :mod:`streamclf.media.clips`, the one the live pipeline uses too). With
        ``sample_type`` (``uniform_temporal_subsample`` / ``time_step_sample``) the frames
        are sampled towhee-style over the whole video and fed as one clip.

        Equivalent to ``classify_clips(decode_file(path, ...))``; see :meth:`decode_file`.

        Raises:
            DataError: missing, unreadable, corrupt or truncated file (also when the clips
                lie before the point where it was cut, unless ``allow_truncated``).
        """
        return self.classify_clips(
            self.decode_file(path, clips, sample_type, num_samples, time_step,
                             allow_truncated)
        )

    def decode_file(
        self,
        path: str | os.PathLike[str],
        clips: int = 1,
        sample_type: str | None = None,
        num_samples: int | None = None,
        time_step: float | None = None,
        allow_truncated: bool = False,
    ) -> list[np.ndarray]:
        """Decode ``path`` into the clips :meth:`classify_file` feeds the model.

        Returns one ``(T, crop, crop, 3)`` uint8 RGB array per clip (``T`` = the model's
        frame count), already temporally selected, resized and cropped, so that
        :meth:`classify_clips` on them only normalises and runs the model.

        Thread-safe (it touches no mutable state and runs no model): several threads
        may decode files for one classifier, whose inference must stay on one thread.

        Raises:
            DataError: missing, unreadable, corrupt or truncated file: the file's end is
                checked against its declared length (:func:`~streamclf.media.video.check_end`)
                unless ``allow_truncated``.
        """
        if not allow_truncated:
            check_end(Path(path))
        if sample_type is not None:
            frames, _ = sample_frames(Path(path), sample_type, num_samples, time_step)
            return [self.prepare(frames)]
        return read_clips(Path(path), self.transform, clips)


def classify_file(
    path: str | os.PathLike[str],
    model_name: str = "x3d_xs",
    weights: str | os.PathLike[str] = "kinetics400",
    topk: int = 5,
    clips: int = 1,
    device: str = "auto",
    classmap: ClassMap | None = None,
) -> ClassificationResult:
    """One-shot helper: build an :class:`ActionClassifier` and classify ``path``."""
    clf = ActionClassifier(model_name, weights, classmap=classmap, topk=topk, device=device)
    return clf.classify_file(path, clips=clips)
