"""One epoch of training, validation, and batch-norm re-estimation.

These functions run on the calling thread and drive a torch ``DataLoader`` whose workers
decode and augment the clips; they are not thread-safe (one network, one optimizer).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from streamclf._lazy import require
from streamclf.errors import DataError, ModelError
from streamclf.progress import Progress
from streamclf.train.dataset import Batch, ClipDataset, collate, worker_init

if TYPE_CHECKING:
    import torch

    from streamclf.train.model import TrainableNet

__all__ = ["Failures", "Precision", "epoch_progress", "epoch_seed", "make_loader", "precise_bn",
           "show_batch", "train_epoch", "validate", "worker_context"]

log = logging.getLogger(__name__)

#: Longest a loader worker may take to deliver one batch (a stuck decoder is an error).
LOADER_TIMEOUT_S = 300.0


def epoch_progress(
    epoch: int, epochs: int, batches: int, stream: TextIO | None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """The progress line of one training epoch (``epoch`` 1-based), e.g.
    ``epoch 2/10  loss 0.8123  12/40 batches  0.3 batches/s  ETA 1:27``; redrawn in place on
    a terminal, a plain line every 30 s (and at the end) elsewhere; ``stream=None``: silent.
    """
    return Progress(batches, stream, unit="batches", prefix=f"epoch {epoch}/{epochs}  ",
                    clock=clock, line_every_s=30.0)


def show_batch(bar: Progress, label: str, done: int, loss: float) -> None:
    """Record ``done`` batches of the epoch and their running mean ``loss`` on ``bar``;
    ``label`` is the bar's original prefix (``"epoch 2/10  "``), the loss goes after it."""
    bar.prefix = f"{label}loss {loss:.4f}  "
    bar.update(done)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for one purpose (``stream``) of one epoch of a run."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@dataclass
class Failures:
    """Clips that could not be read, reported once per source."""

    seen: set[str] = field(default_factory=set)
    count: int = 0

    def add(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.count += 1
            if message not in self.seen:
                self.seen.add(message)
                log.warning("skipped a clip: %s", message)


@dataclass(frozen=True)
class Precision:
    """Mixed precision: float16 autocast and gradient scaling on CUDA, off elsewhere."""

    device: str
    enabled: bool

    def autocast(self) -> Any:
        torch = require("torch")
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=kind, dtype=torch.float16, enabled=self.enabled)

    def scaler(self) -> Any:
        torch = require("torch")
        return torch.amp.GradScaler("cuda", enabled=self.enabled)


def make_loader(
    dataset: ClipDataset, batch_size: int, order: list[int], workers: int, drop_last: bool,
    device: str, seed: int,
) -> Any:
    """A ``DataLoader`` over ``dataset`` in the given ``order``."""
    torch = require("torch")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=order, num_workers=workers,
        collate_fn=collate, drop_last=drop_last, pin_memory=device.startswith("cuda"),
        worker_init_fn=worker_init if workers else None,
        generator=torch.Generator().manual_seed(seed),
        timeout=LOADER_TIMEOUT_S if workers else 0,
        multiprocessing_context=worker_context() if workers else None,
        persistent_workers=False,
    )


