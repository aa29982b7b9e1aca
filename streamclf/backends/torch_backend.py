"""The PyTorch backend: eager, ``inference_mode``, CPU or CUDA."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamclf._lazy import require
from streamclf.models.loader import LoadedModel
from streamclf.preprocess import ClipTransform

__all__ = ["TorchBackend"]


class TorchBackend:
    """Runs a :class:`~streamclf.models.LoadedModel` on windows from the ring.

    Clips arrive resized and cropped with exactly ``num_frames`` frames, so only
    normalisation and SlowFast pathway packing remain.
    Not thread-safe: one inference thread calls ``infer``.
    """

    name = "torch"

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.labels = model.spec.labels
        self._transform = ClipTransform(model.spec, temporal_subsample=False)

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        torch = require("torch")
        inputs = [self._transform(c) for c in clips]
        pathways = [
            torch.from_numpy(np.stack([x[p] for x in inputs])).to(self.model.device)
            for p in range(len(inputs[0]))
        ]
        with torch.inference_mode():
            probs, feats = self.model.net(*pathways)
        return probs.float().cpu().numpy(), feats.float().cpu().numpy()
