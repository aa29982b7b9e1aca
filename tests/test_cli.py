"""The ``streamclf`` command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LOCAL_DATA, REPO, manifest_rows
from tests.servers import webhook_server

CLI = [sys.executable, "-m", "streamclf"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )


def test_models_lists_the_whole_zoo() -> None:
    out = run_cli("models")
    assert out.returncode == 0, out.stderr
    for name in ("c2d_r50", "i3d_r50", "slow_r50", "slowfast_r50", "slowfast_r101", "x3d_xs",
                 "x3d_s", "x3d_m", "mvit_base_16x4", "mvit_base_32x3", "timesformer_k400_8x224"):
        assert name in out.stdout
    rows = [json.loads(line) for line in run_cli("models", "--json").stdout.splitlines()]
    x3d = next(r for r in rows if r["name"] == "x3d_xs")
    assert (x3d["frames"], x3d["sampling_rate"], x3d["crop_size"]) == (4, 12, 182)


@pytest.mark.slow
def test_classify_every_manifest_video(shared_data: Path) -> None:
    rows = manifest_rows()
    paths = [str(shared_data / r["file"]) for r in rows]
    out = run_cli("classify", *paths, "--model", "x3d_xs", "--weights", "random", "--json")
    assert out.returncode == 1  # the corrupted file fails the batch ...
    printed = [json.loads(line) for line in out.stdout.splitlines()]
    corrupted = [p for p in paths if "corrupted" in p]
    assert len(corrupted) == 1
    # ... while every other file still prints, in order.
    assert [p["path"] for p in printed] == [p for p in paths if p not in corrupted]
    for obj in printed:
        assert len(obj["labels"]) == 5 and obj["scores"] == sorted(obj["scores"], reverse=True)
        assert "features" not in obj
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and corrupted[0] in errors[0] and "corrupt" in errors[0]
    assert "Traceback" not in out.stderr


def test_classify_text_json_and_features(tai_chi_clip: Path) -> None:
    out = run_cli("classify", str(tai_chi_clip), "--weights", "random", "--topk", "3",
                  "--json", "--features", "--num-clips", "2")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert len(obj["labels"]) == 3 and len(obj["features"]) == 2048
    text = run_cli("classify", str(tai_chi_clip), "--weights", "random")
    assert text.returncode == 0 and text.stdout.startswith(f"{tai_chi_clip}: ")
    assert "RANDOM WEIGHTS" in text.stderr


def test_classify_sampling_modes(tai_chi_clip: Path) -> None:
    out = run_cli("classify", str(tai_chi_clip), "--weights", "random", "--json",
                  "--sample-type", "time_step_sample", "--time-step", "1.5")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["labels"]) == 5


@pytest.mark.slow
def test_demo_falls_back_loudly_when_offline(tmp_path: Path) -> None:
    events, video = tmp_path / "demo.jsonl", tmp_path / "demo.mp4"
    proc = subprocess.run(
        [*CLI, "demo", "--events", str(events), "--output", str(video)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
        env={**os.environ, "TORCH_HOME": str(tmp_path / "torch"),
             # an unusable proxy makes the download fail at once, like an offline machine
             "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "DEMO FALLS BACK TO RANDOM WEIGHTS" in proc.stderr
    assert "--weights random" in proc.stderr and "RANDOM WEIGHTS" in proc.stderr
    log = [json.loads(line) for line in events.read_text().splitlines()]
    assert log[0]["type"] == "source_opened" and log[-1]["type"] == "stopped"
    # the bundled 10 s clip at 28 fps, 1.6 s windows every 0.8 s
    stopped = log[-1]
    assert stopped["frames"] == 280 and stopped["windows"] + stopped["skipped_windows"] >= 10
    assert stopped["windows"] >= 1  # more on an idle machine; skipped ones are counted
    assert video.stat().st_size > 100_000


def test_run_stream_entry_point(tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    out = subprocess.run(
        [sys.executable, "run_stream.py", "--source", "synthetic:320x240@30", "--duration", "8",
         "--weights", "random", "--events", str(events), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    log = [json.loads(line) for line in events.read_text().splitlines()]
    assert log[-1]["type"] == "stopped" and log[-1]["frames"] >= 100
    assert any(e["type"] == "prediction" for e in log)


def test_classify_with_openvino_backend_matches_torch(tai_chi_clip: Path) -> None:
    pytest.importorskip("openvino", reason="openvino not installed (streamclf[openvino])")
    torch_out = run_cli("classify", str(tai_chi_clip), "--weights", "random", "--json",
                        "--features")
    ov_out = run_cli("classify", str(tai_chi_clip), "--weights", "random", "--json",
                     "--features", "--backend", "openvino")
    assert torch_out.returncode == ov_out.returncode == 0, ov_out.stderr
    a, b = json.loads(torch_out.stdout), json.loads(ov_out.stdout)
    fa, fb = np.asarray(a["features"]), np.asarray(b["features"])
    assert fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)) > 0.999


def test_run_help_comes_from_the_config_schema() -> None:
    """``run``'s flags are the config keys, each with its help and its default."""
    out = run_cli("run", "--help", timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps the help
    for needle in ("--topk TOPK labels reported per clip (default 5)",
                   "--pace {realtime,fast}", "(default realtime)",
                   "--stream-id ID stream id", "(default cam0)",
                   "--backend {auto,torch,onnxruntime,openvino}",
                   "--webhook URL POST events as JSON", "--mqtt URL", "--clips DIR",
                   "--max-batch MAX_BATCH", "(default 4)",
                   "--backoff-initial S", "--loop replay a file forever (default false)"):
        assert needle in text, needle
    from streamclf.cli.main import build_parser

    args = build_parser().parse_args(["run", "--stream-id", "door", "--topk", "3"])
    assert (args.id, args.topk, args.pace) == ("door", 3, None)  # None: not given
    assert build_parser().parse_args(["classify", "a.mp4"]).backend == "auto"


def test_run_reports_each_failed_stream_and_exits_1_only_when_all_failed(
    tmp_path: Path,
) -> None:
    """One corrupt file of two: an error line naming it, a summary line, exit status 0.
    Every stream failed: exit status 1."""
    clip, corrupted = LOCAL_DATA / "ta_chi.mp4", LOCAL_DATA / "corrupted.mp4"
    common = ["--weights", "random", "--backend", "torch", "--pace", "fast"]
    events = tmp_path / "ev.jsonl"
    out = run_cli("run", "--source", f"good={clip}", "--source", f"bad={corrupted}", *common,
                  "--events", str(events), timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("streamclf: error: ")]
    assert len(errors) == 1 and errors[0].startswith("streamclf: error: bad: "), out.stderr
    assert "corrupt or truncated video" in errors[0]
    assert lines[-1].startswith("streamclf: done: 2 stream(s), 1 failed, "), out.stderr
    assert str(events) in lines[-1]  # where the events went
    stopped = {e["stream"]: e for e in map(json.loads, events.read_text().splitlines())
               if e["type"] == "stopped"}
    assert "error" not in stopped["good"] and "corrupt" in stopped["bad"]["error"]

    out = run_cli("run", "--source", f"a={corrupted}", "--source", f"b={corrupted}", *common,
                  timeout=180)
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("streamclf: error: ")]
    assert sorted(ln.split(": ")[2] for ln in errors) == ["a", "b"], out.stderr  # as they end
    assert out.stderr.splitlines()[-1].startswith("streamclf: done: 2 stream(s), 2 failed, ")




