"""Run configs: shipped files load; bad input is one clear ConfigError."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streamclf.config import RunConfig, StreamConfig, load_config, stream_keys
from streamclf.errors import ConfigError
from tests.conftest import REPO

RUN_KEYS = frozenset(f.name for f in dataclasses.fields(RunConfig)) - {"streams"}


def build(values: dict[str, object]) -> RunConfig:
    """``values`` as the top level of a YAML file, through :func:`load_config` (a stream
    without a ``source`` gets one)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "c.yaml")
        path.write_text(yaml.safe_dump({"source": "a.mp4", **values}))
        return load_config(path)


def construct(values: dict[str, object]) -> RunConfig:
    """``values`` given to the dataclasses directly (stream keys and unknown keys to the
    stream, through :meth:`StreamConfig.replace`, which checks the keys)."""
    run = {k: v for k, v in values.items() if k in RUN_KEYS}
    stream = {k: v for k, v in values.items() if k not in RUN_KEYS}
    streams = [StreamConfig(source="a.mp4").replace(**stream)]
    return RunConfig(**run, streams=streams)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [p for p in sorted((REPO / "configs").glob("*.yaml"))
                                  if "\nstreams:" not in p.read_text()], ids=lambda p: p.name)
def test_shipped_configs_load(path: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-stream configs (multi-stream ones: tests/test_streams_config.py), from any
    working directory: a file they name is found next to the config."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    (stream,) = cfg.streams
    assert stream.source != "" and cfg.model
    if "://" not in stream.source and not stream.source.isdigit():
        assert Path(stream.source).is_file(), stream.source


def test_flags_override_yaml(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("source: a.mp4\ntopk: 3\nstride: 0.5\n")
    cfg = load_config(f, {"topk": 7, "stride": None, "quiet": True})
    (stream,) = cfg.streams
    assert (stream.source, stream.topk, stream.stride, cfg.quiet) == (
        str(tmp_path / "a.mp4"), 7, 0.5, True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("source: a.mp4\ntopk: 0\n", "'topk' must be between 1 and 1000, got 0"),
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
    """Any mapping either validates into a RunConfig or raises a ConfigError, nothing else:
    as a YAML file and given to the dataclasses."""
    for make in (build, construct):
        try:
            assert isinstance(make(values), RunConfig)
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
        cfg = StreamConfig(source="rtsp://cam/x", **values)  # type: ignore[arg-type]
    except ConfigError:
        assert not ok
        return
    assert ok and (cfg.backoff_initial_s, cfg.backoff_max_s) == (initial, cap)
    assert cfg.max_reconnects == reconnects


def test_reconnect_defaults_and_flags(tmp_path: Path) -> None:
    cfg = StreamConfig(source="rtsp://cam/x")
    assert cfg.max_reconnects is None  # unlimited
    assert (cfg.backoff_initial_s, cfg.backoff_max_s) == (1.0, 30.0)
    assert cfg.read_timeout_ms <= 5000  # the frame watchdog
    f = tmp_path / "c.yaml"
    f.write_text("source: rtsp://cam/x\nmax_reconnects: 3\nbackoff_max_s: 5\n")
    (stream,) = load_config(f, {"max_reconnects": 0, "backoff_initial_s": 0.5}).streams
    assert (stream.max_reconnects, stream.backoff_initial_s, stream.backoff_max_s) == (
        0, 0.5, 5.0)


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths in a YAML file are relative to that file, whatever the working directory;
    URLs, cameras, synthetic sources, zoo weights and absolute paths stay as written, and
    command-line values stay relative to the working directory."""
    sub = tmp_path / "site" / "configs"
    sub.mkdir(parents=True)
    (sub / "ckpt.pyth").write_bytes(b"x")
    absolute = tmp_path / "abs.jsonl"
    config = sub / "run.yaml"
    config.write_text(
        "source: clip.mp4\nevents: ev.jsonl\nclassmap: labels.json\nweights: ckpt.pyth\n"
        "output: out/{stream}.mp4\nid: door\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config)
    (door,) = cfg.streams
    assert door.source == str(sub / "clip.mp4")
    assert cfg.events == str(sub / "ev.jsonl")
    assert cfg.classmap == str(sub / "labels.json")
    assert cfg.weights == str(sub / "ckpt.pyth")  # a checkpoint that exists there
    assert door.output == str(sub / "out" / "door.mp4")
    # The same file loaded through a relative path from its parent folder.
    monkeypatch.chdir(tmp_path / "site")
    assert load_config(Path("configs/run.yaml")) == cfg

    multi = sub / "multi.yaml"
    multi.write_text(
        f"events: {absolute}\nweights: random\nstreams:\n"
        "  - {id: a, source: clip.mp4}\n"
        "  - {id: b, source: 'rtsp://u:p@10.0.0.5/s'}\n"
        "  - {id: c, source: '0'}\n"
        "  - {id: d, source: 'synthetic:64x48@10'}\n"
        "  - {id: e, source: /dev/video2}\n"
        "  - {id: f, source: 'https://h/x.mjpg'}\n"
        "  - {id: g, source: synthetic_clip.mp4}\n")
    cfg = load_config(multi)
    assert [s.source for s in cfg.streams] == [
        str(sub / "clip.mp4"), "rtsp://u:p@10.0.0.5/s", "0", "synthetic:64x48@10",
        "/dev/video2", "https://h/x.mjpg", str(sub / "synthetic_clip.mp4")]
    assert (cfg.events, cfg.weights) == (str(absolute), "random")
    missing = sub / "missing.yaml"
    missing.write_text("source: clip.mp4\nweights: nope.pyth\n")
    assert load_config(missing).weights == "nope.pyth"  # not a file there: left as written
    # Command-line values are the user's, relative to where they run it.
    cfg = load_config(config, {"events": "cli.jsonl", "output": "cli.mp4"})
    assert (cfg.events, cfg.streams[0].output) == ("cli.jsonl", "cli.mp4")


def test_unknown_keys_suggest_the_closest(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    cases = {
        "source: a.mp4\nstrid: 1\n": "unknown config key 'strid'; did you mean 'stride'?",
        "source: a.mp4\nmax_batchs: 2\n":
            "unknown config key 'max_batchs'; did you mean 'max_batch'?",
        "streams:\n  - {id: a, source: x, treshold: 0.3}\n":
            "unknown streams[0] key 'treshold'; did you mean 'threshold'?",
    }
    for text, message in cases.items():
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(f)
    with pytest.raises(ConfigError, match=r"unknown option key 'thresold'; did you mean "
                                          r"'threshold'\?"):
        load_config(None, {"thresold": 0.5}, ["a.mp4"])
    with pytest.raises(ConfigError, match=r"unknown stream key 'loops'; did you mean 'loop'\?"):
        StreamConfig(source="a.mp4").replace(loops=True)
    f.write_text("source: a.mp4\ncolour: red\n")  # nothing close: the allowed keys
    with pytest.raises(ConfigError, match=r"unknown config key 'colour'; allowed: .*threshold"):
        load_config(f)


def test_stream_placeholder_in_output(tmp_path: Path) -> None:
    """``{stream}`` in ``output`` becomes each stream's id, so one default serves all."""
    assert StreamConfig(id="door", source="x", output="o-{stream}.mp4").output == "o-door.mp4"
    f = tmp_path / "c.yaml"
    f.write_text("output: overlay-{stream}.mp4\nstreams:\n  - {id: door, source: a.mp4}\n"
                 "  - {id: hall, source: b.mp4}\n  - {id: yard, source: c.mp4, "
                 "output: own.mp4}\n")
    cfg = load_config(f)
    assert [s.output for s in cfg.streams] == [
        str(tmp_path / "overlay-door.mp4"), str(tmp_path / "overlay-hall.mp4"),
        str(tmp_path / "own.mp4")]
    cfg = load_config(None, {"output": "{stream}.mp4"}, ["a=x.mp4", "b=y.mp4"])
    assert [s.output for s in cfg.streams] == ["a.mp4", "b.mp4"]
    with pytest.raises(ConfigError, match="same output video"):
        load_config(None, {"output": "one.mp4"}, ["a=x.mp4", "b=y.mp4"])


def test_id_replaces_stream_id(tmp_path: Path) -> None:
    """The stream's name is ``id`` (``--stream-id`` on the command line)."""
    f = tmp_path / "c.yaml"
    f.write_text("source: a.mp4\nid: front\n")
    assert [s.id for s in load_config(f).streams] == ["front"]
    assert [s.id for s in load_config(None, {"id": "side"}, ["a.mp4"]).streams] == ["side"]
    assert stream_keys() >= {"id", "source"} and "stream_id" not in stream_keys()
    f.write_text("source: a.mp4\nstream_id: front\n")
    with pytest.raises(ConfigError, match="config key 'stream_id' is now 'id'"):
        load_config(f)
    f.write_text("streams:\n  - {stream_id: front, source: a.mp4}\n")
    with pytest.raises(ConfigError, match=r"streams\[0\] key 'stream_id' is now 'id'"):
        load_config(f)


def _alias_bomb(levels: int = 9) -> str:
    """A 'billion laughs': each level lists the previous one nine times (9**9 strings)."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nsource: *l{levels - 1}\n"


@pytest.mark.parametrize(("text", "needle"), [
    (_alias_bomb(), "expands to more than 100000 values"),
    ("source: " + "[" * 30_000 + "\n", "nested more than 64 levels deep"),
    ("source: a.mp4\n#" + "x" * (2 << 20) + "\n", "the limit is 1048576"),
    ("source: a.mp4\nstride: " + "9" * 5000 + "x\n", "must be a number"),
    ("source: a.mp4\nloop: [" + ", ".join(["1"] * 5000) + "]\n", "must be true or false"),
])
def test_hostile_yaml_is_one_short_error(tmp_path: Path, text: str, needle: str) -> None:
    """An alias bomb once grew start-up past 1.9 GB (the error repr'd the whole value); deep
    nesting overflowed the stack. Each is now refused with one line that echoes at most 80
    characters of a value."""
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(f)
    message = str(info.value)
    assert "\n" not in message and len(message) < 120 + len(str(f))
