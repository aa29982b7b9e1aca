"""Labels/s, drops and latency against the number of live cameras.

    .venv/bin/python benchmarks/bench_streams.py --height 720 --stride 0.25 \
        --streams 1 2 4 8 12 16 --max-batch 1 --backends auto

Each stream replays a real clip (re-encoded at exactly 30 fps, upscaled to ``--height``) as a
live camera (``pace: realtime``, ``loop``) with a stride of ``--stride`` seconds (default: one
frame, so that every stream alone would keep the model busy). For each stream count, the run
is done with the shared worker batching (``max_batch`` = the stream count, ``max_wait_ms``
10) and one window at a time (``max_batch`` 1), or only the ``--max-batch`` modes asked for.
Reported per run: total and per-camera labels/s (min and max: fairness), capture-to-label
latency p50/p95 over every stream, input fps per stream (min), drops, process CPU %, RSS and
the frame rings' bytes (every camera's ring summed: mean and peak). One JSON file + a
markdown table under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamclf.bench import _rss_mb, machine_info, make_test_clip, markdown_table
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends.factory import create_backend
from streamclf.engine.runtime import TORCH_SWITCH_INTERVAL_S, tune_switch_interval
from streamclf.live.pipeline import LivePipeline
from streamclf.models import load_model
from streamclf.types import Event, EventType

HERE = Path(__file__).resolve().parent
CLIP = HERE.parent.parent / "shared" / "data" / "videos" / "VideoQA-NTO__eating_spaghetti.mp4"


def run_streams(model: Any, backend: Any, clip: Path, n: int, max_batch: int, seconds: float,
                warmup_s: float = 4.0, stride: float = 1 / 30) -> dict[str, Any]:
    latencies: list[float] = []

    def record(event: Event) -> None:
        if event.type is EventType.PREDICTION:
            latencies.append(float(event.fields["latency_ms"]))

    config = RunConfig(model=model.spec.name, quiet=True, max_batch=max_batch, max_wait_ms=10.0,
                       streams=[StreamConfig(id=f"s{i}", source=str(clip), loop=True,
                                             pace="realtime", stride=stride)
                                for i in range(n)])
    multi = LivePipeline(config, sinks=[record], backend=backend)
    multi.start()
    time.sleep(warmup_s)
    pipes = [multi.stream(sid) for sid in multi.stream_ids]
    frames0 = [p.capture.frames_read for p in pipes]
    clips0 = [p.slot.windows for p in pipes]
    lat0, calls0 = len(latencies), multi.worker.batches
    cpu0, t0 = time.process_time(), time.monotonic()
    rss, ring = [], []
    drops0 = sum(p.ring.drops for p in pipes)
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb())
        ring.append(sum(_ring_bytes(p.ring) for p in pipes) / 2**20)
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    per_stream = [(p.slot.windows - c) / elapsed for p, c in zip(pipes, clips0, strict=True)]
    fps = [(p.capture.frames_read - f) / elapsed for p, f in zip(pipes, frames0, strict=True)]
    cpu = time.process_time() - cpu0
    calls = multi.worker.batches - calls0
    drops = sum(p.ring.drops for p in pipes) - drops0
    peak = sum(getattr(p.ring, "peak_bytes", 0) for p in pipes) / 2**20
    multi.stop()
    lat = np.asarray(latencies[lat0:])
    total = sum(per_stream)
    return {
        "streams": n, "max_batch": max_batch, "backend": backend.name,
        "clips_per_s": round(total, 2),
        "per_stream_min": round(min(per_stream), 2), "per_stream_max": round(max(per_stream), 2),
        "mean_batch": round(total * elapsed / calls, 2) if calls else None,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "input_fps_min": round(min(fps), 2), "drops": drops,
        "cpu_percent": round(100 * cpu / elapsed, 1), "rss_mb_max": round(max(rss), 1),
        "ring_mb_mean": round(float(np.mean(ring)), 1), "ring_mb_peak": round(peak, 1),
        "stride_s": round(stride, 4),
    }


def _ring_bytes(ring: Any) -> int:
    """A ring's bytes: ``nbytes`` where it has one, else its preallocated image array."""
    held = getattr(ring, "nbytes", None)
    return int(held) if held is not None else int(ring._images.nbytes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="x3d_xs")
    p.add_argument("--backends", nargs="+", default=["openvino"])
    p.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--height", type=int, default=None, help="upscale the clip to this height")
    p.add_argument("--stride", type=float, default=1 / 30, help="seconds between windows")
    p.add_argument("--max-batch", nargs="+", choices=("1", "n"), default=["n", "1"],
                   help="modes: one window at a time (1) and/or a batch of every stream (n)")
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--label", default="", help="a name for this run (e.g. before)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--switch-interval-ms", type=float, default=None,
                   help="the interpreter's thread switch interval (default: what the "
                   f"pipeline sets: {TORCH_SWITCH_INTERVAL_S * 1000:g} for torch, CPython's "
                   "5 otherwise)")
    args = p.parse_args()
    work = HERE / "results" / "clips"
    work.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.height}p" if args.height else ""
    clip = make_test_clip(args.clip, work / f"{args.clip.stem}-30fps{suffix}.mp4",
                          height=args.height)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "random", device="cpu")
    rows = []
    for name in args.backends:
        backend_name, _, precision = name.partition(":")
        backend = create_backend(model, backend_name, precision or "fp32",
                                 threads=args.threads).backend
        tune_switch_interval(backend.name)
        if args.switch_interval_ms is not None:
            sys.setswitchinterval(args.switch_interval_ms / 1000)
        base = None
        for n in args.streams:
            modes = {n if m == "n" else 1 for m in args.max_batch}
            for max_batch in sorted(modes, reverse=True):
                row = run_streams(model, backend, clip, n, max_batch, args.seconds,
                                  args.warmup, args.stride)
                row["backend"] = name
                if n == 1:
                    base = row["clips_per_s"]
                row["vs_one_stream"] = round(row["clips_per_s"] / base, 2) if base else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"machine": machine_info(args.threads), "model": args.model, "clip": clip.name,
              "label": args.label, "height": args.height, "stride_s": args.stride,
              "seconds": args.seconds, "switch_interval_ms": args.switch_interval_ms,
              "rows": rows}  # None: the pipeline's own choice per backend
    args.out.mkdir(parents=True, exist_ok=True)
    label = f"-{args.label}" if args.label else ""
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-streams{label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows, ["backend", "streams", "max_batch", "clips_per_s", "vs_one_stream",
                                "per_stream_min", "per_stream_max", "mean_batch",
                                "latency_ms_p50", "latency_ms_p95", "input_fps_min", "drops",
                                "cpu_percent", "rss_mb_max", "ring_mb_mean", "ring_mb_peak"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
