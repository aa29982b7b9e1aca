"""Faults in a live run, through the real ``streamclf run`` process: an RTSP server that dies,
stalls and comes back, reconnecting switched off, an output video that stops taking data, and
SIGKILL. The RTSP runs put a password in the source URL and grep every output for it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamclf.live.events import read_events
from tests.conftest import REPO
from tests.servers import RtspServer, rtsp_server_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "S3cretPW"
READ_TIMEOUT_S = 1.5  # the frame watchdog of these runs
# x3d_xs with random weights on torch: always installed, ~80 ms a clip on 2 cores.
MODEL_ARGS = ["--model", "x3d_xs", "--weights", "random", "--backend", "torch"]
Event = dict[str, Any]


class Run:
    """One ``streamclf run`` subprocess; stdout and stderr go to files (no pipe to fill)."""

    def __init__(self, tmp: Path, args: list[str], **popen: Any) -> None:
        self.events, self.video = tmp / "events.jsonl", tmp / "overlay.mp4"
        self.out_path, self.err_path = tmp / "stdout.txt", tmp / "stderr.txt"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamclf", *args, "--events", str(self.events)],
                cwd=REPO, stdout=out, stderr=err, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
                **popen)

    def log(self) -> list[Event]:
        return read_events(self.events) if self.events.is_file() else []

    def wait_for(self, what: str, found: Callable[[list[Event]], Any],
                 timeout_s: float) -> Any:
        """Poll the event log until ``found(events)`` is truthy; return that value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = found(self.log())
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"run exited ({self.proc.returncode}) waiting for {what}: "
                                     f"{self.err_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout_s} s; stderr: "
                             f"{self.err_path.read_text()[-2000:]}")

    def finish(self, timeout_s: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(*args: str, **popen: Any) -> Run:
        runs.append(Run(tmp_path, list(args), **popen))
        return runs[-1]

    yield start
    for r in runs:
        r.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RtspServer]:
    srv = rtsp_server_or_skip(tmp_path)
    yield srv
    srv.close()


def secret_url(server: RtspServer) -> str:
    return server.url.replace("rtsp://", f"rtsp://user:{SECRET}@")


def first(kind: str, after: float = 0.0) -> Callable[[list[Event]], Event | None]:
    return lambda log: next((e for e in log if e["type"] == kind and e["ts"] > after), None)


def assert_no_secret(tmp: Path, run: Run) -> None:
    """Nothing the run wrote (stdout, stderr, events, video, any other file) holds the
    password; the RTSP server's own files are not ours."""
    ours = [p for p in tmp.rglob("*") if p.is_file() and p.suffix not in (".h264", ".log")]
    assert run.events in ours and run.err_path in ours
    for path in ours:
        assert SECRET.encode() not in path.read_bytes(), f"password leaked into {path.name}"
    assert "user:***@" in run.stderr + run.events.read_text()


def test_server_dies_stalls_and_returns(tmp_path: Path, server: RtspServer,
                                        run_cli: Callable[..., Run]) -> None:
    config = tmp_path / "cam.yaml"
    config.write_text(f"read_timeout_ms: {int(READ_TIMEOUT_S * 1000)}\nopen_timeout_ms: 2000\n")
    run = run_cli("-v", "run", "--source", secret_url(server), "--config", str(config),
                  "--backoff-initial", "0.2", "--backoff-max", "1", "--output",
                  str(tmp_path / "overlay.mp4"), "--quiet", *MODEL_ARGS)
    run.wait_for("a prediction", first("prediction"), 60)
    timings: dict[str, float] = {}
    back_at = 0.0
    for fault in ("kill", "pause"):
        t_fault = time.time()
        if fault == "kill":
            server.kill()
        else:
            server.pause()
        lost = run.wait_for("source_lost", first("source_lost", t_fault), 10)
        timings[f"{fault}: lost after"] = lost["ts"] - t_fault
        assert lost["ts"] - t_fault < READ_TIMEOUT_S + 0.75, lost
        if fault == "pause":
            assert "frame watchdog" in lost["reason"]
        time.sleep(0.5)
        back_at = time.time()
        if fault == "kill":
            server.start()
        else:
            server.resume()
        restored = run.wait_for("source_restored", first("source_restored", back_at), 10)
        pred = run.wait_for("a prediction after the restore",
                            first("prediction", restored["ts"]), 10)
        timings[f"{fault}: restored after"] = restored["ts"] - back_at
        timings[f"{fault}: predicting after"] = pred["ts"] - back_at
        assert pred["ts"] - back_at < 5.0
        # The ring and the smoother were reset: no window reaches back across the gap.
        assert pred["window_start"] >= restored["ts"]
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0, run.stderr
    print("\n" + json.dumps({k: round(v, 2) for k, v in timings.items()}))

    log = run.log()
    assert [e["seq"] for e in log] == list(range(len(log)))
    kinds = [e["type"] for e in log]
    assert kinds.count("source_lost") == kinds.count("source_restored") == 2
    assert "error" not in kinds and log[-1]["type"] == "stopped"
    # Outages: between each source_lost and its source_restored. No prediction's window
    # overlaps one, and predictions come before and after each.
    lost_ts = [e["ts"] for e in log if e["type"] == "source_lost"]
    back_ts = [e["ts"] for e in log if e["type"] == "source_restored"]
    outages = list(zip(lost_ts, back_ts, strict=True))
    preds = [e for e in log if e["type"] == "prediction"]
    for start, end in outages:
        assert not [p for p in preds if p["window_start"] < end and p["window_end"] > start]
    assert [p["window_end"] for p in preds] == sorted(p["window_end"] for p in preds)
    retries = [e for e in log if e["type"] == "reconnect_failed"]
    assert all(e["retry_in_s"] <= 1.0 for e in retries)  # --backoff-max
    assert_no_secret(tmp_path, run)


