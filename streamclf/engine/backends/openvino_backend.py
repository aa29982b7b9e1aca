"""The OpenVINO backend: CPU inference of the zoo networks, fp32, bf16 or int8.

The torch network (``LoadedModel.net``: ``forward(*pathways) -> (scores, features)``) is
converted once with ``openvino.convert_model`` and saved as OpenVINO IR in the cache
(``$STREAMCLF_CACHE/openvino``, default ``~/.cache/streamclf/openvino``) as
``<name>-<fingerprint>.xml`` (+ ``.bin``), or ``<name>-<fingerprint>-int8.xml`` for the
quantised model; later runs read the IR instead of converting again (conversion traces
the network: 18-40 s per model on 2 cores; reading the IR: under 1 s). A log line says
which happened (``converted ...`` / ``loaded ... IR from cache``). The fingerprint is
the first 16 hex digits of the SHA-256 of the model name and every state-dict tensor
(key, dtype, shape, bytes), so another checkpoint, class count or model gets its own
file; the int8 fingerprint also covers the quantisation recipe, not the calibration
clips (the first clips given are used; delete the file to recalibrate).

Batch size is dynamic: the IR takes any ``B >= 1``.

Precisions (``precision=``):

* ``"fp32"`` (default): ``INFERENCE_PRECISION_HINT`` pinned to f32, so results match
  torch (measured: same top-5, feature cosine 1.000000 on 12 real clips per model).
  Without the pin OpenVINO runs bf16 on CPUs with AMX/AVX512-BF16.
* ``"bf16"``: OpenVINO's own default on such CPUs: 1.3-4.5x faster than f32 (the most
  on slow_r50/slowfast_r50), feature cosine >= 0.9999 but top-1 changed on ~1 clip in 12.
* ``"int8"``: post-training quantisation with NNCF on real calibration clips (opt-in;
  refused for models measured to miss the bar, see :data:`INT8_MEASURED`); the final
  Linear stays float.

Example::

    from streamclf.models import load_model
    from streamclf.engine.backends.openvino_backend import OpenVINOBackend
    backend = OpenVINOBackend(load_model("x3d_xs", device="cpu"), threads=2)
    probs, feats = backend.infer([clip])   # clip: (4, 182, 182, 3) uint8 RGB
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamclf._lazy import require
from streamclf.engine.backends.accuracy import accuracy_cost
from streamclf.engine.backends.base import batch_pathways
from streamclf.engine.backends.cache import cache_root, model_fingerprint
from streamclf.errors import ConfigError, ModelError
from streamclf.media.preprocess import ClipTransform
from streamclf.media.video import read_clips
from streamclf.models.loader import LoadedModel
from streamclf.models.registry import ModelSpec

__all__ = [
    "INT8_COSINE_MIN",
    "INT8_MEASURED",
    "PRECISIONS",
    "Int8Cost",
    "OpenVINOBackend",
    "accuracy_cost",
    "calibration_clips_from_videos",
    "ir_cache_dir",
    "model_fingerprint",
]

log = logging.getLogger(__name__)
#: One line per set-up step of a first run, with its time (the CLI shows them by default).
setup_log = logging.getLogger("streamclf.setup")

PRECISIONS = ("fp32", "bf16", "int8")
#: The accuracy bar int8 must meet against fp32: mean feature cosine on real clips.
INT8_COSINE_MIN = 0.98


class Int8Cost(NamedTuple):
    """int8 against fp32 on real clips (see :func:`accuracy_cost`)."""

    top1_agreement: float
    top5_overlap: float
    cosine_mean: float
    cosine_min: float


#: Measured 2026-11 (OpenVINO 2026.4.1, NNCF 3.4.0): int8 vs fp32 with the same seeded
#: input-sensitive checkpoint (``tests/checkpoints.py``), calibrated on 16 clips of 8
#: videos of ../shared/data, judged on 12 clips of 12 other videos. A model whose mean
#: cosine is below :data:`INT8_COSINE_MIN` is refused; one not listed is allowed
#: (opt-in, unmeasured). The ordered top-5 rarely survives int8 on these checkpoints
#: (0-25 % of clips; bf16: 33-67 %): their heads amplify what differs between clips.
INT8_MEASURED: dict[str, Int8Cost] = {
    "x3d_xs": Int8Cost(0.58, 0.75, 0.9990, 0.9935),
    "x3d_s": Int8Cost(0.50, 0.73, 0.9982, 0.9908),
    "x3d_m": Int8Cost(0.83, 0.82, 0.9988, 0.9931),
    "slow_r50": Int8Cost(0.75, 0.87, 0.9991, 0.9979),
    "slowfast_r50": Int8Cost(0.92, 0.87, 0.9990, 0.9979),
}
#: Clips per video taken from the bundled demo when int8 gets no calibration clips.
DEFAULT_CALIBRATION_CLIPS = 8
_SUBSET_MAX = 300
#: Salted into the int8 fingerprint: bump it when the quantisation recipe changes so
#: that IR quantised the old way is not reused.
_INT8_RECIPE = "int8-recipe-1:"
_CACHE_LOCK = threading.Lock()


def ir_cache_dir() -> Path:
    """``$STREAMCLF_CACHE/openvino``, else ``~/.cache/streamclf/openvino``."""
    return cache_root() / "openvino"


def calibration_clips_from_videos(
    spec: ModelSpec, paths: Sequence[str | os.PathLike[str]], clips_per_video: int = 2
) -> list[np.ndarray]:
    """Real clips for int8 calibration, decoded the way ``classify_file`` does.

    Each video gets ``clips_per_video`` windows of the model's duration spread over it
    (:func:`~streamclf.media.video.read_clips`: the window rule of
    :mod:`streamclf.media.clips`); frames are resized and cropped on decode
    (``ClipTransform(spec).spatial``) and ``spec.num_frames`` of them picked uniformly.

    Returns:
        ``len(paths) * clips_per_video`` arrays of ``(T, crop, crop, 3)`` uint8 RGB.

    Raises:
        DataError: a file cannot be decoded. Thread-safe.
    """
    transform = ClipTransform(spec)
    clips: list[np.ndarray] = []
    for path in paths:
        clips.extend(read_clips(Path(path), transform, clips_per_video))
    return clips


def _default_calibration(spec: ModelSpec) -> list[np.ndarray]:
    demo = Path(str(resources.files("streamclf") / "assets" / "demo.mp4"))
    log.info("openvino int8: no calibration clips given; using %d clips of the bundled %s",
             DEFAULT_CALIBRATION_CLIPS, demo.name)
    return calibration_clips_from_videos(spec, [demo], DEFAULT_CALIBRATION_CLIPS)


def _int8_refusal(name: str) -> str | None:
    measured = INT8_MEASURED.get(name)
    if measured is None or measured.cosine_mean >= INT8_COSINE_MIN:
        return None
    return (f"int8 is not offered for {name}: its measured feature cosine vs fp32 "
            f"({measured.cosine_mean:.3f}, top-1 agreement {measured.top1_agreement:.0%}) is "
            f"below {INT8_COSINE_MIN}; use precision fp32")


def _save_ir_atomically(ov: Any, ov_model: Any, target: Path) -> None:
    """``ov.save_model`` into a temporary folder beside ``target``, then rename: the
    ``.bin`` first and the ``.xml`` last, so an ``.xml`` under the final name always has
    its weights. Weights stay f32 (``compress_to_fp16=False``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        ov.save_model(ov_model, str(tmp / target.name), compress_to_fp16=False)
        os.replace(tmp / target.with_suffix(".bin").name, target.with_suffix(".bin"))
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cached(core: Any, path: Path) -> Any | None:
    """The IR at ``path`` (with its ``.bin``), or ``None`` when absent or unreadable."""
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        return None
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        log.warning("openvino: unreadable cached IR %s (%s); building it again", path, exc)
        return None


def _save_or_warn(ov: Any, ov_model: Any, path: Path) -> None:
    try:
        _save_ir_atomically(ov, ov_model, path)
    except (OSError, RuntimeError) as exc:  # a read-only cache costs time, not correctness
        log.warning("openvino: cannot cache the IR at %s: %s", path, exc)


def _first_line(exc: BaseException) -> str:
    """OpenVINO's errors span many lines (a C++ trace): keep the first non-empty one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _convert(ov: Any, model: LoadedModel) -> Any:
    """torch wrapper -> ``ov.Model`` with a dynamic batch dimension on every input."""
    torch = require("torch")
    shapes = model.spec.input_shapes
    example = tuple(torch.zeros((1, *s)) for s in shapes)
    with warnings.catch_warnings():
        # torch.jit.trace (used by the converter) warns that it is deprecated.
        warnings.simplefilter("ignore")
        try:
            return ov.convert_model(
                model.net, example_input=example,
                input=[ov.PartialShape([-1, *s]) for s in shapes],
            )
        except Exception as exc:  # the converter raises many types
            raise ModelError(
                f"OpenVINO cannot convert {model.spec.name}: {_first_line(exc)}"
            ) from exc


class OpenVINOBackend:
    """Runs a :class:`~streamclf.models.LoadedModel` with OpenVINO on the CPU.

    Args:
        model: a model loaded on ``device="cpu"``.
        threads: ``INFERENCE_NUM_THREADS``; ``None`` lets OpenVINO use every core.
        precision: ``"fp32"`` (f32 pinned, torch parity), ``"bf16"`` (OpenVINO's default
            on AMX/AVX512-BF16 CPUs) or ``"int8"`` (NNCF post-training quantisation;
            opt-in; refused for models in :data:`INT8_MEASURED` below the bar).
        calibration_clips: int8 only: ``(T, crop, crop, 3)`` uint8 RGB clips (see
            :func:`calibration_clips_from_videos`); used only when no int8 IR is cached
            for these weights. ``None``: clips of the bundled demo video.
        cache_dir: where IR files live; default :func:`ir_cache_dir`.

    ``infer(clips)``: ``B >= 1`` clips of ``(T, crop, crop, 3)`` uint8 RGB (any batch
    size: the IR has a dynamic batch) -> ``(probs (B, K) float32, features (B, D)
    float32)``.

    Attributes:
        ir_path: the IR ``.xml`` in use.
        from_cache: ``True`` when the IR was read from the cache, ``False`` when it was
            converted (and quantised) by this constructor.

    Thread-safe: ``infer`` calls are serialised by a lock (one infer request).

    Raises:
        ConfigError: unknown precision, or the model is not on the CPU.
        ModelError: int8 refused for this model, or conversion/quantisation failed.
    """

    def __init__(
        self,
        model: LoadedModel,
        threads: int | None = None,
        precision: str = "fp32",
        calibration_clips: Sequence[np.ndarray] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown OpenVINO precision {precision!r}; "
                              f"choose one of: {', '.join(PRECISIONS)}")
        if model.device != "cpu":
            raise ConfigError(f"the OpenVINO backend runs on the CPU but {model.spec.name} was "
                              f"loaded on {model.device}; load it with device='cpu'")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, not {threads}")
        if precision == "int8" and (reason := _int8_refusal(model.spec.name)):
            raise ModelError(reason)
        ov = require("openvino")
        self.model = model
        self.labels = model.spec.labels
        self.precision = precision
        self.name = "openvino" if precision == "fp32" else f"openvino-{precision}"
        self._transform = ClipTransform(model.spec, temporal_subsample=False)
        self._lock = threading.Lock()
        directory = Path(cache_dir) if cache_dir is not None else ir_cache_dir()
        if precision == "int8":
            stem = f"{model_fingerprint(model, _INT8_RECIPE)}-int8"
        else:
            stem = model_fingerprint(model)
        self.ir_path = directory / f"{model.spec.name}-{stem}.xml"
        core = ov.Core()
        with _CACHE_LOCK:
            ov_model, self.from_cache = self._read_or_build(ov, core, calibration_clips)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        # int8: the layers left in float run in f32 too (bf16 there costs accuracy).
        config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        self._compiled = core.compile_model(ov_model, "CPU", config)
        self._request = self._compiled.create_infer_request()

    def _read_or_build(
        self, ov: Any, core: Any, calibration_clips: Sequence[np.ndarray] | None
    ) -> tuple[Any, bool]:
        """``(ov.Model, read from the cache)``: the IR at ``ir_path``, else built and saved.

        int8 starts from the fp32 IR (read from the cache, or converted and cached too).
        """
        name = self.model.spec.name
        cached = _read_cached(core, self.ir_path)
        if cached is not None:
            log.info("openvino: loaded %s IR from cache %s", name, self.ir_path)
            return cached, True
        if self.precision != "int8":
            return self._convert_and_save(ov, self.ir_path), False
        fp32_path = self.ir_path.with_name(f"{name}-{model_fingerprint(self.model)}.xml")
        fp32 = _read_cached(core, fp32_path)
        if fp32 is None:
            fp32 = self._convert_and_save(ov, fp32_path)
        start = time.perf_counter()
        clips = (list(calibration_clips) if calibration_clips is not None
                 else _default_calibration(self.model.spec))
        int8 = self._quantize(fp32, clips)
        _save_or_warn(ov, int8, self.ir_path)
        setup_log.info("openvino: quantised %s to int8 on %d clips in %.1f s; IR saved to %s",
                       name, len(clips), time.perf_counter() - start, self.ir_path)
        return int8, False

    def _convert_and_save(self, ov: Any, path: Path) -> Any:
        start = time.perf_counter()
        ov_model = _convert(ov, self.model)
        _save_or_warn(ov, ov_model, path)
        setup_log.info("openvino: converted %s in %.1f s; IR saved to %s",
                       self.model.spec.name, time.perf_counter() - start, path)
        return ov_model

    def _quantize(self, ov_model: Any, clips: Sequence[np.ndarray]) -> Any:
        """NNCF post-training quantisation on one-clip batches of ``clips``."""
        if not clips:
            raise ConfigError("int8 calibration needs at least one clip")
        nncf = require("nncf")
        items = [batch_pathways([c], self._transform) for c in clips]
        # The final Linear (the only MatMul in these CNNs) stays float: quantising it
        # doubled the top-1 disagreements on x3d_xs for no measurable speed.
        head = nncf.IgnoredScope(types=["MatMul"], validate=False)
        try:
            return nncf.quantize(
                ov_model, nncf.Dataset(items), subset_size=min(len(items), _SUBSET_MAX),
                ignored_scope=head,
            )
        except Exception as exc:  # NNCF raises many types
            raise ModelError(
                f"int8 quantisation of {self.model.spec.name} failed: {_first_line(exc)}"
            ) from exc

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``B`` clips of ``(T, crop, crop, 3)`` uint8 -> ``(probs (B, K), features (B, D))``
        float32 (copies: safe to keep)."""
        inputs = batch_pathways(clips, self._transform)
        with self._lock:
            result = self._request.infer(inputs, share_inputs=True)
            probs, feats = result[0], result[1]
        return (np.asarray(probs, dtype=np.float32), np.asarray(feats, dtype=np.float32))
