"""Where backends keep derived artefacts (ONNX files, OpenVINO IRs, the backend choice),
and the fingerprint that names them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from streamclf._lazy import require

if TYPE_CHECKING:
    from streamclf.models.loader import LoadedModel

__all__ = ["cache_root", "model_fingerprint"]


def cache_root() -> Path:
    """``$STREAMCLF_CACHE`` when set, else ``~/.cache/streamclf``."""
    root = os.environ.get("STREAMCLF_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "streamclf"


def model_fingerprint(model: LoadedModel, salt: str = "") -> str:
    """16 hex characters of SHA-256 over ``salt``, the spec's name and input, and every tensor.

    The input part is what an exported graph fixes: frames, crop size, SlowFast alpha and
    normalisation (a fine-tuned checkpoint at a 130 crop must not reuse the zoo's 182 graph).
    Each tensor contributes its key, dtype, shape and raw bytes (keys sorted), so two models
    share a fingerprint only when their exported graphs would be identical. Reads only.
    """
    torch = require("torch")
    spec = model.spec
    shape = (spec.num_frames, spec.crop_size, spec.slowfast_alpha, spec.mean, spec.std)
    digest = hashlib.sha256(f"{salt}{spec.name}\0{shape!r}".encode())
    state = model.net.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
