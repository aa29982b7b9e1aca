"""Run configuration: YAML file + command-line overrides -> a validated ``RunConfig``.

Every bad value raises :class:`~streamclf.errors.ConfigError` naming the key and
what is allowed; unknown keys are errors too (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamclf.errors import ConfigError

__all__ = ["RunConfig", "load_config", "read_yaml_mapping", "validate"]

_CHOICES = {
    "pace": ("realtime", "fast"),
    "transport": ("tcp", "udp"),
    "backend": ("auto", "torch", "onnxruntime", "openvino"),
    "precision": ("fp32", "fp16", "bf16", "int8"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything ``streamclf run`` needs. Defaults are the CPU-light live setup."""

    source: str = ""
    stream_id: str = "cam0"
    model: str = "x3d_xs"
    weights: str = "kinetics400"
    device: str = "auto"
    backend: str = "auto"  # auto = the fastest measured here (cached)
    precision: str = "fp32"
    torch_compile: bool = False  # torch backend only: wrap the network in torch.compile
    classmap: str | None = None
    stride: float | None = None  # seconds; None = half the model's clip duration
    topk: int = 5
    smooth: int = 3  # clips averaged
    threshold: float = 0.2  # minimum smoothed score to show/start a label
    start_after: int = 2  # consecutive wins before a label starts
    pace: str = "realtime"
    loop: bool = False
    transport: str = "tcp"
    open_timeout_ms: int = 5000
    # Frame watchdog: a live source silent this long is lost (then reconnected); also
    # FFmpeg's own read timeout.
    read_timeout_ms: int = 3000
    max_reconnects: int | None = None  # failed reconnects in a row before giving up; None = never
    backoff_initial_s: float = 1.0  # first wait before reconnecting; doubles per failure ...
    backoff_max_s: float = 30.0  # ... up to this ...
    backoff_jitter: float = 0.2  # ... each wait times a random factor in 1 +- this
    display: bool = False
    output: str | None = None
    events: str | None = None
    events_max_bytes: int | None = None
    duration: float | None = None  # seconds; None = until the source ends or a signal
    quiet: bool = False
    threads: int | None = None  # inference threads; None = all cores but one


_RANGES: dict[str, tuple[float, float | None]] = {
    "topk": (1, None), "smooth": (1, 1000), "threshold": (0.0, 1.0), "start_after": (1, 1000),
    "open_timeout_ms": (100, 600_000), "read_timeout_ms": (100, 600_000),
    "events_max_bytes": (1024, None), "threads": (1, 256), "max_reconnects": (0, None),
    "backoff_initial_s": (0.01, 3600.0), "backoff_max_s": (0.01, 86_400.0),
    "backoff_jitter": (0.0, 0.9),
}
_POSITIVE = ("stride", "duration")


def _check_type(key: str, value: Any, expected: Any) -> Any:
    text = str(expected)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"config key {key!r} must not be empty")
    if "bool" in text:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if "float" in text:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if "int" in text:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    return str(value)


def validate(values: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a mapping, checking keys, types and ranges."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {key!r}; allowed keys: {allowed}")
        value = _check_type(key, value, fields[key].type)
        if value is not None and key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(
                f"config key {key!r} must be one of {', '.join(_CHOICES[key])}, got {value!r}"
            )
        if value is not None and key in _RANGES:
            lo, hi = _RANGES[key]
            if value < lo or (hi is not None and value > hi):
                bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
                raise ConfigError(f"config key {key!r} must be {bound}, got {value!r}")
        if value is not None and key in _POSITIVE and value <= 0:
            raise ConfigError(f"config key {key!r} must be > 0 seconds, got {value!r}")
        clean[key] = value
    config = RunConfig(**clean)
    if config.backoff_initial_s > config.backoff_max_s:
        raise ConfigError(f"config key 'backoff_initial_s' ({config.backoff_initial_s:g} s) must "
                          f"not exceed 'backoff_max_s' ({config.backoff_max_s:g} s)")
    return config


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``).

    Raises:
        ConfigError: missing file, invalid YAML (with the line), not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p}: invalid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: cannot read it ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of keys to values")
    return data


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (optional) and apply ``overrides`` (command-line flags, which win;
    ``None`` values mean "not given" and are skipped).

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, unknown key, bad value.
    """
    values: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    if values.get("source") in (None, ""):
        raise ConfigError("no source: pass --source or set 'source' in the config")
    return validate(values)
