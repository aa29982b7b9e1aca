"""``streamclf cluster run`` and ``evaluate --engine ray`` on a real local Ray instance.

One Ray instance on 127.0.0.1 (2 CPUs) is shared by the module's tests; the clips are real
videos, looped; the model is x3d_xs with random weights. The batching queue and the
webhook forwarder are also tested on their own, without Ray.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.cli.main import main
from streamclf.cluster.messages import ClipRequest, ClipResult
from streamclf.cluster.model_server import ModelServer
from streamclf.cluster.stream_worker import StreamActor
from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.engine.batcher import InferenceWorker
from streamclf.live.events import EventLog, make_event, read_events
from streamclf.live.pipeline import LivePipeline
from streamclf.live.runner import StreamRunner
from streamclf.live.sinks import EventBus
from streamclf.sinks.webhook import WebhookForwarder
from streamclf.types import EventType
from tests.conftest import LOCAL_DATA, REPO
from tests.servers import webhook_server

HAVE_RAY = importlib.util.find_spec("ray") is not None
PREDICTION_FIELDS = {"window_start", "window_end", "latency_ms", "inference_ms", "labels",
                     "scores", "raw_labels", "raw_scores", "stable_label"}
TOTALS = {"frames", "windows", "drops", "skipped_windows"}


# -- helpers -------------------------------------------------------------------------------


def write_config(tmp_path: Path, *more_streams: str, **extra: Any) -> Path:
    clip = LOCAL_DATA / "ta_chi.mp4"
    lines = ["model: x3d_xs", "weights: random", "backend: torch", "device: cpu",
             "max_batch: 4", "max_wait_ms: 30", "loop: true", "quiet: true",
             *(f"{k}: {v}" for k, v in extra.items()),
             "streams:", f"  - id: door\n    source: {clip}",
             f"  - id: hall\n    source: {clip}\n    threshold: 0.3", *more_streams]
    path = tmp_path / "cameras.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def check_log(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The one-log contract; returns each stream's events."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_stream.setdefault(e["stream"], []).append(e)
    assert set(by_stream) >= {"door", "hall"}
    for stream in ("door", "hall"):
        own = by_stream[stream]
        assert own[0]["type"] == "source_opened" and own[0]["kind"] == "file"
        assert own[-1]["type"] == "stopped", stream
        preds = [e for e in own if e["type"] == "prediction"]
        assert len(preds) >= 2, stream
        for p in preds:
            assert p.keys() >= PREDICTION_FIELDS
            assert p["window_start"] < p["window_end"] < p["ts"]
            assert p["latency_ms"] == pytest.approx((p["ts"] - p["window_end"]) * 1000, abs=0.1)
            assert len(p["labels"]) == 5 and 1 <= p["batch"] <= 4
        stopped = own[-1]
        assert stopped.keys() >= TOTALS
        assert stopped["windows"] == len(preds) and stopped["frames"] > 0
        assert "error" not in stopped
    return by_stream


# -- without Ray -------------------------------------------------------------------------
class _RowBackend:
    """Answers each clip with its first pixel value; its third call raises."""

    name, labels = "rows", ("a", "b", "c")

    def __init__(self) -> None:
        self.calls: list[int] = []

    def infer(self, clips: Any) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(clips))
        if len(self.calls) == 3:
            raise RuntimeError("bad batch")
        time.sleep(0.05)
        probs = np.stack([np.full(3, float(c[0, 0, 0, 0])) for c in clips])
        return probs, np.zeros((len(clips), 2))


def test_model_server_batches_concurrent_clips_with_the_engine_worker() -> None:
    backend = _RowBackend()
    model = ModelServer(backend, max_batch=3, max_wait_ms=50)  # type: ignore[arg-type]
    assert isinstance(model.worker, InferenceWorker)  # the live engine's batcher, not a copy
    model.start()
    results: dict[tuple[int, int], Any] = {}

    def client(i: int, r: int) -> None:
        clip = np.full((4, 2, 2, 3), i, np.uint8)
        try:
            results[i, r] = model.submit(ClipRequest(f"s{i}", clip, 0.0, 1.0, r), timeout_s=5)
        except RuntimeError as exc:
            results[i, r] = exc

    try:
        for r in range(3):
            threads = [threading.Thread(target=client, args=(i, r)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
    finally:
        assert model.stop(2.0)
    calls = backend.calls
    assert len(results) == 9
    assert max(calls) == 3 and all(1 <= c <= 3 for c in calls)  # batched, never over max
    failed = [k for k, v in results.items() if isinstance(v, RuntimeError)]
    assert failed and len(failed) == calls[2]  # the bad batch failed exactly its callers
    ok = [r for r in results.values() if not isinstance(r, Exception)]
    assert all(r.probs[0] == int(r.stream[1:]) for r in ok)  # each caller got its own row
    assert all(1 <= r.batch <= 3 for r in ok) and model.errors == calls[2]
    with pytest.raises(Exception, match="stopping"):
        model.submit(ClipRequest("late", np.zeros((4, 2, 2, 3), np.uint8), 0.0, 1.0))


def test_webhook_never_blocks_counts_failures_and_drops() -> None:
    with webhook_server() as (url, received):
        hook = WebhookForwarder(url, queue_size=50)
        hook.start()
        for i in range(5):
            assert hook.submit({"type": "prediction", "seq": i})
        assert hook.close(2.0)
    assert [r["seq"] for r in received] == list(range(5)) and hook.sent == 5
    # Nothing listens on this port any more: every POST fails fast, is counted and retried
    # (tests/test_webhook.py: the receiver coming back), submitting never waits; a full
    # queue drops its oldest; close is bounded and counts what it could not send.
    dead = WebhookForwarder(url, queue_size=3, timeout_s=0.5, backoff_initial_s=0.05,
                            backoff_max_s=0.1)
    t0 = time.monotonic()
    accepted = [dead.submit({"seq": i}) for i in range(10)]  # not started: the queue fills
    assert time.monotonic() - t0 < 0.5
    assert accepted == [True] * 3 + [False] * 7 and dead.dropped == 7
    dead.start()
    t0 = time.monotonic()
    assert dead.close(1.0) and time.monotonic() - t0 < 2.0
    assert dead.failed >= 2 and dead.sent == 0 and dead.dropped == 10
    assert "Connection" in (dead.last_error or "")


def test_webhook_is_an_event_sink() -> None:
    """On an EventBus (as ``run --webhook`` and ``cluster run --webhook`` attach it), each
    event is POSTed as its JSON Lines record, numbered, in order."""
    with webhook_server() as (url, received):
        hook = WebhookForwarder(url)
        hook.start()
        bus = EventBus()
        bus.add_sink(hook, "webhook", inline=True)
        sent = [bus.publish(make_event(EventType.SOURCE_OPENED, "cam0", kind="file")),
                bus.publish(make_event(EventType.PREDICTION, "cam0", labels=["a"],
                                       scores=[np.float32(0.5)])),
                bus.publish(make_event(EventType.STOPPED, "cam0", frames=3))]
        bus.close(2.0)
        assert hook.close(2.0)
    assert received == [
        {"type": "source_opened", "stream": "cam0", "ts": sent[0].ts, "seq": 0, "kind": "file"},
        {"type": "prediction", "stream": "cam0", "ts": sent[1].ts, "seq": 1, "labels": ["a"],
         "scores": [0.5]},
        {"type": "stopped", "stream": "cam0", "ts": sent[2].ts, "seq": 2, "frames": 3}]
    assert (hook.sent, hook.failed, hook.dropped) == (3, 0, 0)


def test_stream_worker_windows_a_real_clip_and_survives_a_failed_window() -> None:
    """The stream side without Ray: a real clip read fast (every window), a model that
    fails once; the stream goes on, ends its label and reports its totals."""
    sent: list[ClipRequest] = []

    def infer(request: ClipRequest, stop: threading.Event) -> ClipResult:
        sent.append(request)
        if len(sent) == 2:
            raise RuntimeError("model actor lost")
        return ClipResult(request.stream, request.index, np.array([0.9, 0.06, 0.04]), 5.0)

    config = StreamConfig(id="door", source=str(LOCAL_DATA / "ta_chi.mp4"), pace="fast")
    actor = StreamActor(config, "x3d_xs", ("a", "b", "c"), infer=infer)
    assert "error" not in actor.open()
    # The cluster runs its stream through the live engine's runner, like a local run.
    assert isinstance(actor.runner, StreamRunner)
    actor.start()
    deadline = time.monotonic() + 30
    while not actor.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    events = actor.stop().events
    kinds = [e.type for e in events]
    assert kinds[0] == "source_opened" and kinds[-2:] == ["label_end", "stopped"]
    assert kinds.count("error") == 1 and kinds.count("label_start") == 1
    preds = [e for e in events if e.type == "prediction"]
    assert len(preds) == len(sent) - 1 >= 10  # 10 s clip, 0.8 s stride: every window
    assert all(r.frames.shape == (4, 182, 182, 3) and r.frames.dtype == np.uint8 for r in sent)
    assert preds[-1].fields["labels"][0] == "a" and preds[-1].fields["stable_label"] == "a"
    stopped = events[-1].fields
    assert stopped["windows"] == len(preds) and stopped["inference_errors"] == 1
    assert stopped["frames"] == 300 and stopped["drops"] == 0


def test_one_window_loop_for_local_and_cluster_runs() -> None:
    """A local pipeline's stream is a StreamRunner too (see the cluster actor above), and no
    module of streamclf/cluster cuts windows itself: no ring, scheduler, capture or smoother
    of its own."""
    config = RunConfig(streams=[StreamConfig(id="local", source="synthetic:64x48@10")])
    pipe = LivePipeline(config, backend=FakeBackend())
    try:
        assert isinstance(pipe.stream("local"), StreamRunner)
    finally:
        pipe.close_unstarted()
    own_loop = {"WindowScheduler", "FrameRing", "CaptureThread", "Smoother", "StreamSlot"}
    own_modules = ("streamclf.media.scheduler", "streamclf.media.ring",
                   "streamclf.media.capture", "streamclf.live.smoothing")
    sources = sorted((REPO / "streamclf" / "cluster").glob("*.py"))
    assert any(p.name == "stream_worker.py" for p in sources)
    for path in sources:
        text = path.read_text()
        assert "ring.window(" not in text, path.name
        for node in ast.walk(ast.parse(text)):  # code, not the docstrings that draw the flow
            if isinstance(node, ast.Name | ast.Attribute):
                name = node.id if isinstance(node, ast.Name) else node.attr
                assert name not in own_loop, f"{path.name}:{node.lineno} uses {name}"
                assert name != "window", f"{path.name}:{node.lineno} cuts a window"
            if isinstance(node, ast.ImportFrom):
                assert node.module not in own_modules, f"{path.name} imports {node.module}"
                assert not own_loop & {a.name for a in node.names}, path.name


@pytest.mark.parametrize(("args", "needle"), [
    (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: cannot reach the Ray cluster"),
    (["--address", "nonsense"], "--address 'nonsense': use auto, HOST:PORT"),
    (["--webhook", "ftp://x/y"], "--webhook 'ftp://x/y': use an http:// or https:// URL"),
    (["--model-actors", "0"], "--model-actors must be >= 1"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], needle: str) -> None:
    status = main(["cluster", "run", "--config", str(write_config(tmp_path)), *args])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("streamclf: error: ") and needle in err


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["cluster", "run", "--config", str(write_config(tmp_path, colour="red"))])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "unknown config key 'colour'" in err


# -- on Ray --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray instance on 127.0.0.1 with 2 CPUs, shared by this module's tests."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install 'streamclf[cluster]')")
    from streamclf.cluster.connect import connect

    connect(None, num_cpus=2, log_to_driver=False)
    import ray

    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    yield address
    ray.shutdown()


@pytest.mark.slow
def test_two_streams_one_log_and_the_webhook(
    tmp_path: Path, ray_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    events_path = tmp_path / "events.jsonl"
    config = write_config(tmp_path, f"  - id: gone\n    source: {tmp_path / 'missing.mp4'}")
    with webhook_server() as (url, received):
        status = main(["cluster", "run", "--config", str(config), "--stream-cpus", "0.3",
                       "--events", str(events_path), "--duration", "6", "--webhook", url])
    # The camera that cannot open is logged; the others ran, so the exit status is 0 (1
    # only when every stream failed, as with `streamclf run`).
    assert status == 0
    assert "streamclf: error: stream gone: " in capsys.readouterr().err
    events = read_events(events_path)
    by_stream = check_log(events)
    gone = by_stream.pop("gone")
    assert [e["type"] for e in gone] == ["error", "stopped"] and gone[0]["where"] == "open"
    assert "missing.mp4" in gone[1]["error"] and gone[1]["windows"] == 0
    # Windows of both streams shared model calls at least once (max_batch 4, wait 30 ms).
    assert any(e.get("batch", 1) > 1 for e in events)
    assert received == events  # every event, as written, in order
    assert sum(e["type"] == "stopped" for e in events) == 3
    assert all(own[-1]["latency_ms_p50"] > 0 for own in by_stream.values())


@pytest.mark.slow
def test_sigint_stops_in_seconds_when_joining_a_running_cluster(
    tmp_path: Path, ray_address: str
) -> None:
    events_path = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamclf", "cluster", "run", "--config",
         str(write_config(tmp_path)), "--address", ray_address, "--events", str(events_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(events_path, {"door": 2, "hall": 2}, timeout_s=90)
        assert proc.poll() is None, proc.communicate()[1]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert took < 5.0
    check_log(read_events(events_path))
    import ray

    # The run left the cluster it joined running: it still schedules work.
    assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42


def wait_for(path: Path, want: dict[str, int], timeout_s: float = 60) -> list[dict[str, Any]]:
    """Events of ``path`` once each stream in ``want`` has that many predictions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = read_events(path) if path.exists() else []
        preds = [e["stream"] for e in events if e["type"] == "prediction"]
        if all(preds.count(sid) >= n for sid, n in want.items()):
            return events
        time.sleep(0.2)
    raise AssertionError(f"no {want} predictions within {timeout_s} s")


