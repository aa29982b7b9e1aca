"""Package hygiene: light import, curated public API, error tree."""

from __future__ import annotations

import subprocess
import sys

import streamclf
from streamclf import errors


def test_import_is_light() -> None:
    code = (
        "import sys, streamclf, streamclf.cli, streamclf.models.registry;"
        "heavy = [m for m in ('torch', 'cv2', 'onnxruntime', 'pytorchvideo', 'transformers')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_import() -> None:
    for name in streamclf.__all__:
        assert getattr(streamclf, name) is not None
    assert streamclf.__version__


def test_error_tree() -> None:
    assert issubclass(errors.WeightsError, errors.ModelError)
    for cls in (errors.ConfigError, errors.SourceError, errors.DataError, errors.ModelError):
        assert issubclass(cls, errors.StreamclfError)
