"""Checkpoints of a training run, in the run's ``--out`` folder.

* ``best.safetensors`` + ``best.json``, ``last.safetensors`` + ``last.json``: the model's
  state dict and its sidecar (``model``, ``labels``, ``input`` — the clip contract the
  weights were trained with — ``metrics``, the recipe). These are what
  ``--weights OUT/best.safetensors`` loads everywhere (:mod:`streamclf.models.weights`).
* ``last.state.pt``: what ``--resume`` needs besides the weights: optimizer and
  grad-scaler state, epochs done, best result, history. Only tensors and plain
  containers, so it loads with ``torch.load(weights_only=True)``.
* ``metrics.jsonl``: one line per epoch.

Every file is written to a temporary name and renamed into place, so an interrupted
run never leaves a half-written checkpoint. Not thread-safe (one run per folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf._lazy import require
from streamclf.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "STATE_FILE",
    "append_metrics",
    "load_state",
    "save_model",
    "save_state",
    "state_dict_for_saving",
]

STATE_FILE = "last.state.pt"
METRICS_FILE = "metrics.jsonl"


def _atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Write ``target`` through a temporary file renamed into place (``write(tmp)``'s
    return value, e.g. a byte count, is ignored)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A plain open (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def state_dict_for_saving(model: nn.Module) -> dict[str, Any]:
    """The model's tensors, detached, contiguous, on CPU, none sharing storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(out: Path, stem: str, model: nn.Module, sidecar: dict[str, Any]) -> Path:
    """Write ``OUT/<stem>.safetensors`` and its ``OUT/<stem>.json`` sidecar; returns the
    weights path. The sidecar is written last: a reader never sees new labels with old
    weights."""
    st = require("safetensors.torch")
    path = out / f"{stem}.safetensors"
    tensors = state_dict_for_saving(model)
    # save() to bytes, written by us: save_file() creates the file private (0600).
    blob = st.save(tensors, metadata={"format": "pt"})
    _atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    text = json.dumps(sidecar, indent=2) + "\n"
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write ``OUT/last.state.pt`` (tensors and plain containers only)."""
    torch = require("torch")
    _atomic_write(out / STATE_FILE, lambda tmp: torch.save(state, str(tmp)))


def load_state(out: Path) -> dict[str, Any]:
    """Read ``OUT/last.state.pt`` weights-only.

    Raises:
        ConfigError: there is no run to resume in ``out``.
        WeightsError: the file is damaged or holds pickled objects.
    """
    torch = require("torch")
    path = out / STATE_FILE
    if not path.is_file() or not (out / "last.safetensors").is_file():
        raise ConfigError(f"nothing to resume in {out}: no {STATE_FILE} and last.safetensors "
                          "(run without --resume to start training)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read the resume state {path}: {first}") from None
    if not isinstance(state, dict) or "epoch" not in state or "optimizer" not in state:
        raise WeightsError(f"{path} is not a streamclf training state")
    return state


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``OUT/metrics.jsonl``."""
    with (out / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
