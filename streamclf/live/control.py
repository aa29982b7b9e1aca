"""Running several streams from the command line: signals, config reload, web control.

* SIGINT/SIGTERM stop every stream (each writes its ``stopped`` event).
* SIGHUP re-reads the config file and applies the difference: streams whose id is gone
  are stopped, new ids are started, streams whose settings changed are restarted; the
  others keep running untouched.
* With the web view, ``POST /api/streams`` (JSON ``{"id", "source", ...per-stream keys}``)
  adds a stream and ``DELETE /api/streams/ID`` removes one.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from streamclf.config import RunConfig
from streamclf.errors import ConfigError, StreamclfError
from streamclf.live.pipeline import MultiStreamPipeline
from streamclf.streams_config import PER_STREAM_KEYS, StreamsConfig, load_streams_config

if TYPE_CHECKING:
    from streamclf.live.runner import StreamPipeline
    from streamclf.web.server import WebServer

__all__ = ["StreamController", "run_streams"]

log = logging.getLogger(__name__)


class StreamController:
    """Adds, removes and reloads streams of a running :class:`MultiStreamPipeline`.

    Thread-safe (one lock): called from HTTP handler threads and the main thread.
    """

    def __init__(self, multi: MultiStreamPipeline, config_path: str | None,
                 overrides: dict[str, Any], web: WebServer | None = None) -> None:
        self.multi = multi
        self.config_path = config_path
        self.overrides = overrides
        self.web = web
        self._lock = threading.Lock()
        self._configs: dict[str, RunConfig] = {}

    def track(self, config: StreamsConfig) -> None:
        self._configs = {c.stream_id: c for c in config.streams}

    def attach(self, pipe: StreamPipeline) -> None:
        """Called for every stream before it starts: show it in the web view."""
        if self.web is not None:
            from streamclf.web.attach import attach_pipeline

            attach_pipeline(self.web.hub, pipe)

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        """Start the stream described by ``item`` (``id``, ``source``, per-stream keys).

        Raises:
            ConfigError: a bad item or a taken id. SourceError: the source cannot open.
        """
        if not isinstance(item, dict):
            raise ConfigError("a stream must be a JSON object with 'id' and 'source'")
        unknown = set(item) - PER_STREAM_KEYS
        if unknown:
            raise ConfigError(f"unknown stream key {sorted(unknown)[0]!r}; allowed: "
                              f"{', '.join(sorted(PER_STREAM_KEYS))}")
        if not item.get("id") or not item.get("source"):
            raise ConfigError("a stream needs 'id' and 'source'")
        shared = self.multi.shared
        if shared is None:
            raise ConfigError("this run cannot open new streams")
        from streamclf.streams_config import with_stream

        values = {k: v for k, v in item.items() if k != "id"}
        config = with_stream(shared, stream_id=str(item["id"]), **{
            # a new stream starts from the shared settings, not another stream's own
            "loop": False, "output": None, "display": False, **values})
        with self._lock:
            self.multi.add_stream(config)
            self._configs[config.stream_id] = config
        return {"added": config.stream_id, "streams": self.multi.stream_ids}

    def remove(self, stream_id: str) -> dict[str, Any]:
        """Stop one stream. Raises ConfigError for an unknown id."""
        with self._lock:
            result = self.multi.remove_stream(stream_id)
            self._configs.pop(stream_id, None)
            if self.web is not None:
                self.web.hub.remove_stream(stream_id)
        return {"removed": stream_id, "frames": result.frames, "windows": result.windows,
                "streams": self.multi.stream_ids}

    def reload(self) -> None:
        """Re-read the config file and apply the difference (errors are logged; the
        running streams are left as they are)."""
        if self.config_path is None:
            log.warning("SIGHUP: no --config file to reload")
            return
        try:
            fresh = load_streams_config(self.config_path, self.overrides)
        except StreamclfError as exc:
            log.error("config reload failed, nothing changed: %s", exc)
            return
        wanted = {c.stream_id: c for c in fresh.streams}
        with self._lock:
            current = dict(self._configs)
        for sid, config in current.items():
            if sid not in wanted or wanted[sid] != config:
                self._safely(self.remove, sid)
        for sid, config in wanted.items():
            if sid not in current or current[sid] != config:
                def start(config: RunConfig = config) -> None:
                    with self._lock:
                        self.multi.add_stream(config)
                        self._configs[config.stream_id] = config
                self._safely(start)
        log.info("config reloaded: streams %s", ", ".join(self.multi.stream_ids))

    @staticmethod
    def _safely(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except StreamclfError as exc:
            log.error("config reload: %s", exc)


def run_streams(config: StreamsConfig, config_path: str | None, overrides: dict[str, Any],
                web: WebServer | None = None) -> tuple[int, str | None]:
    """Run every stream until all end, ``duration`` passes, or SIGINT/SIGTERM.

    Returns:
        ``(exit status, error text or None)``.
    """
    multi = MultiStreamPipeline.from_config(config)
    controller = StreamController(multi, config_path, overrides, web)
    controller.track(config)
    multi.on_add = controller.attach
    for sid in multi.stream_ids:
        controller.attach(multi.stream(sid))
    if web is not None:
        web.controller = controller
        if not web.started_serving:
            web.start()
            print(f"streamclf: web view on {web.url}", file=sys.stderr, flush=True)
    shared = config.shared
    if not shared.quiet:
        print(f"streamclf: {len(config.streams)} streams, {multi.spec.name} on {shared.device}, "
              f"backend {multi.backend_reason}, batches of up to {config.max_batch}",
              file=sys.stderr, flush=True)

    def on_stop(signum: int, _frame: object) -> None:
        multi.request_stop()
        if web is not None:
            web.stop_requested.set()

    reload_requested = threading.Event()
    handlers = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop}
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = lambda *_: reload_requested.set()
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    watcher_stop = threading.Event()

    def watch_reload() -> None:  # reloads run here, not in the signal handler
        while not watcher_stop.wait(0.1):
            if reload_requested.is_set():
                reload_requested.clear()
                controller.reload()

    watcher = threading.Thread(target=watch_reload, name="config-reload", daemon=True)
    watcher.start()
    try:
        result = multi.run(shared.duration)
        multi.wait_threads(0.3)
    finally:
        watcher_stop.set()
        watcher.join(2.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return (1, result.error) if result.error else (0, None)

