"""A short live run that raises one alert: a scripted model on a synthetic file read at
``pace: fast`` (every window classified, media time exact), for the alert, webhook, MQTT and
metrics tests.

x3d_xs windows are 1.6 s every 0.8 s; 300 frames at 30 fps give 11 windows, the i-th
ending at media time 1.567 + 0.8 i. The model says ``falling`` for windows 0-5 and
``walking`` for 6-10; with ``smooth: 1``, ``start_after: 1`` the stable label follows at
once, so with :data:`RULE` the alert starts at window 2 (falling stable for 1.6 s >= 1 s)
and ends at window 6 (``reason: "label"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.pipeline import LivePipeline, RunResult
from streamclf.live.sinks import Sink
from streamclf.media.sources import SyntheticSource

LABELS = ("falling", "walking", "sitting")
FALL, WALK = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]
SCRIPT = [FALL] * 6 + [WALK] * 5
RULE = {"labels": ["falling"], "min_score": 0.8, "min_duration_s": 1.0, "cooldown_s": 30.0}
STREAM = "door"


def alert_config(tmp_path: Path, alerts: dict[str, Any] | None = RULE,
                 **run: Any) -> RunConfig:
    """One stream ``door`` with the alert rule (None: none), its events in
    ``tmp_path/ev.jsonl``."""
    stream = StreamConfig(id=STREAM, source="synthetic", pace="fast", smooth=1,
                          threshold=0.5, start_after=1, alerts=alerts)
    return RunConfig(model="x3d_xs", events=str(tmp_path / "ev.jsonl"), quiet=True,
                     streams=(stream,), **run)


def alert_pipeline(config: RunConfig, sinks: Sequence[Sink] = (),
                   script: Sequence[Sequence[float]] = SCRIPT,
                   frames: int = 300) -> LivePipeline:
    """The pipeline of ``config`` on the scripted model and a synthetic 64x48 file."""

    def open_parts(_: StreamConfig) -> tuple[Callable[[], SyntheticSource], list[Any], float,
                                             Callable[[], None]]:
        return (lambda: SyntheticSource(64, 48, 30.0, frames=frames)), [], 30.0, lambda: None

    return LivePipeline(config, sinks=sinks, backend=FakeBackend(LABELS, script),
                        open_stream=open_parts)


def run_alerts(tmp_path: Path, sinks: Sequence[Sink] = (), **run: Any) -> RunResult:
    """Run :func:`alert_pipeline` to the end of the file (at most 60 s)."""
    return alert_pipeline(alert_config(tmp_path, **run), sinks).run(duration_s=60.0)
