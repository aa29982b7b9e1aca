"""Building zoo networks and wrapping them to return scores and clip embeddings.

Torch, pytorchvideo and transformers are imported here, on first use only.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from streamclf._lazy import require
from streamclf.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from torch import nn

    from streamclf.models.registry import ModelSpec

__all__ = ["build_network", "resolve_device", "wrap_network"]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a torch device string.

    ``auto`` picks CUDA when torch sees a GPU and falls back to CPU otherwise.

    Raises:
        ConfigError: an unknown value, or CUDA asked for explicitly but unavailable.
    """
    torch = require("torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available on this machine; "
                "use --device auto or --device cpu"
            )
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def _get_submodule(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ModelError(f"model has no module {path!r}") from None


def build_network(spec: ModelSpec, num_classes: int | None = None) -> nn.Module:
    """Build ``spec``'s architecture with random weights, in eval mode, on CPU.

    pytorchvideo models come from ``pytorchvideo.models.hub`` so that the published
    checkpoints load with strict key matching; TimeSformer from ``transformers``.
    A ``num_classes`` other than the spec's replaces the final linear layer.
    """
    torch = require("torch")
    if spec.family == "pytorchvideo":
        with warnings.catch_warnings():
            # pytorchvideo calls the deprecated torch.jit.script at import and build time.
            warnings.simplefilter("ignore")
            hub = require("pytorchvideo.models.hub")
            model = getattr(hub, spec.name)(pretrained=False)
    elif spec.family == "timesformer":
        tf = require("transformers")
        config = tf.TimesformerConfig(
            num_labels=spec.num_classes, num_frames=spec.num_frames, image_size=spec.crop_size
        )
        model = tf.TimesformerForVideoClassification(config)
    else:  # pragma: no cover - registry is static
        raise ModelError(f"unknown model family {spec.family!r}")
    n = num_classes or spec.num_classes
    head = _get_submodule(model, spec.head_path)
    if head.out_features != n:
        parent_path, _, attr = spec.head_path.rpartition(".")
        parent = _get_submodule(model, parent_path) if parent_path else model
        setattr(parent, attr, torch.nn.Linear(head.in_features, n))
    return model.eval()


def _head_applies_softmax(model: nn.Module, spec: ModelSpec) -> bool:
    """X3D's hub heads end in Softmax (applied per position, then averaged)."""
    torch = require("torch")
    parent_path = spec.head_path.rpartition(".")[0]
    head = _get_submodule(model, parent_path) if parent_path else model
    return isinstance(getattr(head, "activation", None), torch.nn.Softmax)


def wrap_network(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """Wrap a zoo network as ``forward(*pathways) -> (scores, features)``.

    * ``pathways``: ``(B, 3, T_i, H, W)`` float32 tensors, slow first for SlowFast.
    * ``scores``: ``(B, num_classes)`` class probabilities, exactly what the reference
      pipeline produces: the network's own output when its head ends in Softmax
      (X3D: softmax per spatial position, then averaged), else softmax of its logits.
    * ``features``: ``(B, feature_dim)`` the input of the final linear layer, averaged
      over any remaining positions (the clip embedding).

    Not thread-safe: one wrapper must not run two forwards at once (the feature hook
    stores into the instance).
    """
    from streamclf.models.wrapper import ScoresAndFeatures  # imports torch

    head = _get_submodule(model, spec.head_path)
    wrapper = ScoresAndFeatures(model, head, softmax_inside=_head_applies_softmax(model, spec),
                                hf_video=spec.family == "timesformer")
    return wrapper.eval()
