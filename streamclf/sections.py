"""The nested sections of the config schema: alerts and region of interest (per stream), and
the monitoring outputs of a run (event store, MQTT, webhook, event clips).

Each is a frozen dataclass validated on construction (``ConfigError``), built from a YAML
mapping by :func:`build_section` (unknown keys refused, with a "did you mean"). They cross
threads as they are: nothing in them changes after construction.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamclf.errors import ConfigError

__all__ = ["AlertRule", "ClipsConfig", "MqttConfig", "WebhookConfig", "build_section",
           "parse_roi"]

T = TypeVar("T")


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _number(where: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {_short(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where} must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)


def build_section(cls: type[T], value: Any, where: str) -> T:
    """``cls`` from a mapping (YAML), or ``value`` itself when it already is one.

    Raises:
        ConfigError: not a mapping, an unknown key (with the closest known one), a bad value.
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {where!r} must be a mapping of keys to values, got "
                          f"{_short(value)}")
    known = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(known)}"
            raise ConfigError(f"unknown {where} key {_short(key)}{hint}")
    return cls(**value)


@dataclass(frozen=True)
class AlertRule:
    """When a stream raises an alert (``alerts:`` of a stream).

    Attributes:
        labels: the labels that alert, or ``"any"``.
        min_score: the smoothed score the label must reach.
        min_duration_s: how long the label must stay the stable one before the alert starts.
        cooldown_s: no new alert for the same label within this time after one ends.
    """

    labels: tuple[str, ...] | str = "any"
    min_score: float = 0.5
    min_duration_s: float = 1.0
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        labels = self.labels
        if labels != "any":
            if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels or \
                    not all(isinstance(x, str) and x.strip() for x in labels):
                raise ConfigError("alerts: 'labels' must be a list of label names, or any")
            object.__setattr__(self, "labels", tuple(x.strip() for x in labels))
        object.__setattr__(self, "min_score", _number("alerts: 'min_score'", self.min_score,
                                                      0.0, 1.0))
        object.__setattr__(self, "min_duration_s", _number(
            "alerts: 'min_duration_s'", self.min_duration_s, 0.0, 3600.0))
        object.__setattr__(self, "cooldown_s", _number("alerts: 'cooldown_s'", self.cooldown_s,
                                                       0.0, 86_400.0))

    def matches(self, label: str) -> bool:
        return self.labels == "any" or label in self.labels


@dataclass(frozen=True)
class ClipsConfig:
    """Event clips and snapshots (``clips:`` of a run; ``--clips DIR``).

    Attributes:
        dir: where clips, snapshots and nothing else go (retention deletes in it).
        pre_s, post_s: video kept before an alert's start and after its end.
        max_gb, max_days: retention; the oldest clips are deleted first.
        preroll_mb: the most memory one stream's pre-roll buffer may hold.
        fps: the most frames a second clips keep (each is converted and JPEG-compressed on
            the recorder's thread); 0: every frame.
    """

    dir: str = "clips"
    pre_s: float = 3.0
    post_s: float = 3.0
    max_gb: float = 20.0
    max_days: float = 14.0
    preroll_mb: float = 64.0
    fps: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str) or not self.dir.strip():
            raise ConfigError("clips: 'dir' must be a folder path")
        for key, hi in (("pre_s", 60.0), ("post_s", 60.0), ("max_gb", 100_000.0),
                        ("max_days", 36_500.0), ("preroll_mb", 4096.0),
                        ("fps", 240.0)):
            object.__setattr__(self, key, _number(f"clips: {key!r}", getattr(self, key),
                                                  0.0, hi))

    def paths(self, stream: str, alert_id: str) -> tuple[str, str]:
        """Where the clip (``.mp4``) and the snapshot (``.jpg``) of one alert go: the one rule
        the alert events (their ``clip``/``snapshot`` fields) and the writer share."""
        base = f"{self.dir}/{stream}-{alert_id}"
        return f"{base}.mp4", f"{base}.jpg"


