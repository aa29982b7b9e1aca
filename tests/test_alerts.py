"""Alerts: the rule on synthetic predictions (AlertTracker), then in a live run (events in
the log, alerts-only sinks, clip paths, the end at stop)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.errors import ConfigError
from streamclf.live.alerts import AlertTracker, new_alert_id
from streamclf.live.events import read_events
from streamclf.live.smoothing import Smoother
from streamclf.sections import AlertRule, ClipsConfig
from streamclf.types import Event, EventType
from tests.alert_run import STREAM, alert_config, alert_pipeline, run_alerts

LABELS = ("falling", "walking", "sitting")
ID = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-\d{4,}$")


def probs(label: str | None, score: float = 0.9) -> np.ndarray:
    p = np.full(len(LABELS), (1.0 - score) / (len(LABELS) - 1), np.float32)
    if label is not None:
        p[LABELS.index(label)] = score
    return p


def feed(tracker: AlertTracker, steps: list[tuple[float, str | None, float]]
         ) -> list[dict[str, Any]]:
    """``(media_ts, stable label, its score)`` per prediction -> every alert event's record."""
    out: list[Event] = []
    for media, label, score in steps:
        out += tracker.update(media, label, probs(label, score), ts=1_000_000.0 + media,
                              window_end=999_999.9 + media)
    return [e.as_dict() for e in out]


def rule(**kw: Any) -> AlertRule:
    base: dict[str, Any] = {"labels": ["falling"], "min_score": 0.8, "min_duration_s": 1.0,
                            "cooldown_s": 10.0}
    return AlertRule(**{**base, **kw})


def test_starts_after_min_duration_and_ends_when_the_label_goes() -> None:
    tracker = AlertTracker("door", rule(), LABELS)
    events = feed(tracker, [(0.0, "falling", 0.85), (0.5, "falling", 0.95),
                            (1.0, "falling", 0.9), (1.5, "falling", 0.99),
                            (2.0, "walking", 0.9)])
    assert [(e["phase"], e["media_ts"]) for e in events] == [("start", 1.0), ("end", 2.0)]
    start, end = events
    assert start["type"] == "alert" and start["stream"] == "door"
    assert start["label"] == end["label"] == "falling" and start["alert_id"] == end["alert_id"]
    assert start["score"] == pytest.approx(0.9) and start["max_score"] == pytest.approx(0.9)
    assert end["max_score"] == pytest.approx(0.99)  # the best while it lasted
    assert end["score"] == pytest.approx(0.05)  # falling's smoothed score when it ended
    assert end["reason"] == "label" and end["duration_s"] == pytest.approx(1.0)
    assert "clip" not in end and "snapshot" not in end  # clips are off
    assert start["ts"] == pytest.approx(1_000_001.0) and start["window_end"] == pytest.approx(
        1_000_000.9)
    assert ID.match(start["alert_id"]) and tracker.active is None


def test_a_dip_under_min_score_restarts_the_count_but_does_not_end_an_alert() -> None:
    tracker = AlertTracker("door", rule(), LABELS)
    events = feed(tracker, [(0.0, "falling", 0.9), (0.8, "falling", 0.7),  # dip: count again
                            (1.2, "falling", 0.9), (2.0, "falling", 0.9)])
    assert events == []  # 0.8 s since the dip
    events = feed(tracker, [(2.2, "falling", 0.9), (3.0, "falling", 0.6),
                            (3.5, "falling", 0.9)])
    assert [e["phase"] for e in events] == ["start"] and events[0]["media_ts"] == 2.2
    assert tracker.active == "falling"  # 0.6 while still the stable label: goes on


def test_only_matching_labels_alert_and_any_matches_all() -> None:
    steps = [(t / 2, "walking", 0.95) for t in range(6)]
    assert feed(AlertTracker("s", rule(), LABELS), steps) == []
    events = feed(AlertTracker("s", rule(labels="any"), LABELS), steps)
    assert [(e["phase"], e["label"]) for e in events] == [("start", "walking")]


def test_cooldown_holds_back_the_same_label_only() -> None:
    tracker = AlertTracker("s", rule(labels="any", min_duration_s=0.0, cooldown_s=10.0),
                           LABELS)
    events = feed(tracker, [(0.0, "falling", 0.9), (1.0, None, 0.0),  # first alert: 0-1 s
                            (2.0, "falling", 0.9), (3.0, "walking", 0.9),
                            (4.0, None, 0.0), (9.0, "falling", 0.9),
                            (10.5, "falling", 0.9), (11.5, "falling", 0.9)])
    assert [(e["phase"], e["label"], e["media_ts"]) for e in events] == [
        ("start", "falling", 0.0), ("end", "falling", 1.0),
        ("start", "walking", 3.0), ("end", "walking", 4.0),  # another label: no cooldown
        ("start", "falling", 11.5)]  # falling held back until 1.0 + 10 s
    ids = [e["alert_id"] for e in events if e["phase"] == "start"]
    assert len(set(ids)) == 3 and ids == sorted(ids)


