"""Seeded, input-sensitive random checkpoints for parity tests, and real-frame helpers.

Why not plain random weights: pytorchvideo initialises every residual block's last
batch-norm scale to zero and every batch norm with mean 0 / variance 1, so a fresh
network is close to a fixed function of the stem; its top-5 and embedding hardly
move with the input, and a parity test built on it passes even with broken
preprocessing. Here the checkpoint is made to *depend* on its input:

* CNNs (X3D, SlowFast): every batch-norm scale is drawn around 1 (residual branches
  switched on) and the running statistics are measured on real clips, so each layer
  sees unit-scale, centred activations of real video rather than of the default.
* MViT (LayerNorm, no running statistics): its default init (all linear weights with
  std 0.02, learned class token and position embeddings) leaves the class token,
  which is all the head reads, nearly constant; linear weights are redrawn with
  fan-in scaling (content-dependent attention and large residual updates) and the
  class token / position embeddings are zeroed so the token carries only content.
* Every model: the final linear layer computes ``logits = W (f - mu) / sigma`` with
  ``mu``/``sigma`` the per-dimension statistics of the clip embeddings of the
  calibration clips, so the logits follow what differs between clips instead of
  what all clips share, and the top-5 moves when the input does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamclf.models.network import build_network
from streamclf.video import iter_frames

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec

__all__ = ["Preprocess", "clip_frames", "make_checkpoint", "read_span"]

#: Frames in, network inputs out: one ``(3, T_i, H, W)`` float tensor per pathway.
Preprocess = Callable[[Sequence[np.ndarray]], list[torch.Tensor]]

#: Logit standard deviation of the seeded head (a spread-out, non-degenerate softmax).
LOGIT_SCALE = 4.0


def read_span(path: Path, start: int, count: int) -> list[np.ndarray]:
    """Frames ``start .. start + count - 1`` of ``path``, decoded by streamclf as RGB.

    Decoding stops right after the span so that long files cost little.
    """
    frames: list[np.ndarray] = []
    for index, _ts, frame in iter_frames(path, want=lambda i, _t: start <= i < start + count):
        if frame is not None:
            frames.append(frame)
        if index >= start + count - 1:
            break
    if len(frames) != count:
        raise ValueError(f"{path}: only {len(frames)} of the {count} frames from {start}")
    return frames


def clip_frames(spec: ModelSpec) -> int:
    """Frames one model window spans at 30 fps (``num_frames * sampling_rate``)."""
    return spec.num_frames * spec.sampling_rate


def _reinit_transformer(
    model: torch.nn.Module, gen: torch.Generator, zero_tokens: bool = True
) -> None:
    """Fan-in scaled linear weights and content-only class token (see module doc)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                std = 1.0 / math.sqrt(mod.in_features)
                mod.weight.copy_(std * torch.randn(mod.weight.shape, generator=gen))
                if mod.bias is not None:
                    mod.bias.zero_()
        if zero_tokens:
            for name, param in model.named_parameters():
                if "cls_token" in name or "pos_embed" in name:
                    param.zero_()


def _smooth_pixel_filters(model: torch.nn.Module, passes: int) -> None:
    """Low-pass the filters that look at pixels (norm kept)."""
    k = torch.tensor([0.25, 0.5, 0.25])
    blur = (k[:, None] * k[None, :]).reshape(1, 1, 3, 3)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv3d) and mod.in_channels == 3 and passes:
                w = mod.weight
                flat = w.reshape(-1, 1, *w.shape[-2:])
                norms = flat.flatten(1).norm(dim=1)
                for _ in range(passes):
                    flat = torch.nn.functional.conv2d(flat, blur, padding=1)
                flat = flat * (norms / flat.flatten(1).norm(dim=1).clamp_min(1e-12))[:, None, None, None]
                w.copy_(flat.reshape(w.shape))


def _calibrate(
    model: torch.nn.Module, head: torch.nn.Module, inputs: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Set batch-norm running statistics from ``inputs`` and return the head inputs
    (one row per clip and position).

    All clips go through as one batch with only the batch norms in training mode
    (momentum ``None``: the running statistics become exactly the batch's), so every
    layer is normalised by the statistics the calibrated network will use, and the
    captured embeddings are those of the calibrated network (dropout stays off).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        batch = [torch.stack([clip[p] for clip in inputs]) for p in range(len(inputs[0]))]
        with torch.no_grad():
            model(batch if len(batch) > 1 else batch[0])
    finally:
        hook.remove()
        for bn in norms:
            bn.momentum = 0.1
        model.eval()
    feats = captured[-1]
    return feats.reshape(-1, feats.shape[-1])


def make_checkpoint(
    spec: ModelSpec,
    calibration: Sequence[Sequence[np.ndarray]],
    preprocess: Preprocess,
    seed: int = 0,
    reinit: bool = True,
    zero_tokens: bool = True,
    per_dim: bool = True,
    smooth: int = 0,
) -> dict[str, torch.Tensor]:
    """A seeded random state dict for ``spec`` whose outputs depend on the input.

    Args:
        calibration: real clips (frames as the reference pipeline takes them) whose
            statistics set the batch norms and the head; use clips other than the
            ones the parity is checked on.
        preprocess: the reference transform that turns a clip into network inputs.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_network(spec)
    head = model.get_submodule(spec.head_path)
    if reinit and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        _reinit_transformer(model, gen, zero_tokens)
    _smooth_pixel_filters(model, smooth)
    inputs = [preprocess(frames) for frames in calibration]
    feats = _calibrate(model, head, inputs).double()
    mu = feats.mean(dim=0)
    sigma = feats.std(dim=0)
    # Dimensions that hardly vary (dead ReLUs) must not blow tiny differences up.
    sigma = torch.clamp(sigma, min=0.1 * float(sigma.median()) + 1e-12)
    if not per_dim:
        sigma = (feats - mu).pow(2).mean().sqrt().expand_as(mu)
    global _LAST
    _LAST = (mu.numpy(), sigma.numpy())
    w = torch.randn(head.weight.shape, generator=gen, dtype=torch.float64)
    w *= LOGIT_SCALE / math.sqrt(w.shape[1])
    with torch.no_grad():
        head.weight.copy_(w / sigma)
        head.bias.copy_(-(w / sigma) @ mu)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
