"""``ScoresAndFeatures``: a zoo network as ``forward(*pathways) -> (scores, features)``.

Imports torch at module level: :mod:`streamclf.models.network` imports this module on
first use only (see :func:`~streamclf.models.network.wrap_network`), so that
``import streamclf`` stays light.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ScoresAndFeatures"]


class ScoresAndFeatures(nn.Module):
    """Wraps ``net`` (whose final linear layer is ``head``) to return probabilities and the
    clip embedding.

    * ``forward(*pathways)``: ``(B, 3, T_i, H, W)`` float32 tensors, slow first for SlowFast.
    * returns ``scores`` ``(B, K)``: ``net``'s own output when ``softmax_inside`` (X3D's hub
      heads end in Softmax), else the softmax of its logits; and ``features`` ``(B, D)``: the
      input of ``head`` averaged over any remaining positions.
    * ``hf_video``: ``net`` is a transformers video model taking ``pixel_values``
      ``(B, T, C, H, W)`` and returning ``.logits`` (TimeSformer).

    Not thread-safe: one instance must not run two forwards at once (the pre-hook on
    ``head`` stores the features into the instance).
    """

    def __init__(self, net: nn.Module, head: nn.Module, softmax_inside: bool,
                 hf_video: bool) -> None:
        super().__init__()
        self.net = net
        self.softmax_inside = softmax_inside
        self.hf_video = hf_video
        self._captured: list[torch.Tensor] = []
        head.register_forward_pre_hook(self._capture)

    def _capture(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self._captured.append(args[0])

    def forward(self, *pathways: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.clear()
        if self.hf_video:
            # transformers' TimeSformer takes (B, T, C, H, W).
            out = self.net(pixel_values=pathways[0].permute(0, 2, 1, 3, 4)).logits
        else:
            # pytorchvideo's SlowFast mutates the list it is given: always a fresh one.
            out = self.net(list(pathways) if len(pathways) > 1 else pathways[0])
        feats = self._captured[-1]
        feats = feats.reshape(feats.shape[0], -1, feats.shape[-1]).mean(dim=1)
        scores = out if self.softmax_inside else torch.softmax(out, dim=1)
        return scores, feats
