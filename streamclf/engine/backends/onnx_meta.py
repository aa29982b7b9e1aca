"""What an exported ONNX file says about itself: ``metadata_props`` and the labels file.

An export (:func:`~streamclf.engine.backends.export.export_onnx`) embeds
:func:`onnx_metadata` in the graph, so the file alone tells how to feed it (frames, sizes,
normalisation) and what it returns, and writes the class names beside it, one per line,
in :func:`labels_path`. All functions are thread-safe (no shared state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from streamclf._lazy import require
from streamclf.errors import ModelError

if TYPE_CHECKING:
    from streamclf.models.loader import LoadedModel
    from streamclf.models.registry import ModelSpec

__all__ = [
    "embed_metadata",
    "first_line",
    "input_names",
    "labels_path",
    "onnx_metadata",
    "read_onnx_metadata",
]


def input_names(spec: ModelSpec) -> tuple[str, ...]:
    """``("slow", "fast")`` for a SlowFast spec, ``("video",)`` otherwise."""
    return ("slow", "fast") if spec.slowfast_alpha else ("video",)


def labels_path(onnx_path: Path) -> Path:
    """The class-name file :func:`export_onnx` writes beside ``onnx_path``:
    ``<onnx_path>.labels.txt`` (``x3d_xs.onnx`` -> ``x3d_xs.onnx.labels.txt``)."""
    return onnx_path.with_name(onnx_path.name + ".labels.txt")


def onnx_metadata(model: LoadedModel) -> dict[str, str]:
    """The ``metadata_props`` of ``model``'s exported graph: every value a string.

    ``model``, ``weights`` (URL, path or ``random``), ``num_frames``, ``sampling_rate``,
    ``side_size``, ``crop_size``, ``mean`` and ``std`` (JSON lists: normalisation of
    ``frames / 255``), ``slowfast_alpha`` (``""`` for single-path models), ``inputs``
    (comma-separated input names), ``num_classes``, ``clip_duration_s``, ``scores``
    (``"probabilities"``) and ``streamclf_version``.
    """
    from streamclf import __version__

    spec = model.spec
    return {
        "model": spec.name,
        "weights": model.weights,
        "num_frames": str(spec.num_frames),
        "sampling_rate": str(spec.sampling_rate),
        "side_size": str(spec.side_size),
        "crop_size": str(spec.crop_size),
        "mean": json.dumps([float(v) for v in spec.mean]),
        "std": json.dumps([float(v) for v in spec.std]),
        "slowfast_alpha": "" if spec.slowfast_alpha is None else str(spec.slowfast_alpha),
        "inputs": ",".join(input_names(spec)),
        "num_classes": str(len(spec.labels)),
        "clip_duration_s": repr(round(float(spec.clip_duration_s), 6)),
        "scores": "probabilities",
        "streamclf_version": __version__,
    }


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (``{}`` when it has none), read
    without loading its weights.

    Raises:
        ModelError: the file is not a readable ONNX model.
    """
    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelError(f"cannot read ONNX file {path}: {first_line(exc)}") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def first_line(exc: BaseException) -> str:
    """``"Type: first non-empty line of the message"`` (library errors span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


def embed_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite the ONNX file at ``path`` with ``metadata`` as its ``metadata_props``."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))
