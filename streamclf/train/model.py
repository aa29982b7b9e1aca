"""The network being fine-tuned: backbone from the given weights, a new head, and the
two ways of running it (logits for the loss, probabilities for validation).

The head is replaced exactly as :func:`streamclf.models.network.build_network` does for
``num_classes`` (a fresh ``nn.Linear`` at ``spec.head_path``), so the saved state dict
loads into ``build_network(spec, num_classes=len(labels))`` with strict key matching.

X3D's hub heads end in a Softmax applied per position and averaged; training needs logits,
so :class:`TrainableNet` switches that activation off for training forwards and back on
for validation (the activation has no parameters: the state dict is unaffected).
Not thread-safe: one forward at a time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamclf._lazy import require
from streamclf.errors import ConfigError, WeightsError
from streamclf.models.network import build_network
from streamclf.models.weights import RANDOM, load_checkpoint, load_into

if TYPE_CHECKING:
    import torch
    from torch import nn

    from streamclf.models.registry import ModelSpec

__all__ = ["TrainableNet", "build_for_training"]

log = logging.getLogger(__name__)

#: Standard deviation of the new head's initial weights (the bias starts at 0).
HEAD_INIT_STD = 0.01


def _replace_head(model: nn.Module, spec: ModelSpec, num_classes: int) -> None:
    torch = require("torch")
    head = model.get_submodule(spec.head_path)
    parent_path, _, attr = spec.head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    new = torch.nn.Linear(head.in_features, num_classes)
    torch.nn.init.normal_(new.weight, std=HEAD_INIT_STD)
    torch.nn.init.zeros_(new.bias)
    setattr(parent, attr, new)


def build_for_training(
    spec: ModelSpec, weights: str, labels: tuple[str, ...], seed: int
) -> nn.Module:
    """Build ``spec`` with its backbone from ``weights`` and a head for ``labels``.

    Args:
        weights: ``kinetics400``, ``random`` or a checkpoint path (a zoo checkpoint, or a
            streamclf fine-tuned one; a head whose classes equal ``labels`` is kept).
        seed: seeds the random parts (the whole network for ``random``, else the head).

    Returns:
        the network in train mode, on CPU.

    Raises:
        WeightsError: the checkpoint cannot be obtained or its backbone does not fit.
    """
    torch = require("torch")
    checkpoint = None if weights == RANDOM else load_checkpoint(spec, weights)
    rows = spec.num_classes
    if checkpoint is not None:
        head_weight = checkpoint.state_dict.get(f"{spec.head_path}.weight")
        if head_weight is None:
            raise WeightsError(f"checkpoint {checkpoint.origin} has no {spec.head_path}.weight: "
                               f"not a {spec.name} checkpoint")
        rows = int(head_weight.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(spec, num_classes=rows)
        if checkpoint is not None:
            load_into(model, checkpoint, spec)
        keep = checkpoint is not None and checkpoint.labels == labels
        if not keep:
            _replace_head(model, spec, len(labels))
    origin = RANDOM if checkpoint is None else checkpoint.origin
    log.info("%s: backbone from %s, head %s for %d classes", spec.name, origin,
             "kept" if keep else "new", len(labels))
    return model.train()


class TrainableNet:
    """Runs a zoo network for training (logits) and validation (probabilities).

    Args:
        model: a network from :func:`build_for_training`.
        spec: its spec (head path, family).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        torch = require("torch")
        self.model = model
        self.spec = spec
        self.head = model.get_submodule(spec.head_path)
        parent_path = spec.head_path.rpartition(".")[0]
        self._head_block = model.get_submodule(parent_path) if parent_path else model
        activation = getattr(self._head_block, "activation", None)
        self._softmax = activation if isinstance(activation, torch.nn.Softmax) else None

    def _run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.spec.family == "timesformer":
            return self.model(pixel_values=inputs[0].permute(0, 2, 1, 3, 4)).logits
        # pytorchvideo's SlowFast mutates the list it is given: always a fresh one.
        return self.model(list(inputs) if len(inputs) > 1 else inputs[0])

    def logits(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """``(B, num_classes)`` logits (averaged over positions for X3D)."""
        if self._softmax is None:
            return self._run(inputs)
        # torch types module attributes as Tensor | Module, but None empties a submodule slot.
        self._head_block.activation = None  # type: ignore[assignment]
        try:
            return self._run(inputs)
        finally:
            self._head_block.activation = self._softmax

    def scores(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """``(B, num_classes)`` probabilities exactly as inference computes them."""
        torch = require("torch")
        out = self._run(inputs)
        return out if self._softmax is not None else torch.softmax(out, dim=1)

    def freeze_backbone(self, frozen: bool) -> None:
        """Train only the head (``frozen``) or everything. A frozen backbone's batch norms
        stay in eval mode, so their running statistics are not changed either."""
        head_params = {id(p) for p in self.head.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(not frozen or id(p) in head_params)
        self.train_mode(frozen)

    def train_mode(self, backbone_frozen: bool = False) -> None:
        """Put the network in training mode (frozen backbone: only the head trains)."""
        self.model.train()
        if backbone_frozen:
            torch = require("torch")
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on weight matrices and kernels, none on biases and
        normalisation parameters (1-d tensors)."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def check_input(self, shapes: tuple[tuple[int, int, int, int], ...], device: str) -> None:
        """One forward on zeros of ``shapes`` (batch 1); a size the network cannot take
        (a crop too small for its pooling) becomes a ConfigError."""
        torch = require("torch")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                self.scores([torch.zeros((1, *s), device=device) for s in shapes])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{self.spec.name} cannot take inputs of shape "
                              f"{[list(s) for s in shapes]} ({first}); use a larger "
                              "--crop-size") from None
        finally:
            self.model.train(was_training)
