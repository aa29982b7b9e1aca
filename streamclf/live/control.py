"""Running a live pipeline from the command line: signals, config reload, web control.

* SIGINT/SIGTERM stop every stream (each publishes its ``stopped`` event).
* SIGHUP re-reads the config file and applies the difference: streams whose id is gone
  are stopped, new ids are started, streams whose settings changed are restarted; the
  others keep running untouched.
* With the web view, ``POST /api/streams`` (JSON ``{"id", "source", ...per-stream keys}``)
  adds a stream and ``DELETE /api/streams/ID`` removes one.

:func:`run_streams` is the one way the CLI runs streams: one or many, with or without the
web view.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from streamclf.config import RunConfig, StreamConfig, load_config, stream_keys
from streamclf.errors import ConfigError, StreamclfError
from streamclf.live.pipeline import LivePipeline, RunResult
from streamclf.signals import stop_on_signals

if TYPE_CHECKING:
    from streamclf.web.server import WebServer

__all__ = ["StreamController", "run_streams"]

log = logging.getLogger(__name__)


class StreamController:
    """Adds, removes and reloads streams of a running :class:`LivePipeline`.

    Thread-safe (one lock): called from HTTP handler threads and the main thread.
    """

    def __init__(self, multi: LivePipeline, config_path: str | None,
                 overrides: dict[str, Any], web: WebServer | None = None) -> None:
        self.multi = multi
        self.config_path = config_path
        self.overrides = overrides
        self.web = web
        self._lock = threading.Lock()
        self._configs: dict[str, StreamConfig] = {}
        self._run: RunConfig | None = None

    def track(self, config: RunConfig) -> None:
        self._configs = {c.stream_id: c for c in config.streams}
        self._run = dataclasses.replace(config, streams=())

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        """Start the stream described by ``item`` (``id``, ``source``, per-stream keys).

        Raises:
            ConfigError: a bad item or a taken id. SourceError: the source cannot open.
        """
        if not isinstance(item, dict):
            raise ConfigError("a stream must be a JSON object with 'id' and 'source'")
        if not item.get("id") or not item.get("source"):
            raise ConfigError("a stream needs 'id' and 'source'")
        # A new stream starts from the schema's defaults, not another stream's own.
        config = _stream_from(item)
        with self._lock:
            self._running()
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
            fresh = load_config(self.config_path, self.overrides)
        except StreamclfError as exc:
            log.error("config reload failed, nothing changed: %s", exc)
            return
        if self._run is not None and dataclasses.replace(fresh, streams=()) != self._run:
            log.warning("config reload: only streams are reloaded; the model, outputs and "
                        "batching stay as they are until a restart")
        wanted = {c.stream_id: c for c in fresh.streams}
        with self._lock:
            current = self._running()
        for sid, config in current.items():
            if sid not in wanted or wanted[sid] != config:
                self._safely(self.remove, sid)
        for sid, config in wanted.items():
            if sid not in current or current[sid] != config:
                def start(config: StreamConfig = config) -> None:
                    with self._lock:
                        self.multi.add_stream(config)
                        self._configs[config.stream_id] = config
                self._safely(start)
        log.info("config reloaded: streams %s", ", ".join(self.multi.stream_ids))

    def _running(self) -> dict[str, StreamConfig]:
        """The configs of the streams still running; streams that ended by themselves (a
        file at its end, a camera that gave up) are forgotten, so a reload starts them
        again. Call with the lock held."""
        running = set(self.multi.stream_ids)
        self._configs = {sid: c for sid, c in self._configs.items() if sid in running}
        return dict(self._configs)

    @staticmethod
    def _safely(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except StreamclfError as exc:
            log.error("config reload: %s", exc)


def _stream_from(item: dict[str, Any]) -> StreamConfig:
    """A :class:`StreamConfig` from a JSON object (unknown keys: ConfigError)."""
    unknown = sorted(set(item) - stream_keys())
    if unknown:
        raise ConfigError(f"unknown stream key {unknown[0][:64]!r}; allowed: "
                          f"{', '.join(sorted(stream_keys()))}")
    return StreamConfig(**item)


def _summary(result: RunResult, config: RunConfig) -> str:
    """One line: streams, windows, drops, latency p50/p95 (the worst stream's), paths."""
    totals = list(result.streams.values())
    failed = sum(1 for t in totals if t.error)
    p50 = [t.latency_ms_p50 for t in totals if t.latency_ms_p50 is not None]
    p95 = [t.latency_ms_p95 for t in totals if t.latency_ms_p95 is not None]
    latency = f", latency p50 {max(p50):.0f} ms p95 {max(p95):.0f} ms" if p50 and p95 else ""
    paths = [p for p in [config.events, *(s.output for s in config.streams)] if p]
    wrote = f"; wrote {', '.join(paths)}" if paths else ""
    return (f"{len(totals)} stream(s), {failed} failed, {sum(t.windows for t in totals)} "
            f"windows, {sum(t.drops for t in totals)} drops{latency}{wrote}")


def run_streams(config: RunConfig, config_path: str | None, overrides: dict[str, Any],
                web: WebServer | None = None) -> int:
    """Run every stream until all end, ``duration`` passes, or SIGINT/SIGTERM; print one
    summary line (and each stream's error). Returns the exit status: 1 only when every
    stream failed."""
    sinks: list[Any] = []
    frame_sinks = None
    if web is not None:
        from streamclf.web.link import HubSink, mjpeg_frame_sinks

        sinks.append(HubSink(web.hub))
        frame_sinks = mjpeg_frame_sinks(web.hub)
    out = None if config.quiet else sys.stderr
    multi = LivePipeline(config, sinks=sinks, frame_sinks=frame_sinks, status_out=out)
    if web is not None:  # GET /metrics: latency and alerts from events, the sinks' health
        multi.add_sink(web.metrics, "metrics", types=web.metrics.TYPES)
        web.metrics.watch_sinks(multi.sink_health)
    controller = StreamController(multi, config_path, overrides, web)
    controller.track(config)
    if web is not None:
        web.controller = controller
        if not web.started_serving:
            web.start()
            print(f"streamclf: web view on {web.url}", file=sys.stderr, flush=True)
    shared = config
    if not shared.quiet:
        what = (f"{len(config.streams)} streams" if len(config.streams) > 1
                else config.streams[0].stream_id)
        print(f"streamclf: {what}, {multi.spec.name} on {shared.device}, backend "
              f"{multi.backend_reason}, batches of up to {config.max_batch}",
              file=sys.stderr, flush=True)

    def on_stop() -> None:
        multi.request_stop()
        if web is not None:
            web.stop_requested.set()

    reload_requested = threading.Event()
    watcher_stop = threading.Event()

    def watch_reload() -> None:  # reloads run here, not in the signal handler
        while not watcher_stop.wait(0.1):
            if reload_requested.is_set():
                reload_requested.clear()
                try:
                    controller.reload()
                except Exception as exc:  # a bad reload must not end later reloads
                    log.error("config reload failed, nothing changed: %s",
                              str(exc).splitlines()[0][:200] if str(exc) else
                              type(exc).__name__)

    watcher = threading.Thread(target=watch_reload, name="config-reload", daemon=True)
    watcher.start()
    try:
        with stop_on_signals(on_stop=on_stop, on_hangup=reload_requested.set):
            result = multi.run(shared.duration)
    finally:
        watcher_stop.set()
        watcher.join(2.0)
    for sid, totals in result.streams.items():
        if totals.error:
            print(f"streamclf: error: {sid}: {totals.error}", file=sys.stderr, flush=True)
    if not config.quiet:
        print(f"streamclf: done: {_summary(result, config)}", file=sys.stderr, flush=True)
    return result.exit_code
