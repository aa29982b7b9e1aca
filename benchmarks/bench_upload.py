"""Live latency and server memory while the web view receives big uploads.

    .venv/bin/python benchmarks/bench_upload.py --uploads 3 --upload-mb 150 \\
        --isolation process --payload clip

A live pipeline (a real clip re-encoded at exactly 30 fps, replayed as a camera; x3d_xs on
torch with random weights, or ``--backend fake``) is served by :class:`WebServer` with an
upload classifier, in this process, as ``streamclf run --web`` runs it. After a warm-up
and a baseline, ``--uploads`` clients in a separate process post ``--upload-mb`` files to
``/api/classify`` at once. The files are written to a temporary folder first: ``clip`` is
the clip concatenated to size (the worker decodes its first copy and classifies it for
real), ``random`` is noise with an .mp4 name (the upload path runs to the end and the worker
answers 400). Reported: capture-to-label latency p50/p95/max of the live stream before and
during the uploads, its input fps and drops, the server's resident memory before and its
peak (VmHWM) after, the upload worker's peak, and each upload's status and time. One JSON
file under benchmarks/results/ and a markdown row.

``--isolation thread`` classifies on a thread of the server instead of a worker process
(the alternative the README compares).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamclf.bench import machine_info, make_test_clip, markdown_table
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.pipeline import LivePipeline
from streamclf.types import Event, EventType
from streamclf.web import WebHub, WebServer
from streamclf.web.link import HubSink, mjpeg_frame_sinks
from streamclf.web.uploads import ClassifierFactory, ClassifyService, Isolation

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "videos" / "VideoQA-NTO__eating_spaghetti.mp4"
LOCAL = HERE.parent / "tests" / "data" / "ta_chi.mp4"
MB = 1024 * 1024

#: The upload clients: one thread per file, streaming it in 1 MB blocks (argv: port, files).
CLIENT = r"""
import http.client, json, sys, threading, time, uuid
port, files = int(sys.argv[1]), sys.argv[2:]
results = [None] * len(files)
def send(i, path):
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="upload{i}.mp4"\r\nContent-Type: video/mp4\r\n\r\n').encode()
    tail = f'\r\n--{boundary}--\r\n'.encode()
    import os
    size = os.path.getsize(path)
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
        conn.putrequest('POST', '/api/classify')
        conn.putheader('Content-Type', f'multipart/form-data; boundary={boundary}')
        conn.putheader('Content-Length', str(len(head) + size + len(tail)))
        conn.endheaders()
        conn.send(head)
        with open(path, 'rb') as fh:
            while block := fh.read(1 << 20):
                conn.send(block)
        conn.send(tail)
        resp = conn.getresponse()
        body = resp.read()
        results[i] = {'status': resp.status, 'seconds': round(time.monotonic() - t0, 2),
                      'answer': body[:160].decode('utf-8', 'replace')}
    except OSError as exc:
        results[i] = {'status': None, 'seconds': round(time.monotonic() - t0, 2),
                      'answer': repr(exc)}
