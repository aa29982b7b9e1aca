"""``load_model``: spec + weights + class map -> a ready network on a device."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamclf._lazy import require
from streamclf.errors import ConfigError, WeightsError
from streamclf.models.labels import ClassMap, load_classmap
from streamclf.models.network import build_network, resolve_device, wrap_network
from streamclf.models.registry import ModelSpec, get_spec
from streamclf.models.weights import Checkpoint, load_checkpoint, load_into

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoadedModel", "load_model"]

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference.

    Attributes:
        spec: the model spec, its ``labels`` replaced by the checkpoint's or class map's.
        net: ``forward(*pathways) -> (scores, features)`` (see :func:`wrap_network`), in
            eval mode on ``device``. Not thread-safe: run one forward at a time.
        device: the torch device string it lives on.
        weights: where the weights came from (URL, path, or ``"random"``).
    """

    spec: ModelSpec
    net: nn.Module
    device: str
    weights: str


def _head_rows(checkpoint: Checkpoint | None, spec: ModelSpec) -> int | None:
    if checkpoint is None:
        return None
    weight = checkpoint.state_dict.get(f"{spec.head_path}.weight")
    return int(weight.shape[0]) if weight is not None else None


def _choose_labels(
    spec: ModelSpec, checkpoint: Checkpoint | None, classmap: ClassMap | None
) -> tuple[str, ...]:
    rows = _head_rows(checkpoint, spec)
    if classmap is not None:
        labels = load_classmap(classmap)
        expected = rows if rows is not None else (
            len(checkpoint.labels) if checkpoint and checkpoint.labels else None
        )
        if expected is not None and len(labels) != expected:
            raise ConfigError(
                f"classmap has {len(labels)} classes but the checkpoint's head has {expected} "
                f"outputs ({spec.name})"
            )
        return labels
    if checkpoint is not None and checkpoint.labels:
        if rows is not None and rows != len(checkpoint.labels):
            raise WeightsError(
                f"checkpoint {checkpoint.origin}: sidecar lists {len(checkpoint.labels)} labels "
                f"but the head has {rows} outputs"
            )
        return checkpoint.labels
    if rows is not None and rows != spec.num_classes:
        raise ConfigError(
            f"checkpoint {checkpoint.origin if checkpoint else ''} has a {rows}-class head "
            f"for {spec.name}; pass --classmap with its {rows} class names"
        )
    return spec.labels


def load_model(
    model_name: str,
    weights: str | os.PathLike[str] = "kinetics400",
    classmap: ClassMap | None = None,
    device: str = "auto",
) -> LoadedModel:
    """Build ``model_name``, load ``weights``, move it to ``device``.

    Raises:
        ModelError: unknown model name.
        WeightsError: the checkpoint cannot be obtained or does not fit.
        ConfigError: bad device, or a class map whose size differs from the head.
    """
    spec = get_spec(model_name)
    target = resolve_device(device)
    checkpoint = load_checkpoint(spec, weights)
    labels = _choose_labels(spec, checkpoint, classmap)
    spec = dataclasses.replace(spec, labels=labels)
    if checkpoint is not None and checkpoint.input_size is not None:
        # Fine-tuned at another resolution: feed it frames of that size everywhere.
        side, crop = checkpoint.input_size
        spec = dataclasses.replace(spec, side_size=side, crop_size=crop)
    if checkpoint is None:
        # Random weights are seeded (without touching the caller's RNG), so smoke runs are
        # reproducible and exported/compiled artefacts of them can be cached.
        torch = require("torch")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = build_network(spec, num_classes=len(labels))
    else:
        model = build_network(spec, num_classes=len(labels))
        load_into(model, checkpoint, spec)
    net = wrap_network(model, spec).to(target)
    origin = "random" if checkpoint is None else checkpoint.origin
    log.info("loaded %s (%d classes) with weights %s on %s", spec.name, len(labels), origin, target)
    return LoadedModel(spec=spec, net=net, device=target, weights=origin)
