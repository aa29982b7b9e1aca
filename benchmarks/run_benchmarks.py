"""Rerun the streamclf benchmarks and write JSON + a markdown table.

    .venv/bin/python benchmarks/run_benchmarks.py --models x3d_xs x3d_s \
        --backends torch onnxruntime openvino --seconds 20

Writes ``benchmarks/results/<date>-<models>.json`` and prints the tables; paste them into
``benchmarks/RESULTS.md`` with the machine line. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from streamclf.bench import markdown_table, run_suite

HERE = Path(__file__).resolve().parent
SHARED_VIDEOS = HERE.parent.parent / "shared" / "data" / "videos"
DEFAULT_CLIP = SHARED_VIDEOS / "VideoQA-NTO__eating_spaghetti.mp4"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["x3d_xs"])
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--seconds", type=float, default=20.0, help="live run length")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", nargs="+", default=["model", "fast", "live", "live720"])
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if not args.clip.is_file():
        print(f"clip not found: {args.clip} (pass --clip)", file=sys.stderr)
        return 1
    result = run_suite(args.models, args.backends, args.clip, args.out / "clips",
                       live_seconds=args.seconds, threads=args.threads, parts=args.parts)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}-{'-'.join(args.models)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    rows = result["rows"]
    print(json.dumps(result["machine"]))
    print(markdown_table([r for r in rows if r["kind"] == "model"],
                         ["model", "backend", "batch", "ms_per_clip", "clips_per_s"]))
    print(markdown_table([r for r in rows if r["kind"] in ("fast", "sequential")],
                         ["model", "kind", "backend", "stride_s", "windows", "clips_per_s"]))
    print(markdown_table([r for r in rows if r["kind"] == "live"],
                         ["model", "backend", "clip", "input_fps", "clips_per_s",
                          "inference_ms_median", "latency_ms_p50", "latency_ms_p95",
                          "latency_ms_p99", "drops", "cpu_percent", "rss_mb_max"]))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
