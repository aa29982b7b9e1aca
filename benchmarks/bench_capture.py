"""CPU ms per source frame: streamclf's capture against a plain ``cv2.VideoCapture.read()`` loop.

    .venv/bin/python benchmarks/bench_capture.py [--heights 720 1080] [--repeats 3]

The clip is a real 10 s clip (``tests/data/ta_chi.mp4``) re-encoded to H.264 at 30 fps and
upscaled to each height. Two readers of the same file, each timed in process CPU time
(every thread counted) over the whole file:

* ``plain``: ``cv2.VideoCapture(path).read()`` until the end: decode + BGR, nothing else.
* ``streamclf``: one stream of the live engine at ``pace: fast`` with x3d_xs's geometry and
  its default stride, on a scripted backend that costs nothing, so what is measured is what
  capture costs: decoding, conversion, resizing, the ring and cutting every window.

Reported: CPU ms per source frame for each, their ratio (the issue's goal: at most 0.8), the
windows cut, and wall seconds. The median of ``--repeats`` runs. One JSON file under
``benchmarks/results/`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamclf.bench import machine_info, make_test_clip, markdown_table  # noqa: E402


def plain_loop(path: Path) -> tuple[float, int]:
    """(CPU seconds, frames) of ``cv2.VideoCapture.read()`` over the whole file."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = 0
    t0 = time.process_time()
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        frames += 1
    cpu = time.process_time() - t0
    cap.release()
    return cpu, frames


def streamclf_capture(path: Path, stride: float | None) -> tuple[float, int, int]:
    """(CPU seconds, frames, windows) of one live stream over the whole file."""
    from streamclf.config import RunConfig, StreamConfig
    from streamclf.engine.backends import FakeBackend
    from streamclf.live.pipeline import LivePipeline

    config = RunConfig(model="x3d_xs", quiet=True, streams=(
        StreamConfig(id="cam", source=str(path), pace="fast", stride=stride),))
    pipe = LivePipeline(config, backend=FakeBackend(labels=("a", "b", "c")))
    t0 = time.process_time()
    result = pipe.run()
    cpu = time.process_time() - t0
    totals = result.streams["cam"]
    return cpu, totals.frames, totals.windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stride", type=float, default=None,
                        help="window stride in seconds (default: the model's, half a clip)")
    parser.add_argument("--label", default="", help="a name for this run (e.g. before)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    src = REPO / "tests" / "data" / "ta_chi.mp4"
    clips = REPO / "benchmarks" / "results" / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for height in args.heights:
        clip = make_test_clip(src, clips / f"ta_chi_{height}p30.mp4", fps=30, height=height)
        plain, ours, walls, windows = [], [], [], 0
        for _ in range(args.repeats):
            cpu, frames = plain_loop(clip)
            plain.append(1000 * cpu / frames)
            w0 = time.monotonic()
            cpu, frames_s, windows = streamclf_capture(clip, args.stride)
            walls.append(time.monotonic() - w0)
            ours.append(1000 * cpu / frames_s)
        p, o = statistics.median(plain), statistics.median(ours)
        rows.append({"height": height, "frames": frames, "plain_ms_per_frame": round(p, 3),
                     "streamclf_ms_per_frame": round(o, 3), "ratio": round(o / p, 3),
                     "windows": windows, "wall_s": round(statistics.median(walls), 2),
                     "plain_runs": [round(x, 3) for x in plain],
                     "streamclf_runs": [round(x, 3) for x in ours]})
        print(f"{height}p: plain {p:.2f} ms/frame, streamclf {o:.2f} ms/frame "
              f"(x{o / p:.2f})", file=sys.stderr, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-capture{'-' + args.label if args.label else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(
        {"machine": machine_info(), "stride": args.stride, "label": args.label,
         "rows": rows}, indent=2) + "\n")
    print(markdown_table(rows, ["height", "frames", "plain_ms_per_frame",
                                "streamclf_ms_per_frame", "ratio", "windows", "wall_s"]))
    print(f"-> {args.out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