def worker_context() -> Any:
    """How loader workers start: never by a plain ``fork`` of this process.

    A fork copies a process whose other threads (torch's OpenMP pool, OpenVINO's TBB, a web
    server, Ray's gRPC) may hold locks that then stay locked for ever in the child: a hang or
    a crash. A fork server is a fresh single-threaded process that imports torch, OpenCV and
    the dataset code once and forks each worker from there, so a worker starts clean and in
    milliseconds rather than the seconds a spawned interpreter takes to import torch again.
    Falls back to ``spawn`` where there is no fork server (Windows).
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "cv2", "streamclf.train.dataset"])
    return context


def _to(batch: Batch, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    blocking = not device.startswith("cuda")
    inputs = [x.to(device, non_blocking=not blocking) for x in batch.inputs]
    return inputs, batch.labels.to(device, non_blocking=not blocking)


def train_epoch(
    net: TrainableNet,
    loader: Any,
    optimizer: Any,
    scaler: Any,
    precision: Precision,
    lr_of_batch: Callable[[int], float],
    label_smoothing: float,
    bar: Progress,
    failures: Failures,
) -> tuple[float, int]:
    """One pass over ``loader``: returns ``(mean training loss, optimizer steps taken)``.

    ``lr_of_batch(i)`` gives the learning rate of the epoch's ``i``-th batch; ``bar`` (from
    :func:`epoch_progress`) shows the batches done and the running mean loss, and is closed
    at the end of the pass.

    Raises:
        ModelError: the loss became NaN or infinite (without gradient scaling to absorb it).
        DataError: no clip of the epoch could be read.
    """
    torch = require("torch")
    label = bar.prefix
    loss_sum, seen, steps = 0.0, 0, 0
    for i, batch in enumerate(loader):
        failures.add(batch.failed)
        if batch.size == 0:
            continue
        lr = lr_of_batch(i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, labels = _to(batch, precision.device)
        with precision.autocast():
            logits = net.logits(inputs)
        loss = torch.nn.functional.cross_entropy(
            logits.float(), labels, label_smoothing=label_smoothing)
        value = float(loss.detach())
        if not math.isfinite(value) and not precision.enabled:
            raise ModelError(f"training diverged: loss {value} at batch {i + 1}; "
                             "lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        steps += 1
        loss_sum += value * batch.size
        seen += batch.size
        show_batch(bar, label, i + 1, loss_sum / seen)
    bar.close()
    if seen == 0:
        raise DataError("no training clip of the epoch could be read (see the warnings above)")
    return loss_sum / seen, steps


def validate(
    net: TrainableNet, loader: Any, precision: Precision, topk: int, failures: Failures
) -> tuple[float, float, int, float]:
    """Top-1 and top-``topk`` accuracy and the mean cross-entropy over ``loader``
    (probabilities computed as at inference; the loss is ``-log p(true class)``, without
    label smoothing); returns ``(top1, topk_accuracy, clips, loss)``."""
    torch = require("torch")
    net.model.eval()
    hit1 = hitk = total = 0
    nll = 0.0
    with torch.inference_mode():
        for batch in loader:
            failures.add(batch.failed)
            if batch.size == 0:
                continue
            inputs, labels = _to(batch, precision.device)
            with precision.autocast():
                scores = net.scores(inputs)
            probs = scores.float()
            top = probs.topk(topk, dim=1).indices
            true_p = probs.gather(1, labels[:, None]).clamp_min(1e-12)
            nll += float(-torch.log(true_p).sum())
            hit1 += int((top[:, 0] == labels).sum())
            hitk += int((top == labels[:, None]).any(dim=1).sum())
            total += batch.size
    if total == 0:
        raise DataError("no validation clip could be read (see the warnings above)")
    return hit1 / total, hitk / total, total, nll / total


def precise_bn(
    net: TrainableNet, loader: Any, batches: int, precision: Precision, failures: Failures
) -> int:
    """Re-estimate every batch norm's running statistics as the plain average over
    ``batches`` training batches under the current weights (PySlowFast's "precise BN"):
    the exponential running averages lag behind weights that changed fast. Returns the
    batches used; the network is left in eval mode."""
    torch = require("torch")
    norms = [m for m in net.model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    net.model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in loader:
                failures.add(batch.failed)
                if batch.size == 0:
                    continue
                inputs, _ = _to(batch, precision.device)
                with precision.autocast():
                    net.scores(inputs)
                used += 1
                if used >= batches:
                    break
    finally:
        for m, (momentum, buffers) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if used == 0:  # nothing measured (or interrupted): keep the old statistics
                m.load_state_dict(buffers)
        net.model.eval()
    return used
