"""The ONNX Runtime backend: the exported graph of a loaded model, on CPU, CUDA or TensorRT.

Example::

    from streamclf.models import load_model
    from streamclf.engine.backends.onnx_backend import OnnxBackend
    backend = OnnxBackend(load_model("x3d_xs", device="cpu"), threads=2)
    probs, feats = backend.infer([clip])   # clip: (4, 182, 182, 3) uint8 RGB

onnxruntime is imported when a backend is built, never by ``import streamclf``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamclf._lazy import require
from streamclf.engine.backends.base import batch_pathways
from streamclf.engine.backends.export import OUTPUT_NAMES, cached_onnx, input_names, onnx_cache_dir
from streamclf.errors import ConfigError, ModelError
from streamclf.media.preprocess import ClipTransform
from streamclf.models.loader import LoadedModel

__all__ = ["OnnxBackend", "default_providers"]

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TRT = "TensorrtExecutionProvider"

#: ``(name, options)`` as ``onnxruntime.InferenceSession(providers=...)`` takes them.
ProviderEntry = tuple[str, dict[str, Any]]


def _device_id(device: str) -> int:
    """``"cuda:1" -> 1``, ``"cuda" -> 0``."""
    _, _, index = device.partition(":")
    return int(index) if index else 0


def default_providers(device: str, available: Sequence[str]) -> list[ProviderEntry]:
    """Providers for a model living on torch ``device``, best first, CPU always last.

    A CUDA device gets TensorRT then CUDA (on the same device index) where this
    onnxruntime build has them; TensorRT engines are cached beside the ONNX cache so
    only the first session of a model pays for the engine build. A CPU device gets CPU.
    """
    entries: list[ProviderEntry] = []
    if device.startswith("cuda"):
        gpu = _device_id(device)
        if _TRT in available:
            engines = onnx_cache_dir() / "tensorrt"
            entries.append((_TRT, {"device_id": gpu, "trt_engine_cache_enable": True,
                                   "trt_engine_cache_path": str(engines)}))
        if _CUDA in available:
            entries.append((_CUDA, {"device_id": gpu}))
    entries.append((_CPU, {}))
    return entries


class OnnxBackend:
    """Runs a :class:`~streamclf.models.LoadedModel`'s ONNX graph on windows from the ring.

    ``infer(clips)`` takes ``B`` clips of ``(T, crop, crop, 3)`` uint8 RGB (resized and
    cropped, exactly ``num_frames`` frames) and returns ``(probs (B, K) float32,
    features (B, D) float32)``, the same contract and preprocessing as
    :class:`~streamclf.engine.backends.torch_backend.TorchBackend`.

    Args:
        model: the loaded model; exported once through
            :func:`~streamclf.engine.backends.export.cached_onnx` unless ``onnx_path`` is given.
        threads: onnxruntime intra-op threads; ``None`` keeps onnxruntime's default
            (one per physical core). Inter-op threads are always 1 and graph
            optimisation is ``ORT_ENABLE_ALL``.
        providers: execution provider names in preference order; ``None`` picks
            TensorRT, CUDA (when available and ``model.device`` is CUDA), then CPU.
        onnx_path: an already exported file (from ``streamclf export``) to use as is.

    Attributes:
        providers: the providers the session actually uses, best first.
        onnx_path: the ONNX file the session was built from.
        metadata: the file's ``metadata_props`` (see
            :func:`~streamclf.engine.backends.onnx_meta.onnx_metadata`; ``{}`` for a file
            exported by something else).

    Thread-safe: ``InferenceSession.run`` may be called from several threads, though the
    pipeline calls ``infer`` from one inference thread.

    Raises:
        ConfigError: ``threads`` < 1, or a provider this onnxruntime build lacks.
        ModelError: the model cannot be exported, or the file does not fit the model (its
            inputs, outputs, class count, or the model named in its metadata).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: LoadedModel,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        onnx_path: Path | None = None,
    ) -> None:
        ort = require("onnxruntime")
        if threads is not None and threads < 1:
            raise ConfigError(f"onnxruntime threads must be >= 1, got {threads}")
        available = list(ort.get_available_providers())
        if providers is not None:
            missing = [p for p in providers if p not in available]
            if missing or not providers:
                raise ConfigError(
                    f"onnxruntime providers {missing or list(providers)} are not available; "
                    f"this build has: {', '.join(available)}"
                )
            requested: list[Any] = list(providers)
        else:
            requested = default_providers(model.device, available)
        self.model = model
        self.labels = model.spec.labels
        self.onnx_path = Path(onnx_path) if onnx_path is not None else cached_onnx(model)
        self._input_names = input_names(model.spec)
        self._transform = ClipTransform(model.spec, temporal_subsample=False)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = self._open(ort, opts, requested, user_chose=providers is not None)
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.metadata: dict[str, str] = dict(
            self._session.get_modelmeta().custom_metadata_map or {})
        self._check_signature()
        log.info("onnxruntime session for %s from %s on %s", model.spec.name, self.onnx_path,
                 ", ".join(self.providers))

    def _open(self, ort: Any, opts: Any, requested: list[Any], user_chose: bool) -> Any:
        """Build the session; a default GPU provider that fails to start (e.g. TensorRT
        listed by the build but its libraries missing) is dropped with a warning."""
        path = str(self.onnx_path)
        while True:
            try:
                return ort.InferenceSession(path, sess_options=opts, providers=requested)
            except Exception as exc:  # onnxruntime raises its own exception types
                first = requested[0][0] if isinstance(requested[0], tuple) else requested[0]
                if user_chose or first == _CPU:
                    raise ModelError(
                        f"onnxruntime cannot load {path} for {self.model.spec.name}: {exc}"
                    ) from exc
                log.warning("onnxruntime provider %s failed (%s); trying the next one",
                            first, str(exc).splitlines()[0] if str(exc) else "")
                requested = requested[1:]

    def _check_signature(self) -> None:
        """The file's inputs and outputs must be this model's (a user-given path may not be)."""
        spec = self.model.spec
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        expected = dict(zip(self._input_names, spec.input_shapes, strict=True))
        ok = set(inputs) == set(expected) and all(
            list(inputs[n][1:]) == list(shape) for n, shape in expected.items()
        ) and outputs == list(OUTPUT_NAMES)
        if ok:
            self._check_classes()
        else:
            raise ModelError(
                f"{self.onnx_path} does not fit {spec.name}: inputs {inputs}, outputs {outputs}; "
                f"expected inputs {{{', '.join(f'{n}: [B, *{s}]' for n, s in expected.items())}}} "
                f"and outputs {list(OUTPUT_NAMES)} (export it with `streamclf export`)"
            )

    def _check_classes(self) -> None:
        """The file's class count (its ``scores`` width, and ``num_classes`` and ``model`` in
        the metadata of a streamclf export) must be the model's."""
        spec, k = self.model.spec, len(self.model.spec.labels)
        width = self._session.get_outputs()[0].shape[-1]
        claimed = self.metadata.get("num_classes", "")
        if (isinstance(width, int) and width != k) or (claimed.isdigit() and int(claimed) != k):
            found = width if isinstance(width, int) else claimed
            raise ModelError(f"{self.onnx_path} gives {found} class scores but {spec.name} here "
                             f"has {k} labels (export it again with the same --classmap)")
        exported_as = self.metadata.get("model")
        if exported_as and exported_as != spec.name:
            raise ModelError(f"{self.onnx_path} was exported from {exported_as}, not "
                             f"{spec.name}")

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``B`` clips of ``(T, crop, crop, 3)`` uint8 -> ``(probs (B, K), features (B, D))``."""
        pathways = batch_pathways(clips, self._transform)
        feed = {n: np.ascontiguousarray(x, dtype=np.float32)
                for n, x in zip(self._input_names, pathways, strict=True)}
        probs, feats = self._session.run(list(OUTPUT_NAMES), feed)
        return np.asarray(probs, np.float32), np.asarray(feats, np.float32)
