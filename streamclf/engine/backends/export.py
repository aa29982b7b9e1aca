"""Exporting a loaded zoo network to ONNX, verified against torch, with an on-disk cache.

The exported graph is the wrapped network of :func:`streamclf.models.network.wrap_network`:

* inputs: ``slow`` and ``fast`` for SlowFast, ``video`` otherwise; each
  ``(B, 3, T_i, H, W)`` float32, already normalised (the clip transform stays in Python);
* outputs: ``scores`` ``(B, K)`` float32 and ``features`` ``(B, D)`` float32.

``scores`` are class **probabilities**, not logits: pytorchvideo's X3D hub heads end in a
Softmax applied at every spatio-temporal position before the positions are averaged, so
an X3D network has no single logits tensor to export. For every other model the
softmax of the logits is exported, so all graphs give the same kind of output as the
torch backend. ``features`` is the input of the final linear layer averaged over
positions (the clip embedding).

Example::

    from streamclf.models import load_model
    from streamclf.engine.backends.export import export_onnx
    export_onnx(load_model("x3d_xs", "kinetics400", device="cpu"), Path("x3d_xs.onnx"))

Every exported file carries its input contract in ONNX ``metadata_props`` (see
:func:`onnx_metadata`), and :func:`export_onnx` writes the class names beside it, one per
line, in ``<file>.labels.txt``. Both files are mode 0644.

Torch and onnxruntime are imported on first use only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from streamclf._lazy import require
from streamclf.engine.backends.cache import cache_root, model_fingerprint
from streamclf.engine.backends.onnx_meta import (
    embed_metadata,
    first_line,
    input_names,
    labels_path,
    onnx_metadata,
    read_onnx_metadata,
)
from streamclf.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

    from streamclf.models.loader import LoadedModel
    from streamclf.models.registry import ModelSpec

__all__ = [
    "OUTPUT_NAMES",
    "TensorInfo",
    "cached_onnx",
    "describe_onnx",
    "export_onnx",
    "input_names",
    "labels_path",
    "model_fingerprint",
    "onnx_cache_dir",
    "onnx_metadata",
    "read_onnx_metadata",
]

log = logging.getLogger(__name__)
#: One line per set-up step of a first run, with its time (the CLI shows them by default).
setup_log = logging.getLogger("streamclf.setup")

#: Output names of every exported graph, in order.
OUTPUT_NAMES = ("scores", "features")
#: Symbolic name of the dynamic batch axis.
BATCH_AXIS = "batch"
#: Acceptance of the post-export check on a random input (onnxruntime vs torch).
VERIFY_COSINE_MIN = 0.999
VERIFY_SCORES_ATOL = 1e-3
#: Opsets torch's TorchScript exporter accepts (``torch.onnx._constants``, torch 2.14).
MIN_OPSET, MAX_OPSET = 7, 20

#: Permissions of every file written (the temporary files start as 0600).
FILE_MODE = 0o644

_CACHE_LOCK = threading.Lock()
_EXPORT_LOCK = threading.Lock()


def _check_output_path(path: Path, spec: ModelSpec, write_labels: bool) -> None:
    """A one-line ConfigError, before any work, for an output that cannot be a file."""
    if path.is_dir():
        raise ConfigError(f"ONNX output {path} is a directory; give a file path, e.g. "
                          f"{path / (spec.name + '.onnx')}")
    if write_labels and labels_path(path).is_dir():
        raise ConfigError(f"cannot write the class names to {labels_path(path)}: it is a "
                          "directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write ONNX output {path}: {parent} is not a directory")


def _unsupported(spec: ModelSpec, exc: BaseException | str) -> ModelError:
    """The one-line error for a model whose graph cannot be exported or does not match."""
    reason = first_line(exc) if isinstance(exc, BaseException) else exc
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return ModelError(f"ONNX export is not supported for {spec.name}: {reason}")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


@contextlib.contextmanager
def _quiet_exporter(torch: Any) -> Iterator[None]:
    """Keep the TorchScript exporter's C++ log off stdout.

    torch >= 2.7 switches that log on for every export (``setup_onnx_logging`` tests the
    function ``_jit_is_onnx_log_enabled`` instead of calling it) and never off again, so
    a failed export prints the whole traced graph to stdout. Its messages go to this
    module's debug log instead, and the log's previous state is restored. Exports are
    serialised because the switch is process-wide.
    """
    c = torch._C
    log_fn = getattr(c, "_jit_onnx_log", None)
    is_enabled = getattr(c, "_jit_is_onnx_log_enabled", None)
    set_enabled = getattr(c, "_jit_set_onnx_log_enabled", None)

    def to_debug_log(*parts: object) -> None:
        log.debug("torch.onnx: %s", " ".join(str(p) for p in parts)[:2000])

    with _EXPORT_LOCK:
        was_enabled = bool(is_enabled()) if is_enabled is not None else None
        if log_fn is not None:
            c._jit_onnx_log = to_debug_log
        try:
            yield
        finally:
            if log_fn is not None:
                c._jit_onnx_log = log_fn
            if set_enabled is not None and was_enabled is not None:
                set_enabled(was_enabled)


def _random_inputs(spec: ModelSpec, batch: int, device: str, seed: int) -> list[torch.Tensor]:
    """One ``(batch, C, T, H, W)`` standard-normal tensor per pathway (normalised-video scale)."""
    torch = require("torch")
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *shape), generator=gen).to(device) for shape in spec.input_shapes]


def _verify(model: LoadedModel, path: Path, batch: int) -> None:
    """Run the exported file once in onnxruntime (CPU) against torch on a random input.

    Raises:
        ModelError: onnxruntime cannot load or run the graph, or its outputs differ.
    """
    torch = require("torch")
    ort = require("onnxruntime")
    spec = model.spec
    inputs = _random_inputs(spec, batch, model.device, seed=1)
    with torch.inference_mode():
        ref_scores, ref_feats = (t.float().cpu().numpy() for t in model.net(*inputs))
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: onnxruntime warns about unused initialisers
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {n: x.cpu().numpy() for n, x in zip(input_names(spec), inputs, strict=True)}
        scores, feats = session.run(list(OUTPUT_NAMES), feed)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _unsupported(spec, exc) from exc
    if scores.shape != ref_scores.shape or feats.shape != ref_feats.shape:
        raise _unsupported(spec, f"onnxruntime output shapes {scores.shape}, {feats.shape} "
                                 f"differ from torch's {ref_scores.shape}, {ref_feats.shape}")
    cos = min(_cosine(f, r) for f, r in zip(feats, ref_feats, strict=True))
    diff = float(np.abs(scores - ref_scores).max())
    if cos < VERIFY_COSINE_MIN or diff > VERIFY_SCORES_ATOL:
        raise _unsupported(spec, f"onnxruntime output differs from torch (feature cosine "
                                 f"{cos:.5f}, max score difference {diff:.2e})")
    log.info("verified %s in onnxruntime: feature cosine %.6f, max score diff %.1e",
             path, cos, diff)


def export_onnx(
    model: LoadedModel, path: Path, opset: int = 17, dynamic_batch: bool = True,
    write_labels: bool = True,
) -> Path:
    """Export ``model.net`` to ONNX at ``path`` and check it in onnxruntime.

    Inputs are named ``slow``/``fast`` (SlowFast) or ``video``, each ``(B, 3, T, H, W)``
    float32 normalised clips; outputs ``scores`` ``(B, K)`` (probabilities, see the
    module docstring) and ``features`` ``(B, D)``. With ``dynamic_batch`` the batch axis
    is symbolic (``"batch"``); otherwise the graph takes batch 1 only. The graph's
    ``metadata_props`` hold :func:`onnx_metadata`; with ``write_labels`` the ``K`` class
    names go to :func:`labels_path` (``<path>.labels.txt``), one per line. Both files
    get mode 0644.

    The graph is traced by the TorchScript exporter (``dynamo=False``) with batch 2 and
    checked with batch 1 (so a batch size baked into the trace shows up), in onnxruntime
    on CPU against torch on a random input: feature cosine >= 0.999 and probabilities
    within 1e-3. The files are written to temporary names beside ``path`` and renamed
    into place only once verified (nothing is left behind on failure).

    Thread-safety: runs a forward of ``model.net``; do not use the model from another
    thread meanwhile.

    Returns:
        ``path``.

    Raises:
        ConfigError: ``opset`` outside what the exporter supports (7 to 20), ``path`` is
            a directory or cannot be written, or a class name holds a line break.
        ModelError: ``ONNX export is not supported for <model>: <reason>`` when the
            network cannot be traced or expressed in ONNX at ``opset``, onnxruntime
            cannot run the graph, or its outputs differ from torch's.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"ONNX opset {opset} is not supported; use {MIN_OPSET} to "
                          f"{MAX_OPSET} (default 17)")
    spec = model.spec
    path = Path(path)
    _check_output_path(path, spec, write_labels)
    if write_labels and any("\n" in name or "\r" in name for name in spec.labels):
        raise ConfigError(f"a class name of {spec.name} holds a line break; the labels file "
                          "has one name per line")
    torch = require("torch")
    require("onnx")  # torch's exporter needs it: a missing package gets an install hint
    names = input_names(spec)
    dummies = _random_inputs(spec, 2 if dynamic_batch else 1, model.device, seed=0)
    axes = {n: {0: BATCH_AXIS} for n in (*names, *OUTPUT_NAMES)} if dynamic_batch else None
    temps: list[Path] = []
    try:
        try:
            tmp = _temp_beside(path, temps)
            labels_tmp = _temp_beside(labels_path(path), temps) if write_labels else None
        except OSError as exc:
            raise ConfigError(f"cannot write ONNX output {path}: {exc.strerror or exc}") from None
        try:
            with (warnings.catch_warnings(), _quiet_exporter(torch),
                  torch.inference_mode(False), torch.no_grad()):
                # Tracer warnings (Python control flow on shapes) are expected: the input
                # shape is fixed per model, and the result is verified below.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model.net, tuple(dummies), str(tmp), input_names=list(names),
                    output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                    opset_version=opset, do_constant_folding=True, dynamo=False,
                )
            embed_metadata(tmp, onnx_metadata(model))
        except Exception as exc:  # the exporter raises many unrelated types
            raise _unsupported(spec, exc) from exc
        _verify(model, tmp, batch=1)
        try:
            if labels_tmp is not None:
                labels_tmp.write_text("".join(f"{name}\n" for name in spec.labels),
                                      encoding="utf-8")
                os.chmod(labels_tmp, FILE_MODE)
                os.replace(labels_tmp, labels_path(path))
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot write ONNX output {path}: {exc.strerror or exc}") from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    log.info("exported %s to %s (%.1f MB)", spec.name, path, path.stat().st_size / 1e6)
    return path


