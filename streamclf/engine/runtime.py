"""Process-wide settings for a streaming process: how many inference threads, and how often
the interpreter hands the GIL between threads. Called by the pipelines' builders."""

from __future__ import annotations

import os
import sys

__all__ = ["TORCH_SWITCH_INTERVAL_S", "default_inference_threads", "tune_switch_interval"]


#: Thread switch interval for a process streaming through the torch backend (CPython's
#: default is 5 ms). torch runs a clip as hundreds of small ops holding the GIL, which the
#: capture threads also need for every frame; at 5 ms each hand-over waits out the interval.
#: Measured on 2 cores, x3d_xs, 4 live 30 fps streams (benchmarks/bench_streams.py): 2.4
#: clips/s at 104 % CPU with 5 ms, 8.1 with 0.5 ms. OpenVINO and ONNX Runtime release the GIL
#: for a whole clip, so their processes keep the default.
TORCH_SWITCH_INTERVAL_S = 0.0005
_DEFAULT_SWITCH_INTERVAL_S = sys.getswitchinterval()


def tune_switch_interval(backend_name: str) -> None:
    """Set the interpreter's thread switch interval for a streaming process on
    ``backend_name`` (process-wide; called by the one model loader,
    :func:`streamclf.engine.load.load_backend`)."""
    sys.setswitchinterval(TORCH_SWITCH_INTERVAL_S if backend_name == "torch"
                          else _DEFAULT_SWITCH_INTERVAL_S)


def default_inference_threads() -> int:
    """Inference threads when the config names none: every core but one, which is left to
    capture, decoding and resizing. Measured on 2 cores (x3d_xs, 30 fps): 1 inference
    thread gives torch 11.6 clips/s in the pipeline against 6.8 with 2 (OpenMP threads
    fighting the capture thread), and OpenVINO 27.8 live clips/s against 21.4."""
    return max(1, (os.cpu_count() or 2) - 1)
