"""Multi-stream configs: ``streams:`` lists, repeated ``--source``, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamclf.config import load_config, parse_source_arg
from streamclf.errors import ConfigError
from tests.conftest import REPO

MULTI = """
model: x3d_s
events: ev.jsonl
pace: fast
threshold: 0.25
max_batch: 8
max_wait_ms: 20
streams:
  - id: door
    source: rtsp://u:p@127.0.0.1:8554/door
  - id: hall
    source: hall.mp4
    loop: true
    threshold: 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_streams_list_merges_top_level_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MULTI), {"weights": "random", "model": None})
    door, hall = cfg.streams
    assert (cfg.max_batch, cfg.max_wait_ms) == (8, 20)
    assert door.id == "door" and door.source.startswith("rtsp://")
    assert hall.id == "hall" and hall.loop and not door.loop
    assert hall.source == str(tmp_path / "hall.mp4")  # relative to the config file
    assert (door.threshold, hall.threshold) == (0.25, 0.5)
    assert (cfg.model, cfg.weights, cfg.events) == ("x3d_s", "random", str(tmp_path / "ev.jsonl"))
    for c in cfg.streams:
        assert c.pace == "fast"


def test_repeated_sources_replace_the_file_streams(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MULTI), {}, ["a.mp4", "yard=b.mp4", "http://h/x?a=b"])
    assert [(c.id, c.source) for c in cfg.streams] == [
        ("cam0", "a.mp4"), ("yard", "b.mp4"), ("cam2", "http://h/x?a=b")]
    single = load_config(None, {"id": "front"}, ["a.mp4"])
    assert [c.id for c in single.streams] == ["front"]


def test_single_stream_file_still_works(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "source: a.mp4\nid: one\n"), {})
    assert [(c.id, c.source) for c in cfg.streams] == [("one", str(tmp_path / "a.mp4"))]
    assert (cfg.max_batch, cfg.max_wait_ms) == (4, 10.0)


def test_parse_source_arg() -> None:
    assert parse_source_arg("door=rtsp://h/x", 3) == ("door", "rtsp://h/x")
    assert parse_source_arg("rtsp://h/x?a=b", 3) == ("cam3", "rtsp://h/x?a=b")
    assert parse_source_arg("0", 1) == ("cam1", "0")


@pytest.mark.parametrize(("text", "message"), [
    ("streams: []\n", "non-empty list"),
    ("streams:\n  - id: a\n", "stream 'a' has no source"),
    ("streams:\n  - {id: a, source: x, model: x3d_m}\n", r"unknown streams\[0\] key 'model'"),
    ("streams:\n  - {id: a, source: x}\n  - {id: a, source: y}\n", "'a' is used twice"),
    ("streams:\n  - {id: 'a b', source: x}\n", "stream id 'a b'"),
    ("streams:\n  - {id: a, source: x, threshold: 2}\n", "stream 'a': config key 'threshold'"),
    ("max_batch: 0\nsource: x\n", "'max_batch' must be between 1 and 256"),
    ("max_wait_ms: -1\nsource: x\n", "'max_wait_ms' must be between"),
    ("max_batch: 2.5\nsource: x\n", "'max_batch' must be an integer"),
    ("streams:\n  - {id: a, source: x, output: o.mp4}\n  - {id: b, source: y, output: o.mp4}\n",
     "same output video"),
    ("model: x3d_xs\n", "no source"),
])
def test_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shipped config loads from any working directory; a file it names exists."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, {})
    assert cfg.streams and all(c.source for c in cfg.streams)
    for c in cfg.streams:
        if "://" not in c.source and not c.source.isdigit():
            assert Path(c.source).is_file(), c.source
