"""Seeded, input-sensitive random checkpoints for parity tests, and real-frame helpers.

Why not plain random weights: a freshly built pytorchvideo CNN has every batch norm at
mean 0 / variance 1 (nothing like the statistics of real activations) and the last
batch norm of every residual block at scale 0, and every zoo model ends in features
(ReLU outputs, or a LayerNorm-ed class token) that share a large common component
across clips. A random 400-way head on top picks nearly the same top-5 for any clip,
so a parity test built on it passes even with broken preprocessing. Measured on
x3d_xs with the default init: frames shifted by three pass the parity check (same
top-5, cosine 0.9993); another video altogether still shares 4 of the top-5 (cosine
0.988).

What makes a checkpoint here input-sensitive:

* batch-norm running statistics measured on real clips (CNNs), so each normalised
  activation is centred and unit-scaled on real video, not on the default;
* a head that reads what differs between clips, not what they share:
  ``logits = W (f - mu) / sigma`` with ``mu``/``sigma`` the per-dimension mean and
  spread of the embeddings of the calibration clips (other videos than the parity
  clip). MViT needs nothing more: LayerNorm has no running statistics to get wrong,
  and its LayerNorm-ed class token already varies strongly with the input (cosine
  0.12 between BGR and RGB frames with the default init); only its head had to stop
  reading the shared part;
* no near-ties at the top: ``W`` is redrawn (from the same seeded generator) until the
  six best classes of a given clip are separated by at least ``min_gap`` logit
  standard deviations, so that the uint8 rounding of a correct pipeline (which moves
  logits by well under 1% of their spread) cannot reorder the top-5, while a broken
  input (which moves them by 15% or more) does.

Everything else keeps pytorchvideo's seeded init, residual scales of 0 included:
switching the residual branches on (scales drawn in [0.5, 1.5]) made x3d_xs chaotic,
with uint8 rounding alone giving cosine 0.995 and a different top-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamclf.media.video import iter_frames
from streamclf.models.network import _head_applies_softmax, build_network

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec

__all__ = ["Preprocess", "clip_frames", "make_checkpoint", "read_span"]

#: Frames in, network inputs out: one ``(3, T_i, H, W)`` float tensor per pathway.
Preprocess = Callable[[Sequence[np.ndarray]], list[torch.Tensor]]

#: Scale of the seeded head's logits (in units of the calibration spread).
LOGIT_SCALE = 4.0
#: Head draws tried before giving up on the top-6 separation.
MAX_DRAWS = 200


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


def _batch(clips: Sequence[list[torch.Tensor]]) -> torch.Tensor | list[torch.Tensor]:
    """Stack clips into what a pytorchvideo network takes (a list for SlowFast)."""
    batch = [torch.stack([clip[p] for clip in clips]) for p in range(len(clips[0]))]
    return batch if len(batch) > 1 else batch[0]


def _head_inputs(
    model: torch.nn.Module, head: torch.nn.Module, clips: Sequence[list[torch.Tensor]]
) -> torch.Tensor:
    """Run ``clips`` as one batch; the head's input as ``(clips, positions, dim)``."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            model(_batch(clips))
    finally:
        hook.remove()
    feats = captured[-1]
    return feats.reshape(feats.shape[0], -1, feats.shape[-1])


def _calibrate(
    model: torch.nn.Module, head: torch.nn.Module, clips: Sequence[list[torch.Tensor]]
) -> torch.Tensor:
    """Set batch-norm running statistics from ``clips``; return the head inputs.

    All clips go through as one batch with only the batch norms in training mode
    (momentum ``None``: the running statistics become exactly the batch's), so each
    layer is measured under the statistics the calibrated network will use, and the
    captured embeddings are those of the calibrated network (dropout stays off).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        return _head_inputs(model, head, clips)
    finally:
        for bn in norms:
            bn.momentum = 0.1
        model.eval()


def _top6_gap(
    feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, softmax_inside: bool
) -> float:
    """Smallest gap between consecutive scores of the six best classes, in log space,
    over the spread of the logits. Scores are formed the way the network forms them."""
    logits = feats @ weight.T + bias  # (positions, classes)
    if softmax_inside:
        scores = torch.log(torch.softmax(logits, dim=1).mean(dim=0))
    else:
        scores = logits.mean(dim=0)
    top = torch.sort(scores, descending=True).values[:6]
    return float((top[:-1] - top[1:]).min() / logits.mean(dim=0).std())


def make_checkpoint(
    spec: ModelSpec,
    calibration: Sequence[Sequence[np.ndarray]],
    preprocess: Preprocess,
    seed: int = 0,
    margin_clip: Sequence[np.ndarray] | None = None,
    min_gap: float = 0.03,
) -> dict[str, torch.Tensor]:
    """A seeded random state dict for ``spec`` whose outputs depend on the input.

    Args:
        calibration: real clips (frames as the reference pipeline takes them) whose
            statistics set the batch norms and the head; use other videos than the
            one the parity is checked on.
        preprocess: the reference transform that turns a clip into network inputs.
        margin_clip: if given, the head is redrawn until this clip's six best classes
            are ``min_gap`` logit standard deviations apart (see module doc).

    Raises:
        RuntimeError: no head draw reached ``min_gap``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching global RNG
        torch.manual_seed(seed)
        model = build_network(spec)
    head = model.get_submodule(spec.head_path)
    feats = _calibrate(model, head, [preprocess(frames) for frames in calibration])
    feats = feats.reshape(-1, feats.shape[-1]).double()
    mu = feats.mean(dim=0)
    # Dimensions that hardly vary (dead ReLUs) must not blow tiny differences up.
    sigma = feats.std(dim=0)
    sigma = torch.clamp(sigma, min=0.1 * float(sigma.median()) + 1e-12)
    probe = None
    if margin_clip is not None:
        probe = _head_inputs(model, head, [preprocess(margin_clip)])[0].double()
    softmax_inside = _head_applies_softmax(model, spec)
    for _ in range(MAX_DRAWS):
        w = torch.randn(head.weight.shape, generator=gen, dtype=torch.float64)
        weight = w * (LOGIT_SCALE / math.sqrt(w.shape[1])) / sigma
        bias = -(weight @ mu)
        if probe is None or _top6_gap(probe, weight, bias, softmax_inside) >= min_gap:
            break
    else:
        raise RuntimeError(f"no head for {spec.name} separates the top-6 by {min_gap}")
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