def test_no_reconnects_ends_the_run_with_one_error_line(
    tmp_path: Path, server: RtspServer, run_cli: Callable[..., Run],
) -> None:
    run = run_cli("-v", "run", "--source", secret_url(server), "--max-reconnects", "0",
                  "--output", str(tmp_path / "overlay.mp4"), "--quiet", *MODEL_ARGS)
    run.wait_for("source_opened", first("source_opened"), 60)
    time.sleep(0.5)
    server.kill()
    t0 = time.monotonic()
    assert run.finish(10) == 1
    assert time.monotonic() - t0 < READ_TIMEOUT_S + 2.0
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("streamclf: error:")]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith("streamclf: error: cam0: source lost") and "user:***@" in errors[0]
    assert "ERROR" not in run.stderr and "Traceback" not in run.stderr
    log = run.log()
    assert [e["type"] for e in log if not e["type"].startswith(("pred", "label"))][-3:] == [
        "source_lost", "error", "stopped"]
    assert "source lost" in log[-1]["error"]
    assert_no_secret(tmp_path, run)


def _limit_file_size() -> None:
    """In the child: files may not grow past 120 kB (the overlay video reaches that after
    about 3 s), and SIGXFSZ is ignored so that the kernel fails the write with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))


def test_output_video_fills_up_then_sigkill(
    tmp_path: Path, tai_chi_clip: Path, run_cli: Callable[..., Run],
) -> None:
    """The overlay video hits a real file size limit mid-run: one clear error event, the
    stream goes on. Then SIGKILL: every line written is complete JSON."""
    video = tmp_path / "overlay.mp4"
    run = run_cli("run", "--source", str(tai_chi_clip), "--loop", "--pace", "realtime",
                  "--output", str(video), "--quiet", *MODEL_ARGS, preexec_fn=_limit_file_size)
    err = run.wait_for("the output error", first("error"), 60)
    assert err["source"] == "output" and str(video) in err["message"]
    assert "File too large" in err["message"]
    run.wait_for("3 predictions after the error",
                 lambda log: len([e for e in log if e["type"] == "prediction"
                                  and e["ts"] > err["ts"]]) >= 3, 20)
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL

    data = run.events.read_bytes()
    *complete, _torn = data.split(b"\n")  # b"" unless the kill tore the last line
    records = [json.loads(line) for line in complete]
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert read_events(run.events) == records
    # A reader skips a torn last line (as a kill in the middle of a write leaves it).
    run.events.write_bytes(b"".join(line + b"\n" for line in complete) + b'{"type": "pred')
    assert read_events(run.events) == records

    assert [r for r in records if r["type"] == "error"] == [err]  # once, not per frame
    preds = [r for r in records if r["type"] == "prediction"]
    assert preds[0]["ts"] < err["ts"]  # it failed mid-run
    assert video.stat().st_size == 120_000
    logged = [ln for ln in run.stderr.splitlines() if "overlay" in ln]
    assert len(logged) == 1 and "File too large" in logged[0]


def _limit_events_size() -> None:
    """In the child: files may not grow past 6 kB (the event log of about 8 predictions)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (6_000, 6_000))


def test_event_log_fills_up_mid_run_and_falls_back_to_stderr(
    tmp_path: Path, tai_chi_clip: Path,
) -> None:
    """The event log hits a real file size limit mid-run: one error event says so, every later
    event goes to stderr as JSON Lines, and the run goes on to its normal end. (stdout and
    stderr are pipes here, which the file size limit does not touch.)"""
    events = tmp_path / "events.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "streamclf", "run", "--source", str(tai_chi_clip), "--loop",
         "--pace", "fast", "--stride", "0.4", "--duration", "12", "--quiet", *MODEL_ARGS,
         "--events", str(events)],
        cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
        preexec_fn=_limit_events_size)
    assert run.returncode == 0, run.stderr
    in_file = read_events(events)  # complete lines only: the cut one is skipped
    assert events.stat().st_size == 6_000
    assert in_file and in_file[-1]["type"] != "stopped"
    on_stderr = [json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{")]
    assert on_stderr[0]["type"] == "error" and on_stderr[0]["source"] == "events"
    assert "File too large" in on_stderr[0]["message"]
    assert "writing events to <stderr> from now on" in on_stderr[0]["message"]
    records = in_file + on_stderr
    assert [r["seq"] for r in records] == list(range(len(records)))  # nothing lost or doubled
    later = [r for r in on_stderr if r["type"] == "prediction"]
    assert len(later) >= 3 and on_stderr[-1]["type"] == "stopped"  # the stream kept going
    assert on_stderr[-1]["windows"] == sum(r["type"] == "prediction" for r in records)