threads = [threading.Thread(target=send, args=(i, f)) for i, f in enumerate(files)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""


def proc_status(pid: int | str, key: str) -> float | None:
    """``VmRSS``/``VmHWM`` of a process in MB (None: gone, or no /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def make_payload(kind: str, size_mb: int, clip: Path, folder: Path, i: int) -> Path:
    path = folder / f"upload{i}.mp4"
    with path.open("wb") as fh:
        if kind == "clip":
            data = clip.read_bytes()
            while fh.tell() < size_mb * MB:
                fh.write(data)
        else:
            for _ in range(size_mb):
                fh.write(os.urandom(MB))
    return path


def percentiles(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values)
    if not len(arr):
        return {"p50": None, "p95": None, "max": None}
    return {"p50": round(float(np.percentile(arr, 50)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1), "max": round(float(arr.max()), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=3)
    p.add_argument("--upload-mb", type=int, default=150)
    p.add_argument("--payload", choices=("clip", "random"), default="clip")
    p.add_argument("--isolation", choices=("process", "thread"), default="process")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="uploads at once (default: the server's, 2; the rest get 429)")
    p.add_argument("--backend", choices=("torch", "fake"), default="torch")
    p.add_argument("--clip", type=Path, default=SHARED if SHARED.is_file() else LOCAL)
    p.add_argument("--warmup-s", type=float, default=8.0)
    p.add_argument("--baseline-s", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()

    work = HERE / "results" / "clips"
    work.mkdir(parents=True, exist_ok=True)
    clip = make_test_clip(args.clip, work / f"{args.clip.stem}-30fps.mp4")
    latencies: list[tuple[float, float]] = []  # (monotonic time, latency ms)

    def record(event: Event) -> None:
        if event.type is EventType.PREDICTION:
            latencies.append((time.monotonic(), float(event.fields["latency_ms"])))

    config = RunConfig(model="x3d_xs", weights="random", backend="torch", device="cpu",
                       threads=1, quiet=True,
                       streams=[StreamConfig(id="cam0", source=str(clip), loop=True)])
    backend = (FakeBackend(labels=("a", "b", "c"), script=[[0.6, 0.3, 0.1]], delay_s=0.05)
               if args.backend == "fake" else None)
    hub = WebHub()
    service = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"),
                              isolation=Isolation(args.isolation))
    extra = {"max_concurrent_uploads": args.max_concurrent} if args.max_concurrent else {}
    server = WebServer(hub, "127.0.0.1", 0, classifier=service, max_upload_mb=1024, **extra)
    pipeline = LivePipeline(config, sinks=[record, HubSink(hub)],
                            frame_sinks=mjpeg_frame_sinks(hub), backend=backend)
    server.start()
    pipeline.start()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        try:
            print(f"warming up ({args.warmup_s:g} s; the upload worker classifies the clip "
                  "once)", file=sys.stderr, flush=True)
            service.classify(clip, "warm.mp4", timeout_s=300)  # the worker is up
            time.sleep(args.warmup_s)
            files = [make_payload(args.payload, args.upload_mb, clip, Path(tmp), i)
                     for i in range(args.uploads)]
            runner = pipeline.stream("cam0")
            frames0, drops0 = runner.capture.frames_read, runner.ring.drops
            t_base = time.monotonic()
            time.sleep(args.baseline_s)
            rss_before = proc_status("self", "VmRSS")
            hwm_before = proc_status("self", "VmHWM")
            print(f"uploading {args.uploads} x {args.upload_mb} MB ({args.payload})",
                  file=sys.stderr, flush=True)
            rss_samples: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    rss_samples.append(proc_status("self", "VmRSS") or 0.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t_up = time.monotonic()
            frames1, drops1 = runner.capture.frames_read, runner.ring.drops
            done = subprocess.run([sys.executable, "-c", CLIENT, str(server.port),
                                   *map(str, files)], capture_output=True, text=True,
                                  timeout=1800, check=True)
            t_end = time.monotonic()
            stop.set()
            sampler.join(2)
            frames2, drops2 = runner.capture.frames_read, runner.ring.drops
            uploads = json.loads(done.stdout)
            worker_hwm = [proc_status(pid, "VmHWM") for pid in service.worker_pids]
        finally:
            pipeline.stop()
            server.stop()
    base = [ms for t, ms in latencies if t_base <= t < t_up]
    during = [ms for t, ms in latencies if t_up <= t <= t_end]
    up_s = t_end - t_up
    row: dict[str, Any] = {
        "isolation": args.isolation, "backend": args.backend, "payload": args.payload,
        "uploads": f"{args.uploads}x{args.upload_mb}MB",
        "statuses": "/".join(str(u["status"]) for u in uploads),
        "upload_s": round(up_s, 1),
        **{f"base_{k}_ms": v for k, v in percentiles(base).items()},
        **{f"during_{k}_ms": v for k, v in percentiles(during).items()},
        "fps_base": round((frames1 - frames0) / max(t_up - t_base, 1e-9), 1),
        "fps_during": round((frames2 - frames1) / max(up_s, 1e-9), 1),
        "drops_base": drops1 - drops0, "drops_during": drops2 - drops1,
        "rss_before_mb": rss_before, "rss_max_during_mb": max(rss_samples, default=None),
        "hwm_before_mb": hwm_before, "hwm_after_mb": proc_status("self", "VmHWM"),
        "worker_hwm_mb": worker_hwm[0] if worker_hwm else None,
    }
    result = {"machine": machine_info(1), "clip": clip.name, "row": row, "uploads": uploads,
              "predictions_base": len(base), "predictions_during": len(during)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-upload.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(uploads))
    print(markdown_table([row], list(row)))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
