"""Soak test: a looping real clip as a live 30 fps camera through the whole pipeline.

    .venv/bin/python benchmarks/soak.py --minutes 10            # the full soak
    .venv/bin/python benchmarks/soak.py --minutes 1 --json out.json

Checks, after a warm-up: RSS growth < 50 MB, a constant thread count, and that every
prediction was logged exactly once with contiguous ``seq`` numbers. Exit status 1 if a check
fails. ``tests/test_soak.py`` runs a 30 s version in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from streamclf.config import RunConfig, StreamConfig
from streamclf.live.events import read_events
from streamclf.live.pipeline import LivePipeline

HERE = Path(__file__).resolve().parent
DEFAULT_CLIP = HERE.parent / "tests" / "data" / "ta_chi.mp4"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soak(clip: Path, seconds: float, warmup_s: float = 20.0, backend: str = "auto",
         model: str = "x3d_xs", events: Path | None = None) -> dict[str, Any]:
    """Run the pipeline for ``warmup_s + seconds`` and return the measurements and checks."""
    events = events or Path(tempfile.mkdtemp(prefix="soak-")) / "events.jsonl"
    config = RunConfig(weights="random", model=model, backend=backend, events=str(events),
                       quiet=True, device="cpu",
                       streams=[StreamConfig(id="soak", source=str(clip), loop=True)])
    pipe = LivePipeline(config)
    pipe.start()
    time.sleep(warmup_s)
    rss0, threads0 = _rss_mb(), threading.active_count()
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(min(5.0, seconds / 10))
        samples.append((round(time.monotonic() - t0, 1), round(_rss_mb(), 1),
                        threading.active_count()))
    result = pipe.stop().streams["soak"]
    log = read_events(events)
    preds = [e for e in log if e["type"] == "prediction"]
    seqs = [e["seq"] for e in log]
    growth = max(s[1] for s in samples) - rss0
    checks = {
        "rss_growth_lt_50mb": growth < 50.0,
        "threads_constant": all(s[2] == threads0 for s in samples),
        "seq_contiguous": seqs == list(range(len(seqs))),
        "every_prediction_logged_once": len(preds) == result.windows
        and len({(p["window_start"], p["window_end"]) for p in preds}) == len(preds),
        "ends_with_stopped": log[-1]["type"] == "stopped",
    }
    return {
        "clip": clip.name, "seconds": seconds, "warmup_s": warmup_s,
        "backend": pipe.backend.name, "frames": result.frames, "windows": result.windows,
        "drops": result.drops, "rss_mb_after_warmup": round(rss0, 1),
        "rss_growth_mb": round(growth, 1), "threads": threads0, "samples": samples,
        "checks": checks, "ok": all(checks.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=20.0, help="seconds")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--backend", default="auto")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    out = soak(args.clip, args.minutes * 60, args.warmup, args.backend)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
