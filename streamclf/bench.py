"""Benchmarks anyone can rerun: model-only, the live pipeline, and a sequential baseline.

Each function times exactly what its name says:

* :func:`bench_model`: ``backend.infer`` on ready-made uint8 clips (normalisation included,
  decoding excluded), batch 1 and larger batches.
* :func:`bench_live`: the whole pipeline on a file replayed as a live 30 fps camera
  (``pace=realtime``), stride small enough that inference runs flat out: input fps held,
  clips/s, capture-to-label latency, drops, CPU and RSS.
* :func:`bench_fast`: the pipeline over a file as fast as the model consumes
  (``pace=fast``): clips/s with decoding, resizing and inference overlapped.
* :func:`bench_sequential`: the loop most tutorials use, on one thread: decode the next
  frames, transform them with torch ops, run the model, repeat; same file, model, stride.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends.base import InferenceBackend
from streamclf.errors import DataError, StreamclfError
from streamclf.live.pipeline import LivePipeline
from streamclf.media.sources import open_source
from streamclf.models.loader import LoadedModel
from streamclf.types import Event, EventType

__all__ = ["bench_fast", "bench_live", "bench_model", "bench_sequential", "make_test_clip"]


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_test_clip(src: Path, out: Path, fps: int = 30, height: int | None = None,
                   seconds: float | None = None) -> Path:
    """Re-encode ``src`` at exactly ``fps`` (optionally upscaled to ``height``) with ffmpeg.

    Raises:
        StreamclfError: ffmpeg is not installed. DataError: ffmpeg cannot re-encode ``src``.
    """
    if out.is_file():
        return out
    if shutil.which("ffmpeg") is None:
        raise StreamclfError("ffmpeg is needed to prepare the benchmark clip; install it "
                             "(e.g. apt-get install ffmpeg)")
    vf = [f"fps={fps}"] + ([f"scale=-2:{height}"] if height else [])
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-an", "-vf", ",".join(vf),
           "-c:v", "libx264", "-preset", "fast", "-pix_fmt", "yuv420p"]
    if seconds:
        cmd += ["-t", str(seconds)]
    done = subprocess.run([*cmd, str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        out.unlink(missing_ok=True)
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"{src}: ffmpeg cannot re-encode it for the benchmark ({reason})")
    return out


def bench_model(backend: InferenceBackend, model: LoadedModel, batch: int = 1,
                repeats: int = 10, warmup: int = 2) -> dict[str, Any]:
    """Median ms per ``infer`` call on a batch of random clips of the model's input size."""
    spec = model.spec
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (spec.num_frames, spec.crop_size, spec.crop_size, 3),
                          dtype=np.uint8) for _ in range(batch)]
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        backend.infer(clips)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return {"kind": "model", "model": spec.name, "backend": backend.name, "batch": batch,
            "ms_per_batch": round(ms, 2), "ms_per_clip": round(ms / batch, 2),
            "clips_per_s": round(batch * 1000 / ms, 3), "repeats": repeats}


class _Recorder:
    """An event sink collecting each prediction's latency and inference time."""

    def __init__(self) -> None:
        self.latency_ms: list[float] = []
        self.inference_ms: list[float] = []

    def __call__(self, event: Event) -> None:
        if event.type is EventType.PREDICTION:
            self.latency_ms.append(float(event.fields["latency_ms"]))
            self.inference_ms.append(float(event.fields["inference_ms"]))


def _pipeline(model: LoadedModel, backend: InferenceBackend, clip: Path, pace: str,
              stride: float, loop: bool, sinks: list[Any]) -> tuple[LivePipeline, float]:
    """One stream of ``clip`` through the live engine (the CLI's own path)."""
    config = RunConfig(model=model.spec.name, quiet=True, streams=[StreamConfig(
        id="bench", source=str(clip), pace=pace, loop=loop, stride=stride)])
    probe = open_source(str(clip))
    fps = probe.info.fps
    probe.close()
    return LivePipeline(config, sinks=sinks, backend=backend), fps


def bench_live(model: LoadedModel, backend: InferenceBackend, clip: Path, seconds: float = 30.0,
               stride: float = 1 / 30, warmup_s: float = 3.0) -> dict[str, Any]:
    """The pipeline on ``clip`` replayed as a live camera for ``seconds`` (after warm-up)."""
    rec = _Recorder()
    pipe, fps = _pipeline(model, backend, clip, "realtime", stride, loop=True, sinks=[rec])
    runner = pipe.stream("bench")
    rss: list[float] = []
    pipe.start()
    time.sleep(warmup_s)
    frames0, clips0, lat0 = runner.capture.frames_read, runner.slot.windows, len(rec.latency_ms)
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb())
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    frames, clips = runner.capture.frames_read - frames0, runner.slot.windows - clips0
    cpu = time.process_time() - cpu0
    pipe.stop()
    lat = np.asarray(rec.latency_ms[lat0:])
    inf = np.asarray(rec.inference_ms[lat0:])
    return {
        "kind": "live", "model": model.spec.name, "backend": backend.name, "clip": clip.name,
        "source_fps": fps, "seconds": round(elapsed, 1), "stride_s": stride,
        "input_fps": round(frames / elapsed, 2), "clips_per_s": round(clips / elapsed, 3),
        "latency_ms_p50": _pct(lat, 50), "latency_ms_p95": _pct(lat, 95),
        "latency_ms_p99": _pct(lat, 99), "inference_ms_median": _pct(inf, 50),
        "drops": runner.ring.drops, "skipped_windows": runner.scheduler.skipped,
        "cpu_percent": round(100 * cpu / elapsed, 1), "rss_mb_max": round(max(rss), 1),
    }


