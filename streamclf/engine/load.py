"""The one way a run loads its model: settings -> network -> the chosen backend.

Used by every live run (:class:`~streamclf.live.pipeline.LivePipeline`) and by a
cluster's model actors, so both pick threads, backend and precision the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamclf.engine.runtime import default_inference_threads, tune_switch_interval

if TYPE_CHECKING:
    from streamclf.config import RunConfig
    from streamclf.engine.backends.base import InferenceBackend
    from streamclf.models.registry import ModelSpec

__all__ = ["LoadedBackend", "load_backend"]


@dataclass(frozen=True)
class LoadedBackend:
    """A ready backend, with what was chosen: ``reason`` says why this backend (e.g.
    ``"openvino (fastest measured here)"``), ``device`` where the network lives."""

    spec: ModelSpec
    backend: InferenceBackend
    reason: str
    device: str
    threads: int


def load_backend(config: RunConfig, threads: int | None = None) -> LoadedBackend:
    """Load ``config``'s model and weights and build its backend.

    Args:
        config: ``model``, ``weights``, ``classmap``, ``device``, ``backend``,
            ``precision``, ``threads``, ``torch_compile``.
        threads: inference threads when the config names none (default: every core but
            one). Sets torch's process-wide thread count and the interpreter's switch
            interval for this backend.

    Raises:
        ModelError / WeightsError: unknown model, missing or wrong weights, bad device.
    """
    import torch

    from streamclf.engine.backends.factory import create_backend
    from streamclf.models.loader import load_model

    n = config.threads or threads or default_inference_threads()
    torch.set_num_threads(n)
    model = load_model(config.model, config.weights, config.classmap, config.device)
    choice = create_backend(model, config.backend, config.precision, n,
                            torch_compile=config.torch_compile)
    tune_switch_interval(choice.backend.name)
    return LoadedBackend(model.spec, choice.backend, choice.reason, str(model.device), n)
