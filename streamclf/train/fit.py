"""``fit``: a whole training run, from data and settings to checkpoints in ``--out``.

Per epoch: train on one random clip per video, (optionally) re-estimate batch-norm
statistics, validate on the centred clips, save ``last.*`` (and ``best.*`` when the
validation top-1 improves; ties go to the lower loss), append ``metrics.jsonl``, rewrite
``history.csv`` and ``curves.png`` from the whole history, report one line.
Determinism: with the same seed, device and thread count, a run and a run interrupted and
``--resume``-d give the same weights (per-epoch seeds, per-sample generators, the
optimizer state saved each epoch).

Runs on the calling thread; not thread-safe.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from streamclf import __version__
from streamclf._lazy import require
from streamclf.errors import ConfigError, StreamclfError
from streamclf.files import write_atomic
from streamclf.models.network import resolve_device
from streamclf.models.registry import get_spec
from streamclf.models.weights import read_sidecar
from streamclf.train import checkpoint as ckpt
from streamclf.train.augment import TrainTransform, ValTransform
from streamclf.train.dataset import ClipDataset
from streamclf.train.loop import (
    Failures,
    Precision,
    epoch_progress,
    epoch_seed,
    make_loader,
    precise_bn,
    train_epoch,
    validate,
)
from streamclf.train.model import TrainableNet, build_for_training
from streamclf.train.recipe import TrainConfig, input_spec, lr_at

if TYPE_CHECKING:
    from streamclf.models.registry import ModelSpec
    from streamclf.train.data import TrainData

__all__ = ["HISTORY_HEADER", "EpochResult", "FitResult", "fit", "sidecar", "write_history"]

log = logging.getLogger(__name__)

_ORDER, _TORCH, _LOADER, _BN = 1, 2, 3, 4  # seed streams

#: The columns of ``OUT/history.csv``, one row per epoch (an empty cell: no value).
HISTORY_HEADER = ("epoch", "train_loss", "val_loss", "val_top1", "lr")
HISTORY_FILE, CURVES_FILE = "history.csv", "curves.png"


@dataclass(frozen=True)
class EpochResult:
    """One epoch's numbers (``epoch`` is 1-based; ``seconds`` covers train + validation)."""

    epoch: int
    train_loss: float
    val_top1: float
    val_topk: float
    topk: int
    lr: float
    steps: int
    seconds: float
    best: bool
    val_loss: float | None = None  # mean validation cross-entropy (None: older runs)


@dataclass(frozen=True)
class FitResult:
    """What a run produced: checkpoint paths, the best epoch, totals."""

    best: Path
    last: Path
    best_top1: float
    best_epoch: int
    steps: int
    seconds: float
    history: list[EpochResult] = field(default_factory=list)


