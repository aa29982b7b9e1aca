"""Inference threads vs pipeline throughput on this machine (the thread-budget decision).

    .venv/bin/python benchmarks/bench_threads.py --backends torch openvino --threads 1 2

For each backend and thread count: model-only clips/s, the ``pace=fast`` pipeline clips/s
and a 10 s live run on the 720p clip (clips/s, latency). One JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from streamclf.bench import bench_fast, bench_live, bench_model, make_test_clip
from streamclf.engine.backends.factory import create_backend
from streamclf.models import load_model

HERE = Path(__file__).resolve().parent
CLIP = HERE.parent.parent / "shared" / "data" / "videos" / "VideoQA-NTO__eating_spaghetti.mp4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="x3d_xs")
    p.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--clip", type=Path, default=CLIP)
    args = p.parse_args()
    work = HERE / "results" / "clips"
    work.mkdir(parents=True, exist_ok=True)
    clip = make_test_clip(args.clip, work / f"{args.clip.stem}-30fps.mp4")
    clip720 = make_test_clip(args.clip, work / f"{args.clip.stem}-30fps-720p.mp4", height=720)
    model = load_model(args.model, "random", device="cpu")
    for name in args.backends:
        for threads in args.threads:
            torch.set_num_threads(threads)
            backend = create_backend(model, name, threads=threads).backend
            m = bench_model(backend, model, repeats=10)
            f = bench_fast(model, backend, clip, 0.1)
            live = bench_live(model, backend, clip720, seconds=10)
            print(json.dumps({
                "model": args.model, "backend": backend.name, "threads": threads,
                "model_clips_per_s": m["clips_per_s"], "fast_clips_per_s": f["clips_per_s"],
                "live_clips_per_s": live["clips_per_s"],
                "inference_ms": live["inference_ms_median"],
                "latency_ms_p50": live["latency_ms_p50"], "latency_ms_p95": live["latency_ms_p95"],
                "input_fps": live["input_fps"], "cpu_percent": live["cpu_percent"],
            }), flush=True)


if __name__ == "__main__":
    main()
