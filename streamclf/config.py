"""The one config schema: a run (:class:`RunConfig`) of one or more streams (:class:`StreamConfig`).

Each key is declared once, as a dataclass field whose metadata says what it accepts
(``help``, ``choices``, ``range``, ``positive``, ``path``, ``flag``). Validation, the YAML
loader and the command-line flags (:mod:`streamclf.cli.flags`) are all driven by it. Every
bad value raises :class:`~streamclf.errors.ConfigError` naming the key and what is allowed;
unknown keys are errors too, with a "did you mean".

YAML layout (per-stream keys at the top level are every stream's defaults; without
``streams:``, ``source`` and ``id`` at the top level make the one stream)::

    model: x3d_xs
    events: events.jsonl        # paths are relative to this file
    threshold: 0.3              # default for every stream
    streams:
      - {id: door, source: "rtsp://user:pass@10.0.0.5/stream1"}
      - {id: hall, source: hall.mp4, loop: true, output: "overlay-{stream}.mp4"}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamclf.errors import ConfigError
from streamclf.sections import (
    AlertRule,
    ClipsConfig,
    MqttConfig,
    WebhookConfig,
    build_section,
    parse_roi,
)

#: The inference backends (``auto``: the fastest measured here) and precisions: the schema's
#: choices, the flags' and the factory's.
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

__all__ = ["RunConfig", "StreamConfig", "load_config", "read_yaml_mapping", "stream_keys"]

#: The one stream-id rule (configs, flags, the HTTP API): it names files, topics and URLs.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAMED_SOURCE = re.compile(r"^([A-Za-z0-9_-]{1,64})=(.+)$")


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def _check_type(key: str, value: Any, expected: str) -> Any:
    if value is None:
        if "None" in expected:
            return None
        raise ConfigError(f"config key {key!r} must not be empty")
    if "bool" in expected:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {_short(value)}")
        return value
    if "float" in expected:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {_short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {_short(value)}")
        return float(value)
    if "int" in expected:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {_short(value)}")
        return value
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be a string, got {_short(value)}")
    return str(value)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _validate(obj: Any) -> None:
    """Check and normalise every field of a frozen config dataclass from its metadata."""
    for f in dataclasses.fields(obj):
        if f.name == "streams":
            continue
        meta, key = f.metadata, f.name
        if "parse" in meta:  # a nested section or a structured value (streamclf.sections)
            raw = getattr(obj, key)
            object.__setattr__(obj, key, None if raw is None else meta["parse"](raw))
            continue
        value = _check_type(key, getattr(obj, key), str(f.type))
        if value is not None:
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f"config key {key!r} must be one of "
                                  f"{', '.join(map(str, meta['choices']))}, got {_short(value)}")
            if "range" in meta:
                lo, hi = meta["range"]
                if value < lo or (hi is not None and value > hi):
                    bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
                    raise ConfigError(f"config key {key!r} must be {bound}, got {_short(value)}")
            if meta.get("positive") and value <= 0:
                raise ConfigError(f"config key {key!r} must be > 0, got {_short(value)}")
        object.__setattr__(obj, key, value)


@dataclass(frozen=True)
class StreamConfig:
    """One stream's settings. Validated on construction (raises ConfigError)."""

    id: str = _f("cam0", "stream id: 1-64 letters, digits, '_' or '-'", flag="--stream-id")
    source: str = _f("", "webcam index or /dev/videoN, rtsp://, http(s)://, a file, or "
                         "synthetic[:WxH@FPS]", flag=None)
    pace: str = _f("realtime", "files: realtime (like a camera) or fast (lossless, every "
                               "window)", choices=("realtime", "fast"))
    loop: bool = _f(False, "replay a file forever")
    stride: float | None = _f(None, "seconds between clips (default: half a clip)",
                              positive=True)
    topk: int = _f(5, "labels reported per clip", range=(1, 1000))
    smooth: int = _f(3, "clips averaged", range=(1, 1000))
    threshold: float = _f(0.2, "lowest smoothed score that shows or starts a label",
                          range=(0.0, 1.0))
    start_after: int = _f(2, "consecutive wins before a label starts", range=(1, 1000))
    transport: str = _f("tcp", "RTSP transport", choices=("tcp", "udp"))
    decoder: str = _f("auto", "files and feeds: auto (PyAV; OpenCV for webcams), pyav or "
                              "opencv", choices=("auto", "pyav", "opencv"))
    decode_threads: int = _f(1, "PyAV decoder threads (0: FFmpeg picks)", range=(0, 64))
    ring_mb: float = _f(256.0, "the most memory one stream's frame ring holds (decoded and "
                               "converted frames); past it the oldest go", range=(16.0, 65_536.0))
    open_timeout_ms: int = _f(5000, "longest wait to open a network source",
                              range=(100, 600_000))
    read_timeout_ms: int = _f(3000, "frame watchdog: a live source silent this long is lost "
                                    "(then reconnected)", range=(100, 600_000))
    max_reconnects: int | None = _f(None, "failed reconnects in a row before a live source "
                                          "gives up (default: never; 0: at the first loss)",
                                    range=(0, None))
    backoff_initial_s: float = _f(1.0, "first reconnect wait, doubled per failure",
                                  range=(0.01, 3600.0), flag="--backoff-initial")
    backoff_max_s: float = _f(30.0, "longest reconnect wait", range=(0.01, 86_400.0),
                              flag="--backoff-max")
    backoff_jitter: float = _f(0.2, "each reconnect wait times a random factor in 1 +- this",
                               range=(0.0, 0.9))
    output: str | None = _f(None, "write the overlay video here ({stream}: the stream id)",
                            path=True)
    display: bool = _f(False, "show the overlay in a window")
    roi: tuple[float, float, float, float] | None = _f(
        None, "region of interest x,y,w,h: fractions of the frame, or pixels when > 1; the "
              "model sees only it", parse=parse_roi, metavar="X,Y,W,H")
    alerts: AlertRule | None = _f(  # noqa: RUF009 - field() with metadata
        None, "alert rule: labels, min_score, min_duration_s, cooldown_s",
        parse=lambda v: build_section(AlertRule, v, "alerts"), flag=None)

    def __post_init__(self) -> None:
        _validate(self)
        if not _ID.fullmatch(self.id):  # fullmatch: "$" would let "cam\n" through
            raise ConfigError(f"stream id {_short(self.id)}: use 1-64 letters, digits, '_' "
                              "or '-'")
        if not self.source:
            raise ConfigError(f"stream {self.id!r} has no source")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ConfigError(f"config key 'backoff_initial_s' ({self.backoff_initial_s:g} s) "
                              f"must not exceed 'backoff_max_s' ({self.backoff_max_s:g} s)")
        if self.output is not None and "{stream}" in self.output:
            object.__setattr__(self, "output", self.output.replace("{stream}", self.id))

    @property
    def stream_id(self) -> str:
        return self.id

    def replace(self, **changes: Any) -> StreamConfig:
        """A copy with some keys changed (validated; unknown keys raise ConfigError)."""
        _check_keys(changes, stream_keys(), "stream")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RunConfig:
    """A run: the model and outputs every stream shares, and the streams. Validated on
    construction (raises ConfigError)."""

    model: str = _f("x3d_xs", "zoo model name (see `streamclf models`)")
    weights: str = _f("kinetics400", "kinetics400 (downloaded once), a checkpoint PATH, or "
                                     "random")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    backend: str = _f("auto", "inference backend (auto: the fastest measured here)",
                      choices=BACKENDS)
    precision: str = _f("fp32", "fp32; int8 (openvino); fp16/bf16 (torch autocast)",
                        choices=PRECISIONS)
    torch_compile: bool = _f(False, "torch backend: wrap the network in torch.compile")
    classmap: str | None = _f(None, "JSON/text file replacing the label list", path=True)
    threads: int | None = _f(None, "inference threads (default: all cores but one)",
                             range=(1, 256))
    max_batch: int = _f(4, "windows per model call, at most one per stream", range=(1, 256))
    max_wait_ms: float = _f(10.0, "longest wait for a batch to fill", range=(0.0, 10_000.0))
    events: str | None = _f(None, "JSON Lines event log", path=True)
    events_max_bytes: int | None = _f(None, "rotate the event log at this size",
                                      range=(1024, None))
    webhook: WebhookConfig | None = _f(  # noqa: RUF009 - field() with metadata
        None, "POST events as JSON to this http(s) URL (config: url, secret, alerts_only)",
        parse=lambda v: build_section(WebhookConfig, {"url": v} if isinstance(v, str) else v,
                                      "webhook"), metavar="URL")
    db: str | None = _f(None, "SQLite event store of labels and alerts", path=True)
    mqtt: MqttConfig | None = _f(  # noqa: RUF009 - field() with metadata
        None, "MQTT broker for alerts and labels, mqtt://[user:pass@]host[:port] (config: "
              "url, prefix)",
        parse=lambda v: build_section(MqttConfig, {"url": v} if isinstance(v, str) else v,
                                      "mqtt"), metavar="URL")
    clips: ClipsConfig | None = _f(  # noqa: RUF009 - field() with metadata
        None, "folder of alert clips and snapshots (config: dir, pre_s, post_s, max_gb, "
              "max_days)",
        parse=lambda v: build_section(ClipsConfig, {"dir": v} if isinstance(v, str) else v,
                                      "clips"), metavar="DIR")
    duration: float | None = _f(None, "stop after this many seconds", positive=True)
    quiet: bool = _f(False, "no status line")
    streams: Sequence[StreamConfig] = field(default=(), metadata={"help": "the streams"})

    def __post_init__(self) -> None:
        _validate(self)
        streams = self.streams
        if isinstance(streams, (str, bytes, Mapping)) or not isinstance(streams, Iterable):
            raise ConfigError("config key 'streams' must be a list of streams")
        items = tuple(streams)
        if not all(isinstance(s, StreamConfig) for s in items):
            raise ConfigError("config key 'streams' must hold StreamConfig items")
        object.__setattr__(self, "streams", items)
        ids = [s.id for s in items]
        dupes = sorted({s for s in ids if ids.count(s) > 1})
        if dupes:
            raise ConfigError(f"stream id {dupes[0]!r} is used twice; ids must be unique")
        outputs = [s.output for s in items if s.output]
        if len(set(outputs)) != len(outputs):
            raise ConfigError("two streams write the same output video; give each its own "
                              "(a {stream} placeholder in the path does it)")


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def stream_keys() -> frozenset[str]:
    """The keys a stream may set."""
    return frozenset(_fields(StreamConfig))