def sidecar(spec: ModelSpec, labels: tuple[str, ...], config: TrainConfig,
            metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``.json`` beside a checkpoint: what :mod:`streamclf.models.weights` reads
    (``model``, ``labels``, ``input``) plus the metrics and the recipe."""
    return {
        "model": spec.name,
        "labels": list(labels),
        "input": {
            "num_frames": spec.num_frames, "sampling_rate": spec.sampling_rate,
            "clip_seconds": round(spec.clip_duration_s, 6), "side_size": spec.side_size,
            "crop_size": spec.crop_size, "mean": list(spec.mean), "std": list(spec.std),
            "slowfast_alpha": spec.slowfast_alpha,
        },
        "metrics": metrics,
        "recipe": config.recipe(),
        "streamclf_version": __version__,
    }


def _prepare_out(config: TrainConfig, spec: ModelSpec, labels: tuple[str, ...]) -> dict | None:
    """Check ``out`` for this run; the saved state when resuming."""
    out = config.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if not config.resume:
        if (out / ckpt.STATE_FILE).exists() or (out / "best.safetensors").exists():
            raise ConfigError(f"{out} already holds a training run; use --resume to continue "
                              "it or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        return None
    state = ckpt.load_state(out)
    meta = read_sidecar(out / "last.safetensors")
    if meta.get("model") != spec.name:
        raise ConfigError(f"{out} holds a {meta.get('model')!r} run, not {spec.name!r}")
    if tuple(meta.get("labels") or ()) != labels:
        raise ConfigError(f"{out} was trained on other classes than this dataset's")
    if (meta.get("input") or {}).get("crop_size") != spec.crop_size:
        raise ConfigError(f"{out} was trained at crop {(meta.get('input') or {}).get('crop_size')}"
                          f", not {spec.crop_size}: pass the same --crop-size")
    if state["batch_size"] != config.batch_size:
        raise ConfigError(f"{out} was trained with --batch-size {state['batch_size']}; "
                          "resume with the same")
    if state["epoch"] >= config.epochs:
        raise ConfigError(f"{out} already has {state['epoch']} epochs; raise --epochs to "
                          "train further")
    return state


def fit(
    config: TrainConfig,
    data: TrainData,
    report: Callable[[str], None] = print,
    bar_stream: TextIO | None = None,
) -> FitResult:
    """Train ``config.model`` on ``data``; checkpoints go to ``config.out``.

    Args:
        report: receives one summary line per epoch.
        bar_stream: where the per-epoch progress bar goes (``None``: no bar).

    Raises:
        ConfigError, ModelError, WeightsError, DataError: bad settings, unusable weights or
            device, unreadable data.
    """
    torch = require("torch")
    started = time.monotonic()
    spec = input_spec(get_spec(config.model), config.crop_size)
    device = resolve_device(config.device)
    state = _prepare_out(config, spec, data.labels)
    weights = str(config.out / "last.safetensors") if state else config.weights
    model = build_for_training(spec, weights, data.labels, config.seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model.to(device)
    net = TrainableNet(model, spec)
    net.check_input(spec.input_shapes, device)
    precision = Precision(device, config.amp and device.startswith("cuda"))
    optimizer = torch.optim.AdamW(net.param_groups(config.weight_decay), lr=config.lr)
    scaler = precision.scaler()
    history: list[EpochResult] = []
    start_epoch, steps, best_top1, best_loss, best_epoch = 0, 0, -1.0, float("inf"), 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, steps = int(state["epoch"]), int(state["steps"])
        best_top1, best_loss = float(state["best_top1"]), float(state["best_loss"])
        best_epoch = int(state["best_epoch"])
        history = [EpochResult(**h) for h in state["history"]]
        log.info("resuming %s at epoch %d", config.out, start_epoch + 1)

    train_tf = TrainTransform(spec.num_frames, spec.crop_size, spec.mean, spec.std,
                              spec.slowfast_alpha)
    train_ds = ClipDataset(data.train, train_tf, spec.clip_duration_s, config.seed, True)
    val_ds = ClipDataset(data.val, ValTransform(spec), spec.clip_duration_s, config.seed, False)
    n_train = len(train_ds)
    drop_last = n_train > config.batch_size
    per_epoch = n_train // config.batch_size if drop_last else 1
    topk = min(5, len(data.labels))
    failures = Failures()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.monotonic()
        frozen = epoch < config.freeze_backbone_epochs
        net.freeze_backbone(frozen)
        torch.manual_seed(epoch_seed(config.seed, epoch, _TORCH))
        train_ds.epoch = epoch
        order = np.random.default_rng(epoch_seed(config.seed, epoch, _ORDER)).permutation(n_train)
        loader = make_loader(train_ds, config.batch_size, order.tolist(), config.workers,
                             drop_last, device, epoch_seed(config.seed, epoch, _LOADER))
        bar = epoch_progress(epoch + 1, config.epochs, per_epoch, bar_stream)

        def lr_of_batch(i: int, epoch: int = epoch) -> float:
            return lr_at(epoch * per_epoch + i, per_epoch, config.lr, config.warmup_epochs,
                         config.decay_epochs)

        loss, taken = train_epoch(net, loader, optimizer, scaler, precision, lr_of_batch,
                                  config.label_smoothing, bar, failures)
        steps += taken
        if config.precise_bn and not frozen:
            bn_order = np.random.default_rng(epoch_seed(config.seed, epoch, _BN)).permutation(
                n_train)
            precise_bn(net, make_loader(train_ds, config.batch_size, bn_order.tolist(),
                                        config.workers, drop_last, device,
                                        epoch_seed(config.seed, epoch, _BN)),
                       config.precise_bn, precision, failures)
        val_loader = make_loader(val_ds, config.batch_size, list(range(len(val_ds))),
                                 config.workers, False, device, 0)
        top1, topk_acc, _, val_loss = validate(net, val_loader, precision, topk, failures)
        improved = top1 > best_top1 or (top1 == best_top1 and loss < best_loss)
        if improved:
            best_top1, best_loss, best_epoch = top1, loss, epoch + 1
        result = EpochResult(epoch + 1, round(loss, 6), round(top1, 6), round(topk_acc, 6),
                             topk, lr_of_batch(per_epoch - 1), steps,
                             round(time.monotonic() - t0, 3), improved, round(val_loss, 6))
        history.append(result)
        _save_epoch(config, spec, data.labels, net, optimizer, scaler, result, history,
                    (best_top1, best_loss, best_epoch))
        report(_epoch_line(result, config.epochs))
    if failures.count:
        log.warning("%d clip reads failed during training (each source is named above)",
                    failures.count)
    result_paths = FitResult(best=config.out / "best.safetensors",
                             last=config.out / "last.safetensors", best_top1=best_top1,
                             best_epoch=best_epoch, steps=steps,
                             seconds=round(time.monotonic() - started, 3), history=history)
    if data.predict:
        _predict(data.predict, result_paths.best, config, device)
    return result_paths


def _epoch_metrics(result: EpochResult) -> dict[str, Any]:
    return {"epoch": result.epoch, "train_loss": result.train_loss, "val_top1": result.val_top1,
            f"val_top{result.topk}": result.val_topk, "steps": result.steps,
            "seconds": result.seconds}


def _save_epoch(
    config: TrainConfig, spec: ModelSpec, labels: tuple[str, ...], net: TrainableNet,
    optimizer: Any, scaler: Any, result: EpochResult, history: list[EpochResult],
    best: tuple[float, float, int],
) -> None:
    out = config.out
    meta = sidecar(spec, labels, config, _epoch_metrics(result))
    if result.best:
        ckpt.save_model(out, "best", net.model, meta)
    ckpt.save_model(out, "last", net.model, meta)
    ckpt.save_state(out, {
        "epoch": result.epoch, "steps": result.steps, "batch_size": config.batch_size,
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "best_top1": best[0], "best_loss": best[1], "best_epoch": best[2],
        "history": [asdict(h) for h in history],
    })
    ckpt.append_metrics(out, {**_epoch_metrics(result), "lr": result.lr, "best": result.best})
    write_history(out, history)


def write_history(out: Path, history: Sequence[EpochResult]) -> None:
    """Rewrite ``out/history.csv`` (:data:`HISTORY_HEADER`; ``lr`` is the rate of the
    epoch's last step; ``val_loss`` is empty for epochs of runs saved before it was kept) and
    ``out/curves.png`` (:func:`~streamclf.analysis.plots.training_curves_png`) from the
    whole ``history``, each atomically. A plot that cannot be drawn is logged, not raised.
    """
    rows: list[dict[str, Any]] = [
        {"epoch": h.epoch, "train_loss": h.train_loss, "val_loss": h.val_loss,
         "val_top1": h.val_top1, "lr": h.lr} for h in history]

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_HEADER)
    writer.writerows(["" if r[k] is None else r[k] for k in HISTORY_HEADER] for r in rows)
    write_atomic(out / HISTORY_FILE, buf.getvalue())
    try:
        from streamclf.analysis.plots import training_curves_png

        png = training_curves_png(rows)
        write_atomic(out / CURVES_FILE, png)
    except Exception as exc:  # exception-safe: a plot must not end a training run
        log.warning("could not draw %s: %s: %s", out / CURVES_FILE, type(exc).__name__, exc)


def _epoch_line(r: EpochResult, epochs: int) -> str:
    mark = "  (best, saved)" if r.best else ""
    val_loss = "" if r.val_loss is None else f"  val loss {r.val_loss:.4f}"
    return (f"epoch {r.epoch}/{epochs}  train loss {r.train_loss:.4f}{val_loss}  val top-1 "
            f"{r.val_top1:.3f}  top-{r.topk} {r.val_topk:.3f}  lr {r.lr:.2e}  "
            f"{r.seconds:.1f} s{mark}")


def _predict(paths: tuple[Path, ...], weights: Path, config: TrainConfig, device: str) -> None:
    """Classify the dataset's ``predict/`` clips with the best checkpoint, through the same
    code as ``streamclf classify``; writes ``OUT/predictions.csv``."""
    from streamclf.offline.classify import ActionClassifier

    clf = ActionClassifier(config.model, str(weights), topk=1, device=device)
    target = config.out / "predictions.csv"
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "score", "error"])
        for path in paths:
            try:
                res = clf.classify_file(path)
                writer.writerow([str(path), res.labels[0], f"{res.scores[0]:.6f}", ""])
            except StreamclfError as exc:  # one bad clip is a row, not the end
                writer.writerow([str(path), "", "", str(exc)])
    log.info("predictions for %d clips in %s", len(paths), target)
