"""Package hygiene: light import, curated public API, error tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

import streamclf
from streamclf import errors

HEAVY = ("torch", "cv2", "onnxruntime", "onnx", "openvino", "nncf", "pytorchvideo",
         "transformers")


@pytest.mark.parametrize(
    "modules",
    [
        "streamclf, streamclf.cli.main, streamclf.models.registry",
        "streamclf.media.sources, streamclf.media.capture",
        "streamclf.live.overlay, streamclf.live.events, streamclf.live.smoothing",
        "streamclf.engine.runtime, streamclf._net, streamclf.live.parts",
        "streamclf.web, streamclf.web.attach, streamclf.cli.serve, streamclf.web.uploads",
        "streamclf.engine.backends, streamclf.engine.backends.torch_backend, streamclf.engine.backends.export, "
        "streamclf.engine.backends.onnx_backend, streamclf.engine.backends.openvino_backend",
    ],
)
def test_import_is_light(modules: str) -> None:
    """Importing any of these loads none of the heavy libraries (they load on first use)."""
    code = f"import sys, {modules}; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_public_names_import() -> None:
    for name in streamclf.__all__:
        assert getattr(streamclf, name) is not None
    assert streamclf.__version__


def test_error_tree() -> None:
    assert issubclass(errors.WeightsError, errors.ModelError)
    for cls in (errors.ConfigError, errors.SourceError, errors.DataError, errors.ModelError):
        assert issubclass(cls, errors.StreamclfError)
