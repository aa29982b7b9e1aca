"""Lazy access to heavy optional modules, so that ``import streamclf`` stays light."""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from streamclf.errors import StreamclfError

__all__ = ["cv2_module", "require"]

_INSTALL_HINTS = {
    "cv2": "pip install opencv-python-headless",
    "torch": "pip install torch",
    "onnxruntime": "pip install onnxruntime (or streamclf[gpu] for onnxruntime-gpu)",
    "onnx": "pip install onnx",
    "openvino": "pip install 'streamclf[openvino]'",
    "nncf": "pip install 'streamclf[openvino]'",
    "pytorchvideo": "pip install pytorchvideo",
    "transformers": "pip install transformers",
    "safetensors": "pip install safetensors",
}


@cache
def require(name: str) -> ModuleType:
    """Import ``name`` on first use; a missing package gives an install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        raise StreamclfError(f"{name} is required for this feature but is missing ({exc}); "
                             f"install it with: {hint}") from None


def cv2_module() -> ModuleType:
    """The ``cv2`` module, imported on first use."""
    return require("cv2")