@pytest.mark.slow
def test_a_crashed_model_actor_is_restarted_and_the_streams_go_on(
    tmp_path: Path, ray_address: str
) -> None:
    import ray

    from streamclf.cluster.runner import ClusterOptions, ClusterRunner
    from streamclf.config import load_config

    path = tmp_path / "events.jsonl"
    config = load_config(write_config(tmp_path), {"events": str(path)})
    stop = threading.Event()
    bus = EventBus()
    bus.add_sink(EventLog(path), "events", inline=True)
    try:
        runner = ClusterRunner(config, ClusterOptions(), bus, stop=stop)
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(runner.run(60.0)))
        thread.start()
        try:
            before = wait_for(path, {"door": 2, "hall": 2})
            ray.kill(runner.models[0], no_restart=False)  # a crash: Ray restarts it
            counts = {sid: sum(e["type"] == "prediction" and e["stream"] == sid
                               for e in before) for sid in ("door", "hall")}
            wait_for(path, {sid: n + 2 for sid, n in counts.items()})
        finally:
            stop.set()
            thread.join(15)
    finally:
        bus.close(2.0)
    assert not thread.is_alive() and outcome[0].interrupted and not outcome[0].errors
    events = read_events(path)
    check_log(events)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and all(e["where"] == "inference" and "model actor 0 unavailable"
                          in e["message"] for e in errors)  # windows during the restart


