"""The training recipe's settings, their checks, and the learning-rate schedule.

Pure functions and a frozen dataclass; thread-safe.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.errors import ConfigError

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec

__all__ = ["TrainConfig", "default_step_epochs", "default_workers", "input_spec", "lr_at"]

#: Smallest crop accepted (the networks downsample by 32).
MIN_CROP = 32


def default_workers() -> int:
    """Loader worker processes: all cores but one for the training itself, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def default_step_epochs(epochs: int) -> tuple[int, ...]:
    """Where the learning rate drops x0.1 by default: at 70 % and 90 % of the run."""
    return tuple(sorted({e for e in (round(epochs * 0.7), round(epochs * 0.9)) if 0 < e < epochs}))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides the data.

    Attributes:
        model: zoo model name.
        weights: where the backbone comes from: ``kinetics400``, ``random`` or a path.
        out: folder for checkpoints and metrics.
        epochs: passes over the training clips (one random clip per video per pass).
        batch_size: clips per optimizer step.
        lr: AdamW's peak learning rate (reached after the warmup).
        weight_decay: AdamW's decoupled weight decay (not applied to biases and norms).
        warmup_epochs: epochs of linear warmup from ~0 to ``lr`` (may be fractional).
        step_epochs: epochs at whose start the learning rate is multiplied by 0.1
            (``None``: :func:`default_step_epochs`).
        freeze_backbone_epochs: first epochs that train only the new head.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        seed: seeds every random choice (init, clip choice, augmentation, order, dropout).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: loader worker processes (0: load in the training process).
        crop_size: train and validate at this crop (the short side scaled alike) instead
            of the model's; recorded in the sidecar so inference uses it too.
        amp: mixed precision (float16 autocast + gradient scaling) when on CUDA.
        precise_bn: training batches used to re-estimate batch-norm statistics before
            each validation and save (0: keep the running averages; see
            :func:`streamclf.train.loop.precise_bn`).
        resume: continue the run saved in ``out``.
    """

    model: str
    out: Path
    weights: str = "kinetics400"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    step_epochs: tuple[int, ...] | None = None
    freeze_backbone_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    workers: int = dataclasses.field(default_factory=default_workers)
    crop_size: int | None = None
    amp: bool = True
    precise_bn: int = 20
    resume: bool = False

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "--epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "--batch-size", self.batch_size, "an integer >= 1")
        _check(math.isfinite(self.lr) and self.lr > 0, "--lr", self.lr, "a number > 0")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "--weight-decay",
               self.weight_decay, "a number >= 0")
        _check(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
               "--warmup-epochs", self.warmup_epochs, "a number >= 0")
        _check(0 <= self.freeze_backbone_epochs <= self.epochs, "--freeze-backbone-epochs",
               self.freeze_backbone_epochs, f"an integer in [0, --epochs={self.epochs}]")
        _check(0 <= self.label_smoothing < 1, "--label-smoothing", self.label_smoothing,
               "a number in [0, 1)")
        _check(self.workers >= 0, "--workers", self.workers, "an integer >= 0")
        _check(self.precise_bn >= 0, "--precise-bn", self.precise_bn, "an integer >= 0")
        if self.crop_size is not None:
            _check(self.crop_size >= MIN_CROP, "--crop-size", self.crop_size,
                   f"an integer >= {MIN_CROP}")
        if self.step_epochs is not None:
            steps = self.step_epochs
            ok = all(e >= 1 for e in steps) and all(a < b for a, b in itertools.pairwise(steps))
            _check(ok, "--step-epochs", " ".join(map(str, steps)),
                   "increasing epoch numbers >= 1")

    @property
    def decay_epochs(self) -> tuple[int, ...]:
        return self.step_epochs if self.step_epochs is not None else (
            default_step_epochs(self.epochs))

    def recipe(self) -> dict[str, Any]:
        """The settings that shape the result, as plain JSON values (for the sidecar)."""
        keys = ("weights", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
                "freeze_backbone_epochs", "label_smoothing", "seed", "crop_size", "precise_bn")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["step_epochs"] = list(self.decay_epochs)
        return out


def _check(ok: bool, flag: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{flag} must be {allowed}, got {value}")


def lr_at(
    step: int, steps_per_epoch: int, base_lr: float, warmup_epochs: float,
    step_epochs: tuple[int, ...],
) -> float:
    """Learning rate of optimizer step ``step`` (0-based, counted over the whole run).

    Linear warmup over the first ``warmup_epochs * steps_per_epoch`` steps (step ``i``
    gets ``(i + 1) / warmup_steps`` of the rate), then x0.1 at the start of each epoch in
    ``step_epochs`` (epochs counted from 0, so ``step_epochs=(5,)`` lowers the rate for
    the sixth epoch on).
    """
    if steps_per_epoch < 1:
        raise ConfigError("steps_per_epoch must be >= 1")
    epoch = step // steps_per_epoch
    rate = base_lr * 0.1 ** sum(1 for e in step_epochs if epoch >= e)
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        rate *= (step + 1) / warmup_steps
    return rate


def input_spec(spec: ModelSpec, crop_size: int | None) -> ModelSpec:
    """``spec`` with its crop set to ``crop_size`` and its short side scaled alike
    (``side * crop_size / crop``); ``spec`` itself when ``crop_size`` is ``None``."""
    if crop_size is None or crop_size == spec.crop_size:
        return spec
    side = max(crop_size, round(spec.side_size * crop_size / spec.crop_size))
    return dataclasses.replace(spec, side_size=side, crop_size=crop_size)
