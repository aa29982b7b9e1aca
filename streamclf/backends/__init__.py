"""Inference backends: one interface, ``infer(clips) -> (probs, features)``."""

from streamclf.backends.base import FakeBackend, InferenceBackend
from streamclf.backends.torch_backend import TorchBackend

__all__ = ["FakeBackend", "InferenceBackend", "TorchBackend"]
