"""How fast does it notice, how often does it cry wolf: ``evaluate-stream --sweep`` on the
small labelled set of the tests (tests/detection_data.py: three real clips' last 4 s chained
with a background clip, 2 videos, 6 segments), with x3d_xs fine-tuned by ``streamclf
train`` on the clips' first 6 s (its new head, 6 epochs, crop 130).

    .venv/bin/python benchmarks/bench_detection.py [--out benchmarks/results]

Writes ``<stamp>-detection.json`` (the report, sweep included) and ``-detection.html``
beside it, and prints the README's table: the live settings, then the sweep's best cells.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.detection_data import make_test_set, make_train_set  # noqa: E402

CLI = [sys.executable, "-m", "streamclf"]
LIVE = ["--stride", "0.25", "--smooth", "2", "--threshold", "0.3", "--start-after", "2"]


def _run(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, cwd=REPO)


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(report: dict[str, Any], rows: int = 6) -> str:
    head = ("| cell | recall | delay median s | delay p90 s | false alarms | "
            "false alarms / h | precision |\n|---|---|---|---|---|---|---|")

    def line(name: str, c: dict[str, Any]) -> str:
        return (f"| {name} | {_fmt(c['recall'])} | {_fmt(c['delay_median_s'])} | "
                f"{_fmt(c['delay_p90_s'])} | {c['false_alarms']} | "
                f"{_fmt(c['false_alarms_per_hour'], 0)} | {_fmt(c['precision'])} |")

    out = [head, line(f"live: threshold {report['threshold']}, smooth {report['smooth']}",
                      report["overall"])]
    best = sorted(report["sweep"], key=lambda c: (-(c["recall"] or 0),
                                                   c["false_alarms_per_hour"] or 0))[:rows]
    rec = report.get("recommended")
    for c in best:
        mark = " (recommended)" if rec and (c["threshold"], c["smooth"]) == (
            rec["threshold"], rec["smooth"]) else ""
        out.append(line(f"threshold {c['threshold']}, smooth {c['smooth']}{mark}", c))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--fa-budget", default="600")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_train_set(root / "ds")
        t0 = time.monotonic()
        _run("train", str(data), "--model", "x3d_xs", "--weights", "random", "--device", "cpu",
             "--crop-size", "130", "--batch-size", "8", "--epochs", "6", "--lr", "0.05",
             "--warmup-epochs", "0", "--freeze-backbone-epochs", "6", "--step-epochs", "5",
             "--precise-bn", "3", "--loader-processes", "1", "--seed", "0", "--out",
             str(root / "run"), "--quiet")
        train_s = time.monotonic() - t0
        segments = make_test_set(root / "test")
        args.out.mkdir(parents=True, exist_ok=True)
        report_path = args.out / f"{stamp}-detection.json"
        t0 = time.monotonic()
        _run("evaluate-stream", str(segments), "--model", "x3d_xs", "--weights",
             str(root / "run" / "best.safetensors"), "--backend", "torch", "--device", "cpu",
             *LIVE, "--sweep", "--fa-budget", args.fa_budget, "--report", str(report_path),
             "--html", str(report_path.with_suffix(".html")), "--quiet")
        eval_s = time.monotonic() - t0
    report = json.loads(report_path.read_text())
    report["bench"] = {"train_s": round(train_s, 1), "evaluate_stream_s": round(eval_s, 1)}
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\ntrain {train_s:.0f} s, evaluate-stream --sweep {eval_s:.0f} s -> {report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
