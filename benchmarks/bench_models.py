"""Model-only latency and throughput of the zoo with the torch backend.

Times exactly one thing: ``net(*pathways)`` under ``torch.inference_mode()`` on
preprocessed random inputs of the model's real input shape, after warm-up.
Preprocessing and decoding are not included (the pipeline benchmarks measure those).

    python benchmarks/bench_models.py --models x3d_xs x3d_s --repeats 10
    -> benchmarks/results/models-<host>-<date>.json and a markdown table on stdout
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from streamclf.models import get_spec, load_model

RESULTS = Path(__file__).with_name("results")


def bench_model(name: str, repeats: int, warmup: int, batch: int) -> dict[str, object]:
    model = load_model(name, "random", device="cpu")
    rng = np.random.default_rng(0)
    inputs = [
        torch.from_numpy(rng.standard_normal((batch, *shape), dtype=np.float32))
        for shape in get_spec(name).input_shapes
    ]
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model.net(*inputs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    ms = [t * 1000 for t in times]
    return {
        "model": name, "backend": "torch-eager", "batch": batch, "repeats": repeats,
        "ms_per_batch_median": round(statistics.median(ms), 2),
        "ms_per_batch_min": round(min(ms), 2),
        "clips_per_s": round(batch * 1000 / statistics.median(ms), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["x3d_xs", "x3d_s", "x3d_m"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench_model(m, args.repeats, args.warmup, args.batch) for m in args.models]
    meta = {
        "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
        "threads": args.threads, "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"models-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print("| model | backend | batch | ms/batch (median) | clips/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {r['batch']} | {r['ms_per_batch_median']} "
              f"| {r['clips_per_s']} |")
    print(f"\n{meta}\nwritten to {out}")


if __name__ == "__main__":
    main()
