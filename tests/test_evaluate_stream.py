"""``streamclf evaluate-stream --sweep`` end to end, on a labelled set made from the shared
real clips (tests/detection_data.py) and a model fine-tuned by ``streamclf train`` here, so
its labels mean something; ``score-events`` on a ``streamclf run`` log of the same videos
scores the same; the HTML report opens in headless Chromium with every image loaded.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamclf.analysis.detection import METRIC_KEYS, REPORT_KEYS
from streamclf.analysis.sweep import SMOOTHS, THRESHOLDS
from tests.browser import open_page
from tests.conftest import REPO, SHARED_DATA
from tests.detection_data import CLASSES, make_test_set, make_train_set

CLI = [sys.executable, "-m", "streamclf"]
LIVE = ("--stride", "0.25", "--smooth", "2", "--threshold", "0.3", "--start-after", "2")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(segments.csv of the test videos, the fine-tuned checkpoint): x3d_xs, its new head
    trained on the first 6 s of each class's clip (the test videos use the last 4 s)."""
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip(f"{SHARED_DATA} is not there (the shared real clips)")
    root = tmp_path_factory.mktemp("detection")
    data = make_train_set(root / "ds")
    out = root / "run"
    res = run_cli("train", str(data), "--model", "x3d_xs", "--weights", "random", "--device",
                  "cpu", "--crop-size", "130", "--batch-size", "8", "--epochs", "6", "--lr",
                  "0.05", "--warmup-epochs", "0", "--freeze-backbone-epochs", "6",
                  "--step-epochs", "5", "--precise-bn", "3", "--loader-processes", "1",
                  "--seed", "0", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "best.json").read_text())
    assert meta["metrics"]["val_top1"] >= 0.8, res.stdout
    return make_test_set(root / "test"), out / "best.safetensors"


def _model(weights: Path) -> tuple[str, ...]:
    return ("--model", "x3d_xs", "--weights", str(weights), "--backend", "torch",
            "--device", "cpu")


def _recommended(cells: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    """The rule, again: highest recall within the budget, then the smaller median delay."""
    within = [c for c in cells if c["false_alarms_per_hour"] is not None
              and c["false_alarms_per_hour"] <= budget]
    if not within:
        return None
    return min(within, key=lambda c: (-(c["recall"] or 0.0), c["delay_median_s"]
                                      if c["delay_median_s"] is not None else math.inf,
                                      -c["threshold"], c["smooth"]))


@pytest.fixture(scope="module")
def swept(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One ``evaluate-stream --sweep --html`` run: (the process, the report, the page)."""
    segments, weights = trained
    out = tmp_path_factory.mktemp("swept")
    report_path, html_path = out / "r.json", out / "r.html"
    res = run_cli("evaluate-stream", str(segments), *_model(weights), *LIVE, "--sweep",
                  "--grace", "2.0", "--fa-budget", "600", "--report", str(report_path),
                  "--html", str(html_path))
    assert res.returncode == 0, res.stderr
    return res, report_path, html_path


@pytest.mark.slow
def test_evaluate_stream_sweep_on_a_fine_tuned_model(
        swept: tuple[subprocess.CompletedProcess[str], Path, Path]) -> None:
    res, report_path, html_path = swept
    report = json.loads(report_path.read_text())
    assert list(report)[: len(REPORT_KEYS)] == list(REPORT_KEYS)
    assert set(report["overall"]) == set(METRIC_KEYS)
    assert set(report["per_class"]) == set(CLASSES)
    assert (report["videos"], report["overall"]["segments"]) == (2, 6)
    assert report["hours"] == pytest.approx(32.0 / 3600, abs=1e-4)  # the files' durations
    assert (report["smooth"], report["threshold"], report["grace"]) == (2, 0.3, 2.0)
    # the labels mean something: the live settings find most segments, quickly
    overall = report["overall"]
    assert overall["recall"] >= 0.66, overall
    assert overall["delay_median_s"] is not None and overall["delay_median_s"] <= 4.0

    cells = report["sweep"]
    assert [(c["threshold"], c["smooth"]) for c in cells] == [
        (t, s) for s in SMOOTHS for t in THRESHOLDS]
    for cell in cells:
        assert set(cell) == {"threshold", "smooth", *METRIC_KEYS}
    live = next(c for c in cells if (c["threshold"], c["smooth"]) == (0.3, 2))
    assert {k: live[k] for k in METRIC_KEYS} == overall  # offline smoothing == the live run
    assert report["recommended"] is not None
    assert report["recommended"] == _recommended(cells, 600.0)
    assert f"recommended: --threshold {report['recommended']['threshold']}" in res.stdout

    page = html_path.read_text()
    assert page.count("<img ") == 2
    shown = open_page(html_path)
    assert shown.all_images_loaded and len(shown.images) == 2, shown.images
    assert shown.external == []


@pytest.mark.slow
def test_score_events_on_a_run_log_scores_as_evaluate_stream(
        trained: tuple[Path, Path], swept: tuple[subprocess.CompletedProcess[str], Path, Path],
        tmp_path: Path) -> None:
    """The same videos through ``streamclf run --pace fast``: ``score-events`` on its log
    gives what ``evaluate-stream`` gives (the one rule, on media time)."""
    segments, weights = trained
    videos = [segments.parent / "walk1.mp4", segments.parent / "walk2.mp4"]
    log = tmp_path / "events.jsonl"
    run = run_cli("run", *[f"--source={v}" for v in videos], "--pace", "fast",
                  *_model(weights), *LIVE, "--events", str(log), "--quiet")
    assert run.returncode == 0, run.stderr
    scored = run_cli("score-events", str(log), str(segments), "--report",
                     str(tmp_path / "s.json"))
    assert scored.returncode == 0, scored.stderr
    by_log = json.loads((tmp_path / "s.json").read_text())
    by_replay = json.loads(swept[1].read_text())
    same = ("segments", "detected", "recall", "delay_median_s", "delay_p90_s",
            "delay_max_s", "false_alarms", "repeats", "precision")
    assert {k: by_log["overall"][k] for k in same} == {k: by_replay["overall"][k] for k in same}
    assert by_log["segments_detail"] == by_replay["segments_detail"]


def test_evaluate_stream_refuses_bad_input_before_loading_a_model(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("video,start_s,end_s,label\nmissing.mp4,0,2,run\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("video,start_s,end_s,label\na.mp4,3,1,run\n")
    report = str(tmp_path / "r.json")
    cases = [
        (["evaluate-stream", str(truth), "--report", report], "missing.mp4"),
        (["evaluate-stream", str(bad), "--report", report], "bad.csv"),
        (["evaluate-stream", str(tmp_path / "none.csv"), "--report", report], "none.csv"),
        (["evaluate-stream", str(truth), "--report", str(truth)], "input"),
        (["evaluate-stream", str(truth), "--videos-dir", str(tmp_path / "no"), "--report",
          report], "--videos-dir"),
    ]
    for args, words in cases:
        res = run_cli(*args, timeout=60)
        assert res.returncode == 1, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.stderr, lines
    for flag, value in (("--grace", "nan"), ("--fa-budget", "-1"), ("--grace", "x")):
        res = run_cli("evaluate-stream", str(truth), flag, value, "--report", report)
        assert res.returncode == 2 and flag in res.stderr, res.stderr  # a usage error
        assert "Traceback" not in res.stderr