def _temp_beside(target: Path, temps: list[Path]) -> Path:
    """A new empty file in ``target``'s folder (created if needed), added to ``temps``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    temps.append(Path(name))
    return temps[-1]


def onnx_cache_dir() -> Path:
    """``$STREAMCLF_CACHE/onnx`` when that variable is set, else ``~/.cache/streamclf/onnx``."""
    return cache_root() / "onnx"


def cached_onnx(model: LoadedModel, cache_dir: Path | None = None) -> Path:
    """The ONNX file for ``model``, exported on the first call only.

    The file is ``<cache_dir>/<name>-<fingerprint>.onnx`` (``cache_dir`` defaults to
    :func:`onnx_cache_dir`), exported with the defaults of :func:`export_onnx` (opset
    17, dynamic batch), without a labels file (the fingerprint covers the tensors, not
    the class names; its ``weights`` metadata names the first checkpoint exported). A file
    already there is returned without re-exporting; the export writes a temporary file and
    renames it, so a crash or a concurrent process never leaves a partial file under the
    final name.

    Thread-safe: exports are serialised within the process.

    Raises:
        ModelError: the model cannot be exported (see :func:`export_onnx`).
    """
    directory = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    target = directory / f"{model.spec.name}-{model_fingerprint(model)}.onnx"
    with _CACHE_LOCK:
        if target.is_file():
            log.debug("using cached ONNX export %s", target)
            return target
        start = time.perf_counter()
        path = export_onnx(model, target, write_labels=False)
        setup_log.info("exported %s to ONNX in %.1f s (once: cached as %s)", model.spec.name,
                       time.perf_counter() - start, path)
        return path


class TensorInfo(NamedTuple):
    """One graph input or output: ``shape`` holds ints and symbolic names (``"batch"``)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


def describe_onnx(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """``(inputs, outputs)`` of an ONNX file, read without loading its weights."""
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {init.name for init in graph.initializer}

    def info(value: Any) -> TensorInfo:  # an onnx.ValueInfoProto
        tensor = value.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return TensorInfo(value.name, dtype, dims)

    inputs = [info(v) for v in graph.input if v.name not in initialisers]
    return inputs, [info(v) for v in graph.output]