def test_finish_ends_an_open_alert_with_its_reason_and_the_clip_paths(tmp_path: Path) -> None:
    clips = ClipsConfig(dir=str(tmp_path / "clips"))
    tracker = AlertTracker("door", rule(min_duration_s=0.0), LABELS, clips)
    [start] = feed(tracker, [(5.0, "falling", 0.9)])
    assert "clip" not in start
    [end] = [e.as_dict() for e in tracker.finish("stopped", ts=2_000_000.0)]
    assert end["phase"] == "end" and end["reason"] == "stopped" and end["media_ts"] == 5.0
    assert (end["clip"], end["snapshot"]) == clips.paths("door", start["alert_id"])
    assert end["clip"].endswith(f"door-{start['alert_id']}.mp4")
    assert tracker.finish("stopped", ts=2_000_001.0) == []  # nothing open any more
    # After a reset the label must qualify for min_duration again.
    tracker = AlertTracker("door", rule(), LABELS)
    assert feed(tracker, [(0.0, "falling", 0.9)]) == []
    assert tracker.finish("reset", ts=1.0) == []
    assert feed(tracker, [(1.0, "falling", 0.9), (1.5, "falling", 0.9)]) == []


def test_with_a_real_smoother_on_synthetic_predictions() -> None:
    """Noisy clips through the smoother's hysteresis: one alert, ending when the label does."""
    rng = np.random.default_rng(0)
    smoother = Smoother(LABELS, window=3, threshold=0.5, start_after=2)
    tracker = AlertTracker("s", rule(min_duration_s=2.0, min_score=0.7), LABELS)
    events: list[dict[str, Any]] = []
    for i in range(30):  # a clip every 0.5 s: falling for 8 s, then sitting
        base = probs("falling" if i < 16 else "sitting", 0.85)
        clip = np.clip(base + rng.normal(0, 0.03, 3), 0, 1).astype(np.float32)
        res = smoother.update(clip)
        events += [e.as_dict() for e in tracker.update(i * 0.5, res.stable_label, res.probs,
                                                       ts=float(i), window_end=float(i))]
    assert [e["phase"] for e in events] == ["start", "end"]
    # stable from clip 1 (start_after 2), alert 2 s later; ends when sitting takes over.
    assert events[0]["media_ts"] == 2.5 and 8.0 <= events[1]["media_ts"] <= 9.5
    assert 0.8 <= events[1]["max_score"] <= 0.95


def test_alert_ids_are_unique_sortable_and_file_name_safe() -> None:
    ids = [new_alert_id(1_764_670_500.0 + i * 0.0004) for i in range(50)]
    assert len(set(ids)) == 50 and ids == sorted(ids)
    assert all(ID.match(i) for i in ids) and ids[0].startswith("20251202T101500.000Z-")


def test_bad_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="min_score"):
        AlertRule(min_score=2)
    with pytest.raises(ConfigError, match="AlertRule"):
        AlertTracker("s", {"labels": "any"}, LABELS)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'faling' is not a label.*did you mean 'falling'"):
        AlertTracker("s", rule(labels=["faling"]), LABELS)


def test_a_rule_with_an_unknown_label_fails_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'walking'"):
        alert_pipeline(alert_config(tmp_path, alerts={"labels": ["Walking"]}))


# -- in a live run ------------------------------------------------------------------------
def test_a_live_run_logs_alerts_and_alerts_only_sinks_get_only_them(tmp_path: Path) -> None:
    alerts: list[Event] = []
    config = alert_config(tmp_path, clips=str(tmp_path / "clips"))
    pipe = alert_pipeline(config)
    pipe.add_sink(alerts.append, "alerts", types={EventType.ALERT})
    result = pipe.run(duration_s=60.0)
    assert result.streams[STREAM].windows == 11
    log = read_events(tmp_path / "ev.jsonl")
    kinds = [e["type"] for e in log]
    assert kinds.count("prediction") == 11  # the log keeps every event, alerts among them
    logged = [e for e in log if e["type"] == "alert"]
    assert [a.as_dict() for a in alerts] == logged  # the sink got the alerts and only them
    start, end = logged
    preds = [e for e in log if e["type"] == "prediction"]
    # Window 2 (media 1.567 + 1.6) starts it, window 6 (walking) ends it.
    assert start["phase"] == "start" and start["media_ts"] == pytest.approx(3.167, abs=1e-3)
    assert start["window_end"] == pytest.approx(preds[2]["window_end"], abs=1e-6)
    assert start["ts"] == preds[2]["ts"] and start["seq"] > preds[2]["seq"]
    assert end["phase"] == "end" and end["reason"] == "label"
    assert end["media_ts"] == pytest.approx(6.367, abs=1e-3)
    assert end["duration_s"] == pytest.approx(3.2, abs=1e-3)
    assert start["max_score"] == end["max_score"] == pytest.approx(0.9)
    clip, snapshot = config.clips.paths(STREAM, start["alert_id"])  # type: ignore[union-attr]
    assert (end["clip"], end["snapshot"]) == (clip, snapshot)
    label_end = next(e for e in log if e["type"] == "label_end")
    assert label_end["seq"] < end["seq"]  # the label ends, then the alert


def test_an_open_alert_ends_before_stopped(tmp_path: Path) -> None:
    config = alert_config(tmp_path)
    alert_pipeline(config, script=[[0.9, 0.05, 0.05]]).run(duration_s=60.0)
    log = read_events(tmp_path / "ev.jsonl")
    tail = [(e["type"], e.get("phase"), e.get("reason")) for e in log[-3:]]
    assert tail == [("label_end", None, None), ("alert", "end", "stopped"),
                    ("stopped", None, None)]
    starts = [e for e in log if e.get("phase") == "start"]
    assert len(starts) == 1 and "clip" not in log[-2]  # clips off: no paths


def test_streams_without_a_rule_raise_no_alerts(tmp_path: Path) -> None:
    run_alerts(tmp_path, alerts=None)
    log = read_events(tmp_path / "ev.jsonl")
    assert [e["type"] for e in log].count("label_start") == 2  # the labels came and went
    assert not any(e["type"] == "alert" for e in log)
