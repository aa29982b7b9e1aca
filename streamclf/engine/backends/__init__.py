"""Inference backends: one interface, ``infer(clips) -> (probs, features)``."""

from streamclf.engine.backends.base import FakeBackend, InferenceBackend
from streamclf.engine.backends.torch_backend import TorchBackend

__all__ = ["FakeBackend", "InferenceBackend", "TorchBackend"]
