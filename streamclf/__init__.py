"""streamclf: real-time human action recognition on live video.

``import streamclf`` is light: torch, OpenCV and ONNX Runtime load on first use.

The live API::

    from streamclf import LivePipeline, RunConfig, StreamConfig

    events = []
    cfg = RunConfig(model="x3d_xs", weights="random",
                    streams=[StreamConfig(id="cam0", source="clip.mp4", pace="fast")])
    with LivePipeline(cfg, sinks=[events.append]) as pipe:
        pipe.join()  # every stream has ended, or cfg.duration passed
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from streamclf.errors import (
    ConfigError,
    DataError,
    ModelError,
    SourceError,
    StreamclfError,
    WeightsError,
)

try:
    __version__ = version("streamclf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from streamclf.config import RunConfig, StreamConfig
    from streamclf.live.pipeline import LivePipeline, RunResult
    from streamclf.live.sinks import SinkHealth
    from streamclf.models import ModelSpec, get_spec, list_models, load_model
    from streamclf.offline.classify import ActionClassifier, ClassificationResult, classify_file
    from streamclf.types import Event, EventType, StreamHealth, StreamTotals

_LAZY = {
    "LivePipeline": "streamclf.live.pipeline",
    "RunResult": "streamclf.live.pipeline",
    "RunConfig": "streamclf.config",
    "StreamConfig": "streamclf.config",
    "Event": "streamclf.types",
    "EventType": "streamclf.types",
    "StreamHealth": "streamclf.types",
    "StreamTotals": "streamclf.types",
    "SinkHealth": "streamclf.live.sinks",
    "ActionClassifier": "streamclf.offline.classify",
    "ClassificationResult": "streamclf.offline.classify",
    "classify_file": "streamclf.offline.classify",
    "ModelSpec": "streamclf.models",
    "get_spec": "streamclf.models",
    "list_models": "streamclf.models",
    "load_model": "streamclf.models",
}

__all__ = [
    "ActionClassifier",
    "ClassificationResult",
    "ConfigError",
    "DataError",
    "Event",
    "EventType",
    "LivePipeline",
    "ModelError",
    "ModelSpec",
    "RunConfig",
    "RunResult",
    "SinkHealth",
    "SourceError",
    "StreamConfig",
    "StreamHealth",
    "StreamTotals",
    "StreamclfError",
    "WeightsError",
    "__version__",
    "classify_file",
    "get_spec",
    "list_models",
    "load_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamclf' has no attribute {name!r}")
    return getattr(import_module(module), name)
