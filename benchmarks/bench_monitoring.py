"""What camera monitoring costs: a live 720p stream with alert clips, MQTT and the SQLite
event store on, against the same run with them off.

    .venv/bin/python benchmarks/bench_monitoring.py --seconds 30 --backend openvino

The stream replays a real clip re-encoded at 720p and 30 fps as a live camera (``pace:
realtime``, looped) with a short stride, so the model is busy all the time: any CPU that
monitoring takes shows as fewer clips/s. The model really runs (x3d_xs, random weights),
but its scores are replaced by a script (one label for ``--alert-clips`` clips, another for
as many), so alerts come and go at a steady rate and every part has work: a clip and a
snapshot per alert, MQTT messages, database rows. Enabled are whichever of these the code
has when the benchmark runs: ``RunConfig.clips`` and ``RunConfig.db`` when the schema has
them, MQTT when ``mosquitto`` is installed (a broker is started on 127.0.0.1). Runs
alternate off/on ``--repeat`` times. Reported per run: clips/s, latency p50/p95, input fps,
drops, process CPU %, peak RSS, alerts, and the sinks attached with their drops; then the
ratio of clips/s on/off (the goal: within 5 %). One JSON file under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.mqtt_broker starts the broker

from streamclf.bench import _rss_mb, machine_info, make_test_clip, markdown_table  # noqa: E402
from streamclf.config import RunConfig, StreamConfig  # noqa: E402
from streamclf.live.pipeline import LivePipeline  # noqa: E402
from streamclf.types import Event, EventType  # noqa: E402

CLIP = HERE.parent.parent / "shared" / "data" / "videos" / "VideoQA-NTO__eating_spaghetti.mp4"


class ScriptedScores:
    """Runs the real backend (its cost), then replaces its scores: label 0 at 0.9 for
    ``period`` clips, label 1 for as many, and so on. Called by one inference thread."""

    def __init__(self, backend: Any, period: int) -> None:
        self.backend, self.period = backend, period
        self.labels: tuple[str, ...] = backend.labels
        self.name: str = backend.name
        self._n = 0

    def infer(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self.backend.infer(clips)
        probs = np.full_like(probs, 0.1 / (probs.shape[1] - 1))
        for b in range(len(clips)):
            probs[b, (self._n // self.period) % 2] = 0.9
            self._n += 1
        return probs, feats


def monitoring(work: Path, broker_url: str | None, parts: Sequence[str]) -> dict[str, Any]:
    """The RunConfig keys of the monitoring ``parts`` this code has."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    extra: dict[str, Any] = {}
    if "clips" in fields and "clips" in parts:
        extra["clips"] = {"dir": str(work / "clips"), "pre_s": 2.0, "post_s": 2.0}
    if "db" in fields and "db" in parts:
        extra["db"] = str(work / "events.db")
    if "mqtt" in fields and "mqtt" in parts and broker_url:
        extra["mqtt"] = broker_url
    return extra


