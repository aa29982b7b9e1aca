"""The public live API (``from streamclf import LivePipeline, RunConfig, StreamConfig``): the
README example on a real model and a real clip, its error contract, and the same
predictions alone and as one of two streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import streamclf
from streamclf import (
    ConfigError,
    Event,
    EventType,
    LivePipeline,
    RunConfig,
    SourceError,
    StreamclfError,
    StreamConfig,
    StreamHealth,
)
from streamclf.engine.backends import FakeBackend


def test_the_api_example_runs_a_real_model_on_a_real_clip(tai_chi_clip: Path) -> None:
    events: list[Event] = []
    cfg = RunConfig(model="x3d_xs", weights="random", backend="torch",
                    streams=[StreamConfig(id="cam0", source=str(tai_chi_clip), pace="fast")])
    with LivePipeline(cfg, sinks=[events.append]) as pipe:
        health = pipe.health()
        assert isinstance(health["cam0"], StreamHealth)
        assert pipe.join(timeout_s=120)
    kinds = [e.type for e in events]
    assert all(isinstance(k, EventType) for k in kinds)
    assert kinds[0] is EventType.SOURCE_OPENED and kinds[-1] is EventType.STOPPED
    # 10 s clip, 1.6 s windows every 0.8 s: 11 windows, every one of them (lossless).
    assert kinds.count(EventType.PREDICTION) == 11
    assert [e.seq for e in events] == list(range(len(events)))
    first = next(e for e in events if e.type is EventType.PREDICTION).as_dict()
    assert first["type"] == "prediction" and len(first["raw_scores"]) == 5
    assert pipe.result.streams["cam0"].windows == 11 and pipe.result.exit_code == 0


def test_every_api_mistake_is_a_streamclf_error(tmp_path: Path) -> None:
    for bad in (
        lambda: StreamConfig(id="x", source="a.mp4", stride=-1),
        lambda: StreamConfig(id="../x", source="a.mp4"),
        lambda: StreamConfig(id="x", source=""),
        lambda: StreamConfig(id="x", source="a.mp4", pace="slow"),
        lambda: StreamConfig(id="x", source="a.mp4").replace(colour="red"),
        lambda: RunConfig(max_batch=0),
        lambda: RunConfig(streams=[StreamConfig(id="a", source="x.mp4"),
                                   StreamConfig(id="a", source="y.mp4")]),
        lambda: RunConfig(streams="cam0"),  # type: ignore[arg-type]
        lambda: RunConfig(webhook="ftp://x/y"),
        lambda: LivePipeline("config.yaml", backend=FakeBackend()),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigError):
            bad()
    cfg = RunConfig(streams=[StreamConfig(id="a", source=str(tmp_path / "missing.mp4"))])
    with pytest.raises(SourceError, match=r"missing\.mp4"):
        LivePipeline(cfg, backend=FakeBackend())
    assert issubclass(ConfigError, StreamclfError) and "LivePipeline" in streamclf.__all__


def _predictions(cfg: RunConfig, backend: Any) -> dict[str, list[list[Any]]]:
    events: list[Event] = []
    with LivePipeline(cfg, sinks=[events.append], backend=backend) as pipe:
        assert pipe.join(timeout_s=300)
    out: dict[str, list[list[Any]]] = {}
    for e in events:
        if e.type is EventType.PREDICTION:
            out.setdefault(e.stream, []).append(e.fields["raw_scores"])
    return out


@pytest.mark.slow
def test_the_same_file_gives_the_same_predictions_alone_and_beside_another(
        tai_chi_clip: Path, sensitive_backend: Any) -> None:
    clip = str(tai_chi_clip)
    alone = _predictions(RunConfig(streams=[StreamConfig(id="a", source=clip, pace="fast")]),
                         sensitive_backend)
    assert len({tuple(s) for s in alone["a"]}) > 5  # the scores follow the frames
    for max_batch in (1, 4):
        pair = _predictions(RunConfig(max_batch=max_batch, streams=[
            StreamConfig(id="a", source=clip, pace="fast"),
            StreamConfig(id="b", source=clip, pace="fast", stride=0.5)]), sensitive_backend)
        assert len(pair["a"]) == len(alone["a"]) == 11
        for got, want in zip(pair["a"], alone["a"], strict=True):
            assert got == pytest.approx(want, abs=1.5e-4)  # scores are logged to 4 decimals
        # Its own stride: first window due at 1.6 - 1/30 s, then every 0.5 s to 9.97 s.
        assert len(pair["b"]) == 17


def _fake() -> FakeBackend:
    return FakeBackend(labels=[f"c{i}" for i in range(400)], script=[[1.0] + [0.0] * 399])


def test_a_dead_camera_reconnects_and_gives_up_alone(tai_chi_clip: Path) -> None:
    """A camera down at start goes to the reconnect path (source_lost, reconnect_failed ...);
    with max_reconnects 0 it ends at once with an error while the other stream runs to its
    end; exit 0 since one is fine, 1 when every stream failed."""
    events: list[Event] = []
    dead = StreamConfig(id="dead", source="rtsp://127.0.0.1:1/x", max_reconnects=0,
                        open_timeout_ms=500)
    cfg = RunConfig(streams=[dead, StreamConfig(id="ok", source=str(tai_chi_clip),
                                                pace="fast")])
    with LivePipeline(cfg, sinks=[events.append], backend=_fake()) as pipe:
        assert pipe.join(timeout_s=60)
    of_dead = [e.type for e in events if e.stream == "dead"]
    assert of_dead == [EventType.ERROR, EventType.STOPPED]  # max_reconnects 0: no retry
    assert pipe.result.streams["ok"].windows == 11 and pipe.result.streams["ok"].error is None
    assert "cannot open" in (pipe.result.streams["dead"].error or "")
    assert pipe.result.exit_code == 0
    retrying: list[Event] = []
    cfg = RunConfig(streams=[dead.replace(max_reconnects=1, backoff_initial_s=0.05,
                                          backoff_max_s=0.05)])
    with LivePipeline(cfg, sinks=[retrying.append], backend=_fake()) as pipe:
        assert pipe.join(timeout_s=60)
    assert [e.type for e in retrying] == [EventType.SOURCE_LOST, EventType.RECONNECT_FAILED,
                                          EventType.ERROR, EventType.STOPPED]
    only_dead = RunConfig(streams=[dead])
    with LivePipeline(only_dead, backend=_fake()) as pipe:
        assert pipe.join(timeout_s=60)
    assert pipe.result.exit_code == 1  # every stream failed


def test_a_truncated_file_gives_every_decoded_window_then_the_error(
        tmp_path: Path, tai_chi_clip: Path) -> None:
    import subprocess

    whole = tmp_path / "front.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tai_chi_clip), "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True, timeout=60)
    data = whole.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[:len(data) // 2])
    for _ in range(3):  # lossless: the same every time
        events: list[Event] = []
        cfg = RunConfig(streams=[StreamConfig(id="t", source=str(half), pace="fast")])
        with LivePipeline(cfg, sinks=[events.append], backend=_fake()) as pipe:
            assert pipe.join(timeout_s=60)
        totals = pipe.result.streams["t"]
        kinds = [e.type for e in events]
        last_pred = max(i for i, k in enumerate(kinds) if k is EventType.PREDICTION)
        error = kinds.index(EventType.ERROR)
        assert error > last_pred  # after the windows
        assert "truncated" in events[error].fields["error"]
        # Frames up to ts (frames - 1) / 30 were decoded: every window ending by then.
        last_ts = (totals.frames - 1) / 30
        due = int((last_ts - (1.6 - 1 / 30)) / 0.8 + 1e-9) + 1
        assert 100 < totals.frames < 300 and totals.windows == due == kinds.count(
            EventType.PREDICTION)


def test_the_readme_layout_names_every_module() -> None:
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    missing = [str(p.relative_to(REPO)) for p in sorted((REPO / "streamclf").rglob("*.py"))
               if p.stem not in layout]
    assert not missing, f"README Layout does not name: {missing}"
    for gone in ("multi_pipeline", "stream_parts", "streams_config", "attach", "ring_buffer"):
        assert gone not in layout