def test_run_webhook_posts_every_event(tmp_path: Path) -> None:
    """``run --webhook URL``: each event of the run, as logged, is POSTed to the URL."""
    events = tmp_path / "ev.jsonl"
    with webhook_server() as (url, received):
        out = run_cli("run", "--source", str(LOCAL_DATA / "ta_chi.mp4"), "--pace", "fast",
                      "--weights", "random", "--backend", "torch", "--quiet",
                      "--events", str(events), "--webhook", url, timeout=180)
    assert out.returncode == 0, out.stderr
    log = [json.loads(line) for line in events.read_text().splitlines()]
    assert log[0]["type"] == "source_opened" and log[-1]["type"] == "stopped"
    assert sum(e["type"] == "prediction" for e in log) >= 10
    assert received == log  # every event, as written, in order


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` reconfigures the root logger (basicConfig force=True); undo that."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("failed", "status"), [((), 0), (("b",), 0), (("a", "b"), 1)])
def test_cluster_run_exit_status_is_runs(
    failed: tuple[str, ...], status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As ``run``: 1 only when every stream failed; each failure is still one line."""
    import streamclf.cluster.connect as connect
    import streamclf.cluster.runner as runner
    from streamclf.cli.main import main

    class FakeRunner:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        def run(self, _duration: float | None) -> runner.RunOutcome:
            return runner.RunOutcome(tuple(f"{sid}: source lost" for sid in failed), False)

    monkeypatch.setattr(connect, "connect", lambda *_a, **_k: connect.Connection("x", False))
    monkeypatch.setattr(connect, "disconnect", lambda _c: None)
    monkeypatch.setattr(runner, "ClusterRunner", FakeRunner)
    clip = LOCAL_DATA / "ta_chi.mp4"
    config = tmp_path / "c.yaml"
    config.write_text(f"streams:\n  - {{id: a, source: {clip}}}\n  - {{id: b, source: {clip}}}\n")
    assert main(["cluster", "run", "--config", str(config), "--quiet",
                 "--events", str(tmp_path / "ev.jsonl")]) == status
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"streamclf: error: stream {sid}: source lost" for sid in failed]
