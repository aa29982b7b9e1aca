"""Replay video files through the live engine at ``pace: fast`` and keep every window.

The one way files become timelines: ``streamclf timeline`` and ``streamclf evaluate-stream``
both call :func:`replay`, so their windows, smoothing and label changes are the ones a live
``streamclf run --pace fast`` on the same file gives (the same :class:`LivePipeline`, the
same window rule, the same :class:`~streamclf.live.smoothing.Smoother`).

Several files run at once as streams of one pipeline (at most ``config.max_batch``, so the
model's batches fill up); a stream that ends leaves and the next file joins. Each window's
full scores come through a score tap (:class:`~streamclf.types.WindowScores`); the label
changes and errors through an event sink.

Thread-safety: :func:`replay` is called from one thread; the tap and the sink run on the
pipeline's worker and sink threads and only append under a lock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.analysis.detection import LabelChange
from streamclf.errors import ConfigError, StreamclfError
from streamclf.types import Event, EventType, WindowScores

if TYPE_CHECKING:
    from streamclf.engine.backends.base import InferenceBackend

__all__ = ["FileTimeline", "replay", "stream_ids"]

log = logging.getLogger("streamclf")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class FileTimeline:
    """One file's replay.

    Attributes:
        path: the file.
        stream: the stream id it ran under.
        windows: every classified window, in media-time order.
        changes: the live run's ``label_start``/``label_end`` events, with their media time.
        duration_s: the file's duration (declared; the last window's end when unknown).
        error: why the file failed (a corrupt or truncated file), or None. Windows read
            before a failure are kept.
    """

    path: Path
    stream: str
    windows: list[WindowScores] = field(default_factory=list)
    changes: list[LabelChange] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.windows[0].labels if self.windows else ()


def stream_ids(paths: Sequence[Path]) -> list[str]:
    """A unique stream id per file, from its name (``[A-Za-z0-9_-]``, at most 64 chars):
    ``a/clip.mp4`` -> ``clip``, a second ``b/clip.mp4`` -> ``clip-2``."""
    ids: list[str] = []
    taken: set[str] = set()
    for path in paths:
        base = (_UNSAFE.sub("_", path.stem).strip("_") or "video")[:56]
        sid, n = base, 1
        while sid in taken:
            n += 1
            sid = f"{base}-{n}"
        taken.add(sid)
        ids.append(sid)
    return ids


class _Collector:
    """The score tap and event sink of one replay (worker and sink threads)."""

    def __init__(self, by_stream: Mapping[str, FileTimeline]) -> None:
        self._by_stream = by_stream
        self._lock = threading.Lock()

    def tap(self, scores: WindowScores) -> None:
        with self._lock:
            self._by_stream[scores.stream].windows.append(scores)

    def sink(self, event: Event) -> None:
        item = self._by_stream.get(event.stream)
        if item is None:
            return
        with self._lock:
            if event.type in (EventType.LABEL_START, EventType.LABEL_END):
                item.changes.append(LabelChange(event.type.value, str(event.fields["label"]),
                                                float(event.fields["media_ts"])))
            elif event.type is EventType.ERROR and item.error is None:
                item.error = str(event.fields.get("error") or event.fields.get("message"))


def replay(paths: Sequence[Path], overrides: Mapping[str, Any], *,
           stop: threading.Event | None = None,
           on_done: Callable[[FileTimeline], None] | None = None,
           backend: InferenceBackend | None = None) -> list[FileTimeline]:
    """Run each file through the live engine at ``pace: fast``.

    Args:
        paths: the video files (each checked before the model loads by the caller).
        overrides: config keys (``model``, ``weights``, ``stride``, ``smooth``,
            ``threshold``, ...), as the command line gives them; ``pace`` is forced to
            ``fast``, outputs are off.
        stop: set it to end early (SIGINT): files not finished keep what they have.
        on_done: called with each file's timeline as it finishes (progress).
        backend: runs the model (default: loaded from ``overrides``, the one way to load
            a model); tests pass a scripted one.

    Returns:
        One :class:`FileTimeline` per path, in the order given.

    Raises:
        ConfigError, ModelError, WeightsError: bad settings or model.
    """
    import dataclasses

    from streamclf.config import load_config
    from streamclf.engine.load import load_backend
    from streamclf.live.pipeline import LivePipeline

    if not paths:
        raise ConfigError("no video files given")
    ids = stream_ids(paths)
    values = {**{k: v for k, v in overrides.items() if v is not None}, "pace": "fast",
              "quiet": True}
    config = load_config(None, values, [f"{sid}={p}" for sid, p in zip(ids, paths, strict=True)])
    spec = None
    if backend is None:
        loaded = load_backend(config)
        backend, spec = loaded.backend, loaded.spec  # a checkpoint's own crop size
    items = {sid: FileTimeline(Path(p), sid) for sid, p in zip(ids, paths, strict=True)}
    collector = _Collector(items)
    width = config.max_batch  # files at once: one window each per model call
    pending = list(config.streams[width:])
    running = {s.stream_id for s in config.streams[:width]}
    stop = stop or threading.Event()
    pipe = LivePipeline(dataclasses.replace(config, streams=config.streams[:width]),
                        backend=backend, spec=spec, sinks=[collector.sink],
                        score_taps=[collector.tap])
    try:
        pipe.start()
        while running and not stop.is_set():
            pipe.join(0.05)  # a stream that ended is stopped and leaves
            current = set(pipe.stream_ids)
            for sid in sorted(running - current):
                running.discard(sid)
                _finish(items[sid])
                if on_done is not None:
                    on_done(items[sid])
            while pending and len(running) < width:
                nxt = pending.pop(0)
                pipe.add_stream(nxt)
                running.add(nxt.stream_id)
    finally:
        pipe.stop()
    for sid in running:  # stopped early: what they have
        _finish(items[sid])
    return [items[sid] for sid in ids]


def _finish(item: FileTimeline) -> None:
    """Sort the windows and set the duration (declared, else the last window's end)."""
    from streamclf.media.video import probe

    item.windows.sort(key=lambda w: w.media_ts)
    try:
        declared = probe(item.path).duration_s
    except StreamclfError:  # a file that cannot be opened: its error event says why
        declared = 0.0
    item.duration_s = declared if declared > 0 else (
        item.windows[-1].media_ts if item.windows else 0.0)