@pytest.mark.slow
def test_evaluate_on_ray_equals_the_local_engine(
    tmp_path: Path, ray_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [("ta_chi.mp4", "tai chi"), ("rotated_90.mov", "dancing ballet"),
            ("corrupted.mp4", "riding a bike"), ("ta_chi.mp4", "Tai_Chi")]
    data = tmp_path / "set.csv"
    data.write_text("path,label\n" + "".join(f"{LOCAL_DATA / p},{lab}\n" for p, lab in rows))
    reports, err = {}, {}
    for engine in ("local", "ray"):
        main(["-v", "evaluate", str(data), "--weights", "random", "--threads", "1", "--quiet",
              "--engine", engine, "--report", str(tmp_path / f"{engine}.json"),
              "--predictions", str(tmp_path / f"{engine}.jsonl")])
        err[engine] = capsys.readouterr().err
        reports[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
        for key in ("elapsed_s", "videos_per_s"):
            reports[engine].pop(key)
    assert "evaluating 4 videos on 2 Ray actor(s)" in err["ray"]  # 1 CPU each of the 2
    assert reports["ray"] == reports["local"]
    assert reports["local"]["predicted"] == 3 and len(reports["local"]["failed"]) == 1
    local = (tmp_path / "local.jsonl").read_text()
    assert local and (tmp_path / "ray.jsonl").read_text() == local


@pytest.mark.slow
def test_cluster_run_gives_the_same_predictions_as_a_local_run(
    tmp_path: Path, ray_address: str, tai_chi_clip: Path, sensitive_weights: Path
) -> None:
    """The same file at pace fast, on a seeded input-sensitive checkpoint: ``cluster run``
    and a local :class:`LivePipeline` classify the same windows with the same scores. One
    inference thread and batches of one on both sides make the model's arithmetic the same,
    so the logged (4-decimal) scores must be equal to within 1e-5, not just close."""
    weights = sensitive_weights
    shared = {"model": "x3d_xs", "weights": str(weights), "backend": "torch",
              "device": "cpu", "threads": 1, "max_batch": 1, "quiet": True}
    local: list[Any] = []
    cfg = RunConfig(**shared, streams=[StreamConfig(id="a", source=str(tai_chi_clip),
                                                    pace="fast")])
    with LivePipeline(cfg, sinks=[lambda e: local.append(e.as_dict())]) as pipe:
        assert pipe.join(timeout_s=300)
    yaml_path = tmp_path / "one.yaml"
    yaml_path.write_text("".join(f"{k}: {str(v).lower() if v is True else v}\n"
                                 for k, v in shared.items())
                         + f"streams:\n  - id: a\n    source: {tai_chi_clip}\n    pace: fast\n")
    events_path = tmp_path / "cluster.jsonl"
    assert main(["cluster", "run", "--config", str(yaml_path), "--address", ray_address,
                 "--events", str(events_path)]) == 0
    remote = read_events(events_path)

    def windows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # window_start/end are capture wall times; the checkpoint's scores identify the window.
        return [{k: e[k] for k in ("raw_labels", "raw_scores", "labels", "scores",
                                   "stable_label")}
                for e in events if e["type"] == "prediction"]

    want, got = windows(local), windows(remote)
    assert len(want) == 11 and len({tuple(w["raw_scores"]) for w in want}) > 5
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["raw_labels"] == w["raw_labels"] and g["stable_label"] == w["stable_label"]
        assert g["raw_scores"] == pytest.approx(w["raw_scores"], abs=1e-5)
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
