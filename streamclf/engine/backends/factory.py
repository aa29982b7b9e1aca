"""Choosing and building a backend: ``torch``, ``onnxruntime``, ``openvino`` or ``auto``.

``auto`` measures every backend available for the model on this machine once (a few
batch-1 inferences each), picks the fastest and caches the verdict in
``$STREAMCLF_CACHE/backend_choice.json`` (default ``~/.cache/streamclf``), keyed by model,
device, CPU, thread count, precision and library versions, so later runs start at once.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamclf.config import BACKENDS, PRECISIONS
from streamclf.engine.backends.base import InferenceBackend
from streamclf.engine.backends.cache import cache_root
from streamclf.errors import ConfigError, ModelError, StreamclfError
from streamclf.models.loader import LoadedModel

__all__ = ["BACKENDS", "PRECISIONS", "BackendChoice", "cache_root", "create_backend"]

log = logging.getLogger(__name__)
#: One line per set-up step of a first run, with its time (the CLI shows them by default).
setup_log = logging.getLogger("streamclf.setup")



@dataclass(frozen=True)
class BackendChoice:
    """The backend built, and a one-line reason to print at start-up."""

    backend: InferenceBackend
    reason: str


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(name: str, model: LoadedModel, precision: str, threads: int | None) -> InferenceBackend:
    if name == "torch":
        from streamclf.engine.backends.torch_backend import TorchBackend

        if precision == "int8":
            raise ConfigError("precision int8 needs --backend openvino (or auto)")
        return TorchBackend(model, precision=precision)
    if precision != "fp32" and not (name == "openvino" and precision in ("bf16", "int8")):
        extra = ", bf16 and int8" if name == "openvino" else ""
        raise ConfigError(f"backend {name} supports precision fp32{extra}, not {precision}")
    if name == "onnxruntime":
        from streamclf.engine.backends.onnx_backend import OnnxBackend

        return OnnxBackend(model, threads=threads)
    if name == "openvino":
        if model.device != "cpu":
            raise ConfigError("the openvino backend runs on the CPU; use --device cpu")
        from streamclf.engine.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(model, threads=threads, precision=precision)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _time_backend(backend: InferenceBackend, clip: np.ndarray, repeats: int = 3) -> float:
    backend.infer([clip])  # warm-up (first call compiles / allocates)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.infer([clip])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def _candidates(model: LoadedModel, precision: str) -> list[str]:
    if precision == "int8":
        return ["openvino"]
    if model.device.startswith("cuda"):
        return ["torch", "onnxruntime"] if precision == "fp32" else ["torch"]
    if precision == "bf16":
        return ["torch", "openvino"]
    return ["torch", "onnxruntime", "openvino"] if precision == "fp32" else ["torch"]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for pkg in ("torch", "onnxruntime", "openvino"):
        try:
            parts.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg}=none")
    return ",".join(parts)


def create_backend(
    model: LoadedModel,
    name: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    cache_file: Path | None = None,
    timer: Callable[[InferenceBackend, np.ndarray], float] = _time_backend,
    torch_compile: bool = False,
) -> BackendChoice:
    """Build the named backend, or for ``auto`` the fastest one measured here.

    Raises:
        ConfigError: unknown name/precision, or a combination a backend cannot do.
        StreamclfError: the backend's package is missing (with an install hint).
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if torch_compile:
        if name != "torch":
            raise ConfigError("torch_compile needs --backend torch")
        from streamclf.engine.backends.torch_backend import TorchBackend

        return BackendChoice(TorchBackend(model, precision=precision, compile=True),
                             "torch with torch.compile (as requested; the first clips compile)")
    if name != "auto":
        return BackendChoice(_build(name, model, precision, threads), f"{name} (as requested)")

    cache_file = cache_file or cache_root() / "backend_choice.json"
    key = "|".join([model.spec.name, model.device, cpu_name(), str(threads or "default"),
                    precision, _versions()])
    cached = _read_cache(cache_file)
    if key in cached:
        entry = cached[key]
        backend = _build(entry["backend"], model, precision, threads)
        return BackendChoice(backend, f"{entry['backend']}: fastest here when measured "
                             f"({_fmt(entry['ms'])}; cached in {cache_file})")

    spec = model.spec
    clip = np.zeros((spec.num_frames, spec.crop_size, spec.crop_size, 3), dtype=np.uint8)
    timings: dict[str, float] = {}
    built: dict[str, InferenceBackend] = {}
    candidates = _candidates(model, precision)
    setup_log.info("backend auto: first run of %s here: timing %s (exports and conversions "
                   "happen once; the choice is cached in %s)", spec.name,
                   ", ".join(candidates), cache_file)
    started = time.perf_counter()
    for cand in candidates:
        t0 = time.perf_counter()
        try:
            backend = _build(cand, model, precision, threads)
            timings[cand] = timer(backend, clip)
            built[cand] = backend
            setup_log.info("backend auto: %s: %.0f ms per clip (set up and timed in %.1f s)",
                           cand, timings[cand], time.perf_counter() - t0)
        except StreamclfError as exc:
            log.info("backend %s unavailable for %s: %s", cand, spec.name, exc)
            setup_log.info("backend auto: %s: unavailable (%s; %.1f s)", cand, exc,
                           time.perf_counter() - t0)
        except Exception as exc:  # a backend that cannot run this model is skipped
            log.info("backend %s failed on %s: %s: %s", cand, spec.name, type(exc).__name__, exc)
            setup_log.info("backend auto: %s: failed on %s (%.1f s)", cand, spec.name,
                           time.perf_counter() - t0)
    if not timings:
        raise ModelError(f"no backend can run {spec.name} here")
    best = min(timings, key=timings.__getitem__)
    setup_log.info("backend auto: %s is the fastest (all timed in %.1f s)", best,
                   time.perf_counter() - started)
    cached[key] = {"backend": best, "ms": {k: round(v, 1) for k, v in timings.items()},
                   "measured": time.strftime("%Y-%m-%d")}
    _write_cache(cache_file, cached)
    return BackendChoice(built[best], f"{best}: fastest of {_fmt(timings)} measured now "
                         f"(batch 1; cached in {cache_file})")


def _fmt(ms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(ms.items(), key=lambda kv: kv[1]))


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(path: Path, data: dict[str, dict]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not stop the run
        log.warning("cannot write the backend cache %s: %s", path, exc)