def _broker(url: Any) -> bool:
    """``url`` is ``mqtt(s)://[user[:pass]@]host[:port]`` with a host and a valid port."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("mqtt", "mqtts") and bool(parts.hostname) and \
        parts.path in ("", "/")


@dataclass(frozen=True)
class MqttConfig:
    """Alerts and labels to an MQTT broker (``mqtt:`` of a run; ``--mqtt URL``).

    Attributes:
        url: ``mqtt://[user:pass@]host[:1883]`` or ``mqtts://`` (TLS, port 8883).
        prefix: the topic prefix (``PREFIX/STREAM/alert``, ``PREFIX/STREAM/label``,
            ``PREFIX/available``).
        queue: messages kept while disconnected (then the oldest are dropped, counted).
    """

    url: str = ""
    prefix: str = "streamclf"
    queue: int = 1000

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        from streamclf.masking import mask_credentials

        return (f"MqttConfig(url={mask_credentials(self.url)!r}, prefix={self.prefix!r}, "
                f"queue={self.queue})")

    def __post_init__(self) -> None:
        from streamclf.masking import mask_credentials

        if not _broker(self.url):
            shown = mask_credentials(str(self.url))[:80]
            raise ConfigError(f"mqtt: 'url' {shown!r}: use mqtt://[user:pass@]host[:port] or "
                              "mqtts://...")
        if not isinstance(self.prefix, str) or not re.fullmatch(r"[A-Za-z0-9_\-/]{1,64}",
                                                                 self.prefix) \
                or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ConfigError("mqtt: 'prefix' must be 1-64 letters, digits, '_', '-' or "
                              "inner '/'")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or \
                not 1 <= self.queue <= 1_000_000:
            raise ConfigError("mqtt: 'queue' must be an integer between 1 and 1000000")


@dataclass(frozen=True)
class WebhookConfig:
    """Events POSTed as JSON (``webhook:`` of a run; ``--webhook URL``).

    Attributes:
        url: an http:// or https:// URL.
        secret: with it, each request carries ``X-Streamclf-Signature: sha256=HEX``, the
            HMAC-SHA256 of the body.
        alerts_only: send only ``alert`` events.
        queue: events kept while the receiver is down (then dropped, counted).
    """

    url: str = ""
    secret: str | None = field(default=None, repr=False)
    alerts_only: bool = False
    queue: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^/\s]+", self.url):
            raise ConfigError(f"config key 'webhook' {_short(self.url)}: use an http:// or "
                              "https:// URL")
        if self.secret is not None and (not isinstance(self.secret, str) or not self.secret):
            raise ConfigError("webhook: 'secret' must be a non-empty string")
        if not isinstance(self.alerts_only, bool):
            raise ConfigError("webhook: 'alerts_only' must be true or false")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or \
                not 1 <= self.queue <= 1_000_000:
            raise ConfigError("webhook: 'queue' must be an integer between 1 and 1000000")


def parse_roi(value: Any, where: str = "roi") -> tuple[float, float, float, float] | None:
    """``[x, y, w, h]``: fractions of the frame (every value <= 1) or pixels (any > 1).

    Raises:
        ConfigError: not four numbers, negative, an empty box, or fractions past the frame.
    """
    if value is None:
        return None
    if isinstance(value, str):  # the flag's form: "x,y,w,h"
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"{where} must be x,y,w,h numbers, got {_short(value)}") from None
    if isinstance(value, bytes) or not isinstance(value, Sequence) or len(value) != 4:
        raise ConfigError(f"{where} must be [x, y, w, h], got {_short(value)}")
    x, y, w, h = (_number(f"{where} values", v, 0.0, 1e6) for v in value)
    if w <= 0 or h <= 0:
        raise ConfigError(f"{where}: width and height must be > 0")
    if max(x, y, w, h) <= 1.0 and (x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9):
        raise ConfigError(f"{where}: the box [{x:g}, {y:g}, {w:g}, {h:g}] reaches past the "
                          "frame (fractions: x + w and y + h at most 1)")
    return (x, y, w, h)