#: Keys of the first wave's configs, and what they are called now.
_RENAMED = {"stream_id": "id"}


def _check_keys(values: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = sorted(allowed)
    for key in values:
        if key in _RENAMED and _RENAMED[key] in allowed:
            raise ConfigError(f"{where} key {key!r} is now {_RENAMED[key]!r}")
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
            raise ConfigError(f"unknown {where} key {_short(key)}{hint}")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``).

    Raises:
        ConfigError: missing file, invalid YAML (with the line), too large or expanding
            too far (see :mod:`streamclf.safe_yaml`), not a mapping.
    """
    from streamclf.safe_yaml import load_yaml

    p = Path(path)
    data = load_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of keys to values")
    return data


def parse_source_arg(text: str, index: int) -> tuple[str, str]:
    """``"ID=SPEC"`` -> ``(ID, SPEC)``; a bare spec gets the id ``cam<index>``. A URL's own
    ``=`` (query strings) is not taken for a name: the name may not contain ``:`` or ``/``."""
    match = _NAMED_SOURCE.fullmatch(text)
    if match and "://" not in match.group(1):
        return match.group(1), match.group(2)
    return f"cam{index}", text


def _relative_to(base: Path, values: dict[str, Any], cls: type) -> None:
    """Make the path keys of ``values`` (and a file ``source``, and the clips folder)
    relative to ``base``."""
    clips = values.get("clips")
    if cls is RunConfig and isinstance(clips, Mapping) and isinstance(clips.get("dir"), str) \
            and not Path(clips["dir"]).is_absolute():
        values["clips"] = {**clips, "dir": str(base / clips["dir"])}
    elif cls is RunConfig and isinstance(clips, str) and not Path(clips).is_absolute():
        values["clips"] = str(base / clips)
    for key, f in _fields(cls).items():
        value = values.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        is_file = key == "source" and _is_file_source(value)
        is_checkpoint = key == "weights" and value not in ("kinetics400", "random") \
            and (base / value).exists()
        if f.metadata.get("path") or is_file or is_checkpoint:
            values[key] = str(base / value)


def _is_file_source(spec: str) -> bool:
    """The source rule of :func:`~streamclf.media.sources.parse_spec`: a file path, not a
    webcam, URL or ``synthetic`` spec (``synthetic_clip.mp4`` is a file)."""
    from streamclf.errors import SourceError
    from streamclf.media.sources import parse_spec

    try:
        kind, _ = parse_spec(spec)
    except SourceError:
        return False  # an unsupported URL: reported when the stream is built
    return kind == "file" and "://" not in spec


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    _check_keys(values, _fields(cls), where)
    try:
        return cls(**values)
    except TypeError as exc:  # e.g. a YAML mapping where a value was expected
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                sources: Sequence[str] | None = None) -> RunConfig:
    """Read a YAML config (optional) and apply command-line values.

    Args:
        path: the YAML file; its relative paths resolve against its folder.
        overrides: command-line values (``None`` = not given); they win over the file's top
            level and over every stream's own item. Stream keys apply to every stream.
        sources: ``--source`` values (``ID=SPEC`` or ``SPEC``); when given they replace the
            file's streams.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, bad value, no source,
            duplicate ids.
    """
    top: dict[str, Any] = dict(read_yaml_mapping(path)) if path is not None else {}
    run_keys, s_keys = set(_fields(RunConfig)) - {"streams"}, stream_keys()
    _check_keys(top, run_keys | s_keys | {"streams"}, "config")
    raw_items = top.pop("streams", None)
    base = Path(path).resolve().parent if path is not None else None
    if base is not None:
        _relative_to(base, top, RunConfig)
        _relative_to(base, top, StreamConfig)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(flags, run_keys | s_keys, "option")
    run_values = {k: v for k, v in {**top, **flags}.items() if k in run_keys}
    defaults = {k: v for k, v in top.items() if k in s_keys and k not in ("id", "source")}
    stream_flags = {k: v for k, v in flags.items() if k in s_keys}
    items: list[dict[str, Any]]
    if sources:
        items = []
        for i, text in enumerate(sources):
            sid, spec = parse_source_arg(text, i)
            items.append({"id": sid, "source": spec})
        if len(items) == 1 and "id" in stream_flags:
            items[0]["id"] = stream_flags["id"]
        stream_flags.pop("id", None)
    elif raw_items is not None:
        if not isinstance(raw_items, list) or not raw_items:
            raise ConfigError("config key 'streams' must be a non-empty list of "
                              "{id, source, ...} mappings")
        items = []
        for i, item in enumerate(raw_items):
            if not isinstance(item, Mapping):
                raise ConfigError(f"streams[{i}] must be a mapping with 'id' and 'source'")
            entry = dict(item)
            _check_keys(entry, s_keys, f"streams[{i}]")
            if base is not None:
                _relative_to(base, entry, StreamConfig)
            entry.setdefault("id", f"cam{i}")
            items.append(entry)
        stream_flags.pop("id", None)
    else:
        if top.get("source") in (None, ""):
            raise ConfigError("no source: pass --source or set 'source' (or 'streams') in "
                              "the config")
        items = [{"id": top.get("id", "cam0"), "source": top["source"]}]
    streams = []
    for i, item in enumerate(items):
        values = {**defaults, **item, **stream_flags}
        sid = values.get("id", f"cam{i}")
        try:
            streams.append(_build(StreamConfig, values, f"stream {sid!s}"))
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith("stream ") else
                              f"stream {str(sid)[:64]!r}: {message}") from None
    return _build(RunConfig, {**run_values, "streams": tuple(streams)}, "config")