def bench_fast(model: LoadedModel, backend: InferenceBackend, clip: Path,
               stride: float) -> dict[str, Any]:
    """The pipeline over ``clip`` with ``pace=fast``: every due window, as fast as possible."""
    pipe, _ = _pipeline(model, backend, clip, "fast", stride, loop=False, sinks=[])
    t0 = time.perf_counter()
    result = pipe.run().streams["bench"]
    elapsed = time.perf_counter() - t0
    return {"kind": "fast", "model": model.spec.name, "backend": backend.name, "clip": clip.name,
            "stride_s": stride, "windows": result.windows, "seconds": round(elapsed, 2),
            "clips_per_s": round(result.windows / elapsed, 3)}


def bench_sequential(model: LoadedModel, clip: Path, stride: float) -> dict[str, Any]:
    """The tutorial loop on one thread: read frames; when a window is due, transform the
    window's raw frames with torch ops (uniform subsample, /255, normalise, short-side
    bilinear resize, centre crop, pathway packing), run the torch model, go on reading."""
    import cv2
    import torch

    spec = model.spec
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    buffer: deque[tuple[float, np.ndarray]] = deque()
    mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1, 1)
    next_due = spec.clip_duration_s - 1.0 / 30
    windows = 0
    t0 = time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        buffer.append((ts, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        while buffer and buffer[0][0] <= ts - spec.clip_duration_s:
            buffer.popleft()
        if ts + 1e-6 < next_due:
            continue
        next_due += stride
        frames = torch.from_numpy(np.stack([f for _, f in buffer])).permute(3, 0, 1, 2)
        idx = torch.linspace(0, frames.shape[1] - 1, spec.num_frames).long()
        x = frames.index_select(1, idx).float() / 255.0
        x = (x - mean) / std
        _, _, h, w = x.shape
        size = spec.side_size
        nh, nw = (math.floor(h / w * size), size) if w < h else (size, math.floor(w / h * size))
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear",
                                            align_corners=False)
        top, left = round((nh - spec.crop_size) / 2), round((nw - spec.crop_size) / 2)
        x = x[:, :, top:top + spec.crop_size, left:left + spec.crop_size]
        inputs = [x[None]]
        if spec.slowfast_alpha:
            t = x.shape[1]
            slow = x.index_select(1, torch.linspace(0, t - 1, t // spec.slowfast_alpha).long())
            inputs = [slow[None], x[None]]
        with torch.inference_mode():
            model.net(*inputs)
        windows += 1
    cap.release()
    elapsed = time.perf_counter() - t0
    return {"kind": "sequential", "model": spec.name, "backend": "torch (tutorial loop)",
            "clip": clip.name, "stride_s": stride, "windows": windows,
            "seconds": round(elapsed, 2), "clips_per_s": round(windows / elapsed, 3)}


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine and library versions, for the results' header."""
    from importlib.metadata import PackageNotFoundError, version

    from streamclf.engine.backends.factory import cpu_name

    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(),
                            "threads": threads, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                      time.gmtime())}
    for pkg in ("torch", "onnxruntime", "openvino", "opencv-python-headless"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def run_threads(n: int | None) -> None:
    """Pin torch's intra-op threads for a benchmark run."""
    if n:
        import torch

        torch.set_num_threads(n)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join("" if r.get(c) is None else str(r.get(c))
                                     for c in columns) + " |\n" for r in rows)
    return head + body




def run_suite(
    models: Sequence[str], backends: Sequence[str], clip: Path, work: Path,
    live_seconds: float = 20.0, threads: int | None = None, batches: Sequence[int] = (1, 4),
    parts: Sequence[str] = ("model", "fast", "live", "live720"),
) -> dict[str, Any]:
    """The whole benchmark: per model and backend (``name`` or ``name:precision``, e.g.
    ``openvino:int8``), model-only (batch 1 and best batch),
    pipeline ``fast`` vs the sequential baseline on the same clip and stride, and the live
    pipeline on the clip replayed at 30 fps, native and upscaled to 720p."""
    from streamclf.engine.backends.factory import create_backend
    from streamclf.models.loader import load_model

    run_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    clip30 = make_test_clip(clip, work / f"{clip.stem}-30fps.mp4")
    clip720 = make_test_clip(clip, work / f"{clip.stem}-30fps-720p.mp4", height=720)
    rows: list[dict[str, Any]] = []
    for name in models:
        model = load_model(name, "random", device="cpu")
        stride = 0.1
        if "fast" in parts:
            rows.append(bench_sequential(model, clip30, stride))
        for backend_spec in backends:
            backend_name, _, precision = backend_spec.partition(":")
            backend = create_backend(model, backend_name, precision or "fp32",
                                     threads=threads).backend
            if "model" in parts:
                repeats = 10 if model.spec.name.startswith("x3d") else 5
                rows.extend(bench_model(backend, model, batch=b, repeats=repeats)
                            for b in batches)
            if "fast" in parts:
                rows.append(bench_fast(model, backend, clip30, stride))
            if "live" in parts:
                rows.append(bench_live(model, backend, clip30, seconds=live_seconds))
            if "live720" in parts:
                rows.append(bench_live(model, backend, clip720, seconds=live_seconds))
    return {"machine": machine_info(threads), "rows": rows}
