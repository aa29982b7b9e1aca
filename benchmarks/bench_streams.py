"""Clips/s and latency against the number of live streams, batched vs one at a time.

    .venv/bin/python benchmarks/bench_streams.py --streams 1 2 4 8 --seconds 15 \\
        --backends openvino openvino:int8

Each stream replays a real clip (re-encoded at exactly 30 fps) as a live camera with a
one-frame stride, so every stream alone would keep the model busy ("saturated"). For each
stream count, the same run is done with the shared worker batching (``max_batch`` = the
stream count, ``max_wait_ms`` 10) and one window at a time (``max_batch`` 1). Reported:
total clips/s, its ratio to one saturated stream, per-stream clips/s (min and max:
fairness), capture-to-label latency p50/p95 over every stream, input fps per stream, drops,
process CPU % and RSS. One JSON file + a markdown table under benchmarks/results/.
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
                warmup_s: float = 4.0) -> dict[str, Any]:
    latencies: list[float] = []

    def record(event: Event) -> None:
        if event.type is EventType.PREDICTION:
            latencies.append(float(event.fields["latency_ms"]))

    config = RunConfig(model=model.spec.name, quiet=True, max_batch=max_batch, max_wait_ms=10.0,
                       streams=[StreamConfig(id=f"s{i}", source=str(clip), loop=True,
                                             pace="realtime", stride=1 / 30) for i in range(n)])
    multi = LivePipeline(config, sinks=[record], backend=backend)
    multi.start()
    time.sleep(warmup_s)
    pipes = [multi.stream(sid) for sid in multi.stream_ids]
    frames0 = [p.capture.frames_read for p in pipes]
    clips0 = [p.slot.windows for p in pipes]
    lat0, calls0 = len(latencies), multi.worker.batches
    cpu0, t0 = time.process_time(), time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb())
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    per_stream = [(p.slot.windows - c) / elapsed for p, c in zip(pipes, clips0, strict=True)]
    fps = [(p.capture.frames_read - f) / elapsed for p, f in zip(pipes, frames0, strict=True)]
    cpu = time.process_time() - cpu0
    calls = multi.worker.batches - calls0
    drops = sum(p.ring.drops for p in pipes)
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
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="x3d_xs")
    p.add_argument("--backends", nargs="+", default=["openvino"])
    p.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--switch-interval-ms", type=float, default=None,
                   help="the interpreter's thread switch interval (default: what the "
                   f"pipeline sets: {TORCH_SWITCH_INTERVAL_S * 1000:g} for torch, CPython's "
                   "5 otherwise)")
    args = p.parse_args()
    work = HERE / "results" / "clips"
    work.mkdir(parents=True, exist_ok=True)
    clip = make_test_clip(args.clip, work / f"{args.clip.stem}-30fps.mp4")
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
            for max_batch in sorted({n, 1}, reverse=True):
                row = run_streams(model, backend, clip, n, max_batch, args.seconds)
                row["backend"] = name
                if n == 1:
                    base = row["clips_per_s"]
                row["vs_one_stream"] = round(row["clips_per_s"] / base, 2) if base else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"machine": machine_info(args.threads), "model": args.model, "clip": clip.name,
              "seconds": args.seconds, "switch_interval_ms": args.switch_interval_ms,
              "rows": rows}  # None: the pipeline's own choice per backend
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-streams.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows, ["backend", "streams", "max_batch", "clips_per_s", "vs_one_stream",
                                "per_stream_min", "per_stream_max", "mean_batch",
                                "latency_ms_p50", "latency_ms_p95", "input_fps_min", "drops",
                                "cpu_percent", "rss_mb_max"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