def run_once(backend: Any, clip: Path, seconds: float, stride: float, extra: dict[str, Any],
             label: str, warmup_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    alerts = [0]

    def record(event: Event) -> None:
        if event.type is EventType.PREDICTION:
            latencies.append(float(event.fields["latency_ms"]))
        elif event.type is EventType.ALERT and event.fields.get("phase") == "start":
            alerts[0] += 1

    rule = {"labels": [backend.labels[0]], "min_score": 0.5, "min_duration_s": 1.0,
            "cooldown_s": 0.0}
    stream = StreamConfig(id="cam", source=str(clip), loop=True, pace="realtime",
                          stride=stride, smooth=1, start_after=1, threshold=0.5, alerts=rule)
    config = RunConfig(model="x3d_xs", quiet=True, streams=[stream], **extra)
    pipe = LivePipeline(config, backend=backend)
    pipe.add_sink(record, "bench")
    pipe.start()
    time.sleep(warmup_s)
    runner = pipe.stream("cam")
    frames0, clips0, lat0, alerts0 = (runner.capture.frames_read, runner.slot.windows,
                                      len(latencies), alerts[0])
    cpu0, t0 = time.process_time(), time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb())
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    clips = (runner.slot.windows - clips0) / elapsed
    fps = (runner.capture.frames_read - frames0) / elapsed
    cpu = time.process_time() - cpu0
    sinks = {s.name: s.drops for s in pipe.sink_health()}
    drops = runner.ring.drops
    t_stop = time.monotonic()
    pipe.stop()
    stop_s = time.monotonic() - t_stop
    lat = np.asarray(latencies[lat0:])
    return {
        "run": label, "parts": ",".join(k for k in ("clips", "db", "mqtt") if k in extra)
        or "-", "clips_per_s": round(clips, 3),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "input_fps": round(fps, 2), "drops": drops, "cpu_percent": round(100 * cpu / elapsed, 1),
        "rss_mb_max": round(max(rss), 1), "alerts": alerts[0] - alerts0,
        "sink_drops": sinks, "stop_s": round(stop_s, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="openvino")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--stride", type=float, default=0.1, help="seconds; short: model busy")
    p.add_argument("--alert-clips", type=int, default=20,
                   help="clips of the alerting label, then as many of another")
    p.add_argument("--parts", nargs="+", default=["clips", "db", "mqtt"],
                   choices=["clips", "db", "mqtt"], help="what \"on\" turns on")
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()

    import torch

    from streamclf.engine.backends.factory import create_backend
    from streamclf.engine.runtime import tune_switch_interval
    from streamclf.models import load_model

    work = HERE / "results" / "clips"
    work.mkdir(parents=True, exist_ok=True)
    clip = work / f"{args.clip.stem}-30fps-720p.mp4"
    if not clip.is_file():
        clip = make_test_clip(args.clip, clip, height=720)
    torch.set_num_threads(args.threads)
    model = load_model("x3d_xs", "random", device="cpu")
    real = create_backend(model, args.backend, "fp32", threads=args.threads).backend
    tune_switch_interval(real.name)
    backend = ScriptedScores(real, args.alert_clips)
    rows: list[dict[str, Any]] = []
    broker = None
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        try:
            try:
                from tests.mqtt_broker import Broker

                broker = Broker(Path(tmp) / "broker").start()
            except Exception as exc:  # pytest's Skipped included: no mosquitto here
                print(f"MQTT off: {type(exc).__name__}: {exc}", file=sys.stderr)
                broker = None
            for i in range(args.repeat):
                for on in (False, True):
                    extra = monitoring(Path(tmp) / f"run{i}", broker.url if broker else None,
                                       args.parts) if on else {}
                    row = run_once(backend, clip, args.seconds, args.stride, extra,
                                   "on" if on else "off", args.warmup)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if broker is not None:
                broker.stop()
    off = [r["clips_per_s"] for r in rows if r["run"] == "off"]
    on = [r["clips_per_s"] for r in rows if r["run"] == "on"]
    ratio = (sum(on) / len(on)) / (sum(off) / len(off)) if off and on and sum(off) else None
    verdict = None if ratio is None else ("within 5 %" if ratio >= 0.95 else "over 5 %")
    result = {"machine": machine_info(args.threads), "backend": real.name,
              "clip": clip.name, "seconds": args.seconds, "stride": args.stride,
              "rows": rows, "clips_per_s_on_over_off": None if ratio is None
              else round(ratio, 3), "verdict": verdict}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-monitoring.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows, ["run", "parts", "clips_per_s", "latency_ms_p50",
                                "latency_ms_p95", "input_fps", "drops", "cpu_percent",
                                "rss_mb_max", "alerts", "sink_drops", "stop_s"]))
    print(f"clips/s with monitoring / without: {result['clips_per_s_on_over_off']} "
          f"({verdict}); written to {path}")


if __name__ == "__main__":
    main()
