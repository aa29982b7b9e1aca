"""Run configs: shipped files load; bad input is one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamclf.config import RunConfig, load_config, validate
from streamclf.errors import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("path", [p for p in sorted((REPO / "configs").glob("*.yaml"))
                                  if "\nstreams:" not in p.read_text()], ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    """Single-stream configs (multi-stream ones: tests/test_streams_config.py)."""
    cfg = load_config(path)
    assert cfg.source != "" and cfg.model


def test_flags_override_yaml(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("source: a.mp4\ntopk: 3\nstride: 0.5\n")
    cfg = load_config(f, {"topk": 7, "stride": None, "quiet": True})
    assert (cfg.source, cfg.topk, cfg.stride, cfg.quiet) == ("a.mp4", 7, 0.5, True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("source: a.mp4\ntopk: 0\n", "'topk' must be >= 1"),
        ("source: a.mp4\nthreshold: 1.5\n", "'threshold' must be between"),
        ("source: a.mp4\npace: slow\n", "'pace' must be one of realtime, fast"),
        ("source: a.mp4\nstrid: 1\n", "unknown config key 'strid'"),
        ("source: a.mp4\nloop: yes please\n", "'loop' must be true or false"),
        ("source: a.mp4\nstride: -1\n", "'stride' must be > 0"),
        ("source: a.mp4\nthreshold: .nan\n", "'threshold' must be a finite number"),
        ("source: [a.mp4\n", "invalid YAML at line"),
        ("- a\n- b\n", "expected a mapping"),
        ("topk: 3\n", "no source"),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config(f)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@given(st.dictionaries(st.sampled_from(["topk", "smooth", "threshold", "stride", "loop",
                                        "pace", "source", "duration", "bogus", "max_reconnects",
                                        "backoff_initial_s", "backoff_max_s",
                                        "read_timeout_ms"]),
                       st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.just(float("nan")),
                                 st.booleans(), st.text(max_size=5), st.none())))
def test_validate_never_crashes(values: dict[str, object]) -> None:
    """Any mapping either validates into a RunConfig or raises a ConfigError, nothing else."""
    try:
        assert isinstance(validate(values), RunConfig)
    except ConfigError as exc:
        assert str(exc)


@settings(derandomize=True)
@given(initial=st.floats(0.0, 100.0), cap=st.floats(0.0, 100.0),
       reconnects=st.one_of(st.none(), st.integers(-3, 1000)))
def test_reconnect_settings(initial: float, cap: float, reconnects: int | None) -> None:
    """Backoff and reconnect limits are accepted exactly when CaptureThread can use them."""
    values = {"backoff_initial_s": initial, "backoff_max_s": cap, "max_reconnects": reconnects}
    ok = 0.01 <= initial <= cap and (reconnects is None or reconnects >= 0)
    try:
        cfg = validate(values)
    except ConfigError:
        assert not ok
        return
    assert ok and (cfg.backoff_initial_s, cfg.backoff_max_s) == (initial, cap)
    assert cfg.max_reconnects == reconnects


def test_reconnect_defaults_and_flags(tmp_path: Path) -> None:
    cfg = RunConfig()
    assert cfg.max_reconnects is None  # unlimited
    assert (cfg.backoff_initial_s, cfg.backoff_max_s) == (1.0, 30.0)
    assert cfg.read_timeout_ms <= 5000  # the frame watchdog
    f = tmp_path / "c.yaml"
    f.write_text("source: rtsp://cam/x\nmax_reconnects: 3\nbackoff_max_s: 5\n")
    cfg = load_config(f, {"max_reconnects": 0, "backoff_initial_s": 0.5})
    assert (cfg.max_reconnects, cfg.backoff_initial_s, cfg.backoff_max_s) == (0, 0.5, 5.0)
