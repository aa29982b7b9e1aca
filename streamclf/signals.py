"""Signal handling for long-running commands: the one place that installs and restores
SIGINT/SIGTERM (and SIGHUP) handlers.

Light (standard library only), so any module that runs a command's main loop can use it.
Off the main thread (where Python cannot install handlers) both helpers do nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["keep_handlers", "stop_on_signals"]

_Handler = Callable[[int, Any], Any] | int | signal.Handlers | None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(previous: dict[signal.Signals, _Handler]) -> None:
    for sig, handler in previous.items():
        # None: the handler was not installed from Python; the default is the closest.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextmanager
def stop_on_signals(stop: threading.Event | None = None, *,
                    on_stop: Callable[[], object] | None = None,
                    on_hangup: Callable[[], object] | None = None) -> Iterator[threading.Event]:
    """While the block runs, SIGINT and SIGTERM set ``stop`` (a new event when None) and
    call ``on_stop``; with ``on_hangup``, SIGHUP calls it (where the platform has SIGHUP).
    The previous handlers are restored on exit. Yields the stop event.

    Handlers must be quick: they set events, the command's own threads do the work.
    """
    event = stop if stop is not None else threading.Event()

    def stopping(_signum: int, _frame: Any) -> None:
        event.set()
        if on_stop is not None:
            on_stop()

    handlers: dict[signal.Signals, Callable[[int, Any], None]] = {
        signal.SIGINT: stopping, signal.SIGTERM: stopping}
    if on_hangup is not None and hasattr(signal, "SIGHUP"):
        hangup = on_hangup

        def reloading(_signum: int, _frame: Any) -> None:
            hangup()

        handlers[signal.SIGHUP] = reloading
    previous: dict[signal.Signals, _Handler] = {}
    try:
        if _on_main_thread():
            for sig, handler in handlers.items():
                previous[sig] = signal.signal(sig, handler)
        yield event
    finally:
        _restore(previous)


@contextmanager
def keep_handlers(*signals: signal.Signals) -> Iterator[None]:
    """Restore the handlers of ``signals`` (default SIGINT and SIGTERM) after the block:
    for calls that install their own, such as ``ray.init``."""
    wanted = signals or (signal.SIGINT, signal.SIGTERM)
    previous: dict[signal.Signals, _Handler] = (
        {sig: signal.getsignal(sig) for sig in wanted} if _on_main_thread() else {})
    try:
        yield
    finally:
        _restore(previous)
