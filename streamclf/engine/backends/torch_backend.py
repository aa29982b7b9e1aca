"""The PyTorch backend: eager under ``inference_mode``, CPU or CUDA.

Options: ``precision`` ``fp16``/``bf16`` runs under autocast (CUDA: fp16 or bf16; CPU:
bf16 only, useful on AMX CPUs); ``channels_last`` stores 3-D activations as
``channels_last_3d``; ``compile`` wraps the network in ``torch.compile`` (first calls are
slow while it compiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamclf._lazy import require
from streamclf.engine.backends.base import batch_pathways
from streamclf.errors import ConfigError
from streamclf.media.preprocess import ClipTransform
from streamclf.models.loader import LoadedModel

__all__ = ["TorchBackend"]


class TorchBackend:
    """Runs a :class:`~streamclf.models.LoadedModel` on windows from the ring.

    Clips arrive resized and cropped with exactly ``num_frames`` frames, so only
    normalisation and SlowFast pathway packing remain.
    Not thread-safe: one inference thread calls ``infer``.
    """

    name = "torch"

    def __init__(self, model: LoadedModel, precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False) -> None:
        torch = require("torch")
        cuda = model.device.startswith("cuda")
        if precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(
                f"torch backend precision must be fp32, fp16 or bf16, not {precision}"
            )
        if precision == "fp16" and not cuda:
            raise ConfigError("fp16 autocast needs CUDA; on the CPU use bf16 or fp32")
        self.model = model
        self.labels = model.spec.labels
        self.precision = precision
        self._transform = ClipTransform(model.spec, temporal_subsample=False)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self._device_type = "cuda" if cuda else "cpu"
        self._memory_format = torch.channels_last_3d if channels_last else None
        net: Any = model.net
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        self._net = torch.compile(net) if compile else net
        if precision != "fp32":
            self.name = f"torch-{precision}"

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        torch = require("torch")
        pathways = []
        for x in batch_pathways(clips, self._transform):
            t = torch.from_numpy(x).to(self.model.device, non_blocking=True)
            if self._memory_format is not None:
                t = t.contiguous(memory_format=self._memory_format)
            pathways.append(t)
        with torch.inference_mode():
            if self._dtype is not None:
                with torch.autocast(self._device_type, dtype=self._dtype):
                    probs, feats = self._net(*pathways)
            else:
                probs, feats = self._net(*pathways)
        return probs.float().cpu().numpy(), feats.float().cpu().numpy()
