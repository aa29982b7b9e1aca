"""Joining a Ray cluster, or starting a private one on 127.0.0.1.

``address``:

* ``None``: start a local Ray instance bound to 127.0.0.1 (this machine's CPUs and GPUs),
  shut down again at the end of the command;
* ``"auto"``: join the cluster started on this machine with ``ray start --head``;
* ``"HOST:PORT"``: join the cluster whose head (GCS) listens there;
* ``"ray://HOST:PORT"``: connect through Ray Client (head started with the client server,
  port 10001 by default).

If this process is already connected (``ray.init`` was called, e.g. by a test or a
notebook), that connection is used as it is and left open.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from streamclf._net import is_loopback
from streamclf.errors import ConfigError

__all__ = ["Connection", "check_address", "connect", "require_ray"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
#: Object store of a local instance: clips are ~0.4 MB each and short-lived.
_LOCAL_OBJECT_STORE = 512 * 2**20
#: Ray uses the loopback address for its node only with this switch (set before ``import
#: ray``); otherwise it binds to the address of the default route's interface.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class Connection:
    """How this process is connected: ``started`` is True when it started a local
    instance (then :func:`disconnect` shuts it down)."""

    address: str
    started: bool
    reused: bool = False


def require_ray() -> Any:
    """``import ray`` with an install hint.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("the cluster commands need Ray: pip install 'streamclf[cluster]' "
                          "(or pip install 'ray[default]')") from None
    return ray


def check_address(address: str) -> tuple[str, int] | None:
    """Check ``--address`` and return its ``(host, port)`` (``None`` for ``auto``).

    Raises:
        ConfigError: not ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``, or nothing accepts
            TCP connections there within 5 s (named ``--address`` in the message).
    """
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if "://" in rest or not sep or not host or not port_text.isdigit() \
            or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--address {address!r}: use auto, HOST:PORT (the head's GCS port, "
                          "6379 by default) or ray://HOST:PORT (Ray Client, 10001 by default)")
    port = int(port_text)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {_PROBE_TIMEOUT_S:g} s"
        raise ConfigError(f"--address {address}: cannot reach the Ray cluster ({reason}); "
                          "is its head running (ray start --head)?") from None
    return host, port


def _auto_target() -> tuple[str, int] | None:
    """Where ``auto`` leads: ``$RAY_ADDRESS``, else the cluster ``ray start`` recorded."""
    text = os.environ.get("RAY_ADDRESS", "")
    if not text:
        try:
            recorded = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
            with open(recorded, encoding="utf-8") as fh:
                text = fh.read().strip()
        except OSError:
            return None
    host, _, port = text.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def connect(address: str | None = None, num_cpus: int | None = None,
            log_to_driver: bool = True, timeout_s: float = 60.0) -> Connection:
    """Connect this process to Ray (see the module doc for ``address``).

    Args:
        address: ``None`` (start locally), ``"auto"``, ``"HOST:PORT"`` or ``"ray://..."``.
        num_cpus: CPUs of a local instance (default: all).
        log_to_driver: show the actors' log lines (prefixed with the actor) on stderr.
        timeout_s: longest wait for joining a cluster (a head that accepts TCP but never
            completes Ray's handshake, e.g. another auth token, would otherwise hang).

    Raises:
        ConfigError: Ray missing, bad or unreachable ``--address``, no cluster for ``auto``,
            no handshake within ``timeout_s``.
    """
    target = check_address(address) if address is not None else None
    if address == "auto":
        target = _auto_target()
    if "ray" not in sys.modules and (address is None or (target and is_loopback(target[0]))):
        os.environ.setdefault(_LOOPBACK_SWITCH, "0")  # a cluster on 127.0.0.1 stays there
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require_ray()
    if ray.is_initialized():
        return Connection(address or "(this process's connection)", started=False, reused=True)
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=_LOCAL_OBJECT_STORE, **common)
        return Connection("local (127.0.0.1)", started=True)
    _join(ray, address, common, timeout_s)
    return Connection(address, started=False)


class _NoThreadWarning(logging.Filter):
    """Drops Ray's note that ``ray.init`` off the main thread sets no SIGTERM handler (the
    command sets its own right after connecting)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _join(ray: Any, address: str, options: dict[str, Any], timeout_s: float) -> None:
    """``ray.init(address)`` on a helper thread, so that a stuck handshake has a timeout."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            ray.init(address=address, **options)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    quiet = _NoThreadWarning()
    ray_log = logging.getLogger("ray._private.worker")
    ray_log.addFilter(quiet)
    try:
        thread = threading.Thread(target=attempt, name="streamclf-ray-connect", daemon=True)
        thread.start()
        thread.join(timeout_s)
    finally:
        ray_log.removeFilter(quiet)
    if not outcome:
        raise ConfigError(f"--address {address}: no answer from the Ray cluster within "
                          f"{timeout_s:g} s (another Ray version, or another auth token: see "
                          "`ray get-auth-token`)")
    exc = outcome[0]
    if isinstance(exc, ConnectionError):
        hint = ("no running Ray cluster found on this machine; start one with "
                "`ray start --head` or leave out --address") if address == "auto" else str(exc)
        raise ConfigError(f"--address {address}: {hint}") from None
    if exc is not None:
        raise ConfigError(f"--address {address}: cannot join the Ray cluster: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                          ) from None


def disconnect(connection: Connection) -> None:
    """Shut down a local instance this process started; leave other connections alone
    (a joined cluster keeps running; ``ray.shutdown`` only detaches a client)."""
    if connection.reused:
        return
    import ray

    ray.shutdown()


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources (``CPU``, ``GPU``, ...)."""
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items()}
