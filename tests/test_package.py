"""Package hygiene: light import, curated public API, error tree."""

from __future__ import annotations

import importlib.util
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
        "streamclf.config, streamclf.cli.flags, streamclf.engine.load",
        "streamclf.live.sinks, streamclf.live.status, streamclf.live.runner",
        "streamclf.live.pipeline, streamclf.live.control, streamclf.sinks.webhook",
        "streamclf.web, streamclf.web.link, streamclf.cli.serve, streamclf.web.uploads",
        "streamclf.cluster.stream_worker, streamclf.cluster.runner, streamclf.cli.cluster",
        "streamclf.engine.backends, streamclf.engine.backends.torch_backend, "
        "streamclf.engine.backends.export",
        "streamclf.engine.backends.onnx_backend, streamclf.engine.backends.openvino_backend",
    ],
)
def test_import_is_light(modules: str) -> None:
    """Importing any of these loads none of the heavy libraries (they load on first use)."""
    code = f"import sys, {modules}; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["streamclf.streams_config", "streamclf.web.attach",
                                    "streamclf.cluster.webhook"])
def test_removed_modules_are_gone(module: str) -> None:
    """Replaced by streamclf.config, streamclf.web.link and streamclf.sinks.webhook."""
    assert importlib.util.find_spec(module) is None


def test_public_names_import() -> None:
    for name in streamclf.__all__:
        assert getattr(streamclf, name) is not None
    assert streamclf.__version__


def test_error_tree() -> None:
    assert issubclass(errors.WeightsError, errors.ModelError)
    for cls in (errors.ConfigError, errors.SourceError, errors.DataError, errors.ModelError):
        assert issubclass(cls, errors.StreamclfError)
