"""Small network-address helpers shared by the web view and the cluster commands."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback IP (``127.0.0.0/8``, ``::1``).

    Example: ``is_loopback("127.0.0.1") is True``; ``is_loopback("0.0.0.0") is False``.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
