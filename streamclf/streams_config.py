"""Several streams in one run: a ``streams:`` list in the YAML, or ``--source`` repeated.

Config layout::

    model: x3d_xs            # shared keys: model, weights, device, backend, precision,
    weights: kinetics400     # classmap, threads, events, duration, quiet, ...
    events: events.jsonl     # one log for every stream; events carry the stream id
    max_batch: 4             # the shared inference worker batches ready windows ...
    max_wait_ms: 10          # ... waiting at most this long for a batch to fill
    pace: realtime           # a per-stream key at the top level is every stream's default
    streams:
      - id: door
        source: rtsp://user:pass@10.0.0.5/stream1
      - id: hall
        source: hall.mp4
        loop: true
        threshold: 0.3

Each stream's settings are the top-level values overridden by its own item, validated
like a single-stream config (:func:`streamclf.config.validate`). Without ``streams:`` the
file is a single-stream config (``source`` + ``stream_id``). On the command line
``--source`` may repeat; ``--source ID=SPEC`` names a stream (default ids ``cam0``,
``cam1``, ...).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamclf.config import RunConfig, read_yaml_mapping, validate
from streamclf.errors import ConfigError

__all__ = ["PER_STREAM_KEYS", "StreamsConfig", "load_streams_config", "parse_source_arg"]

#: Keys a ``streams:`` item may set (``id`` is the stream id).
PER_STREAM_KEYS = frozenset({
    "id", "source", "loop", "pace", "stride", "topk", "smooth", "threshold", "start_after",
    "transport", "open_timeout_ms", "read_timeout_ms", "max_reconnects", "backoff_initial_s",
    "backoff_max_s", "backoff_jitter", "output", "display",
})
_MULTI_KEYS = {"streams": None, "max_batch": (1, 256), "max_wait_ms": (0.0, 10_000.0)}
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAMED_SOURCE = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


@dataclass(frozen=True)
class StreamsConfig:
    """Every stream's validated :class:`RunConfig`, plus the shared worker's batching.

    ``streams[i].stream_id`` are unique. Shared settings (model, weights, events, ...)
    are equal in every stream's config.
    """

    streams: tuple[RunConfig, ...]
    max_batch: int = 4
    max_wait_ms: float = 10.0
    #: True when the streams came from a ``streams:`` list or several ``--source``: run
    #: them as a multi-stream run even if there is only one.
    listed: bool = False

    @property
    def shared(self) -> RunConfig:
        """The first stream's config: read the shared keys from it."""
        return self.streams[0]


def parse_source_arg(text: str, index: int) -> tuple[str, str]:
    """``"ID=SPEC"`` -> ``(ID, SPEC)``; a bare spec gets the id ``cam<index>``. A URL's own
    ``=`` (query strings) is not taken for a name: the name may not contain ``:`` or ``/``."""
    match = _NAMED_SOURCE.match(text)
    if match and "://" not in match.group(1):
        return match.group(1), match.group(2)
    return f"cam{index}", text


def _check_number(key: str, value: Any) -> float:
    lo, hi = _MULTI_KEYS[key]  # type: ignore[misc]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
    if key == "max_batch" and not isinstance(value, int):
        raise ConfigError(f"config key 'max_batch' must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"config key {key!r} must be between {lo:g} and {hi:g}, got {value!r}")
    return value


def _stream_items(raw: Any) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("config key 'streams' must be a non-empty list of "
                          "{id, source, ...} mappings")
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ConfigError(f"streams[{i}] must be a mapping with 'id' and 'source'")
        unknown = set(item) - PER_STREAM_KEYS
        if unknown:
            raise ConfigError(f"streams[{i}]: unknown key {sorted(unknown)[0]!r}; a stream may "
                              f"set: {', '.join(sorted(PER_STREAM_KEYS))}")
        if not item.get("source"):
            raise ConfigError(f"streams[{i}] has no 'source'")
    return raw


def load_streams_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None,
                        sources: Sequence[str] | None = None) -> StreamsConfig:
    """Read a single- or multi-stream YAML config and apply command-line values.

    Args:
        path: YAML file or None.
        overrides: command-line flags (``None`` = not given); they win over the file's
            top level and over every stream's own item.
        sources: ``--source`` values (``ID=SPEC`` or ``SPEC``); when given they replace the
            file's streams.

    Raises:
        ConfigError: as :func:`streamclf.config.load_config`, plus bad ``streams:`` items,
            duplicate ids, and bad ``max_batch``/``max_wait_ms``.
    """
    top = dict(read_yaml_mapping(path)) if path is not None else {}
    multi = {k: top.pop(k) for k in list(top) if k in _MULTI_KEYS}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in ("max_batch", "max_wait_ms"):
        if key in flags:
            multi[key] = flags.pop(key)
    flags.pop("source", None)
    flags.pop("stream_id", None)
    if sources:
        items: list[Mapping[str, Any]] = []
        for i, text in enumerate(sources):
            sid, spec = parse_source_arg(text, i)
            items.append({"id": sid, "source": spec})
        if len(items) == 1 and (overrides or {}).get("stream_id"):
            items = [{"id": overrides["stream_id"], "source": items[0]["source"]}]  # type: ignore[index]
    elif "streams" in multi:
        items = _stream_items(multi["streams"])
        top.pop("source", None)
        top.pop("stream_id", None)
    else:
        if top.get("source") in (None, ""):
            raise ConfigError("no source: pass --source or set 'source' (or 'streams') in "
                              "the config")
        items = [{"id": top.pop("stream_id", "cam0"), "source": top.pop("source")}]
    configs: list[RunConfig] = []
    for i, item in enumerate(items):
        values = {**top, **{k: v for k, v in item.items() if k != "id"}, **flags}
        sid = str(item.get("id", f"cam{i}"))
        if not _ID.match(sid):
            raise ConfigError(f"stream id {sid!r}: use 1-64 letters, digits, '_', '-' or '.'")
        values["stream_id"] = sid
        try:
            configs.append(validate(values))
        except ConfigError as exc:
            raise ConfigError(f"stream {sid!r}: {exc}") from None
    ids = [c.stream_id for c in configs]
    dupes = sorted({s for s in ids if ids.count(s) > 1})
    if dupes:
        raise ConfigError(f"stream id {dupes[0]!r} is used twice; ids must be unique")
    outputs = [c.output for c in configs if c.output]
    if len(set(outputs)) != len(outputs):
        raise ConfigError("two streams write the same output video; give each its own")
    batch = {k: _check_number(k, multi[k]) for k in ("max_batch", "max_wait_ms") if k in multi}
    listed = len(sources or ()) > 1 or (not sources and "streams" in multi)
    return StreamsConfig(tuple(configs), listed=listed, **batch)  # type: ignore[arg-type]


def with_stream(config: RunConfig, **changes: Any) -> RunConfig:
    """``config`` with some fields replaced (re-validated)."""
    return validate({**dataclasses.asdict(config), **changes})
