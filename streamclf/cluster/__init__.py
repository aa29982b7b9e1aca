"""Scale-out on a Ray cluster: ``streamclf cluster run`` and ``streamclf evaluate --engine ray``.

::

    driver (streamclf cluster run)                 Ray cluster
    ─────────────────────────────                  ───────────────────────────────────────
    EventLog + webhook  ◄── drain() every 0.2 s ── StreamActor × streams (spread over nodes):
                                                     CaptureThread ► FrameRing ► WindowScheduler
                                                     ► ClipRequest ──► ModelActor × N (GPU/CPU):
                                                     Smoother ◄──────── ClipResult   batches clips
                                                                                     of all streams

Modules: :mod:`~streamclf.cluster.messages` (the frozen data crossing actors),
:mod:`~streamclf.cluster.model_server` (batching model actor),
:mod:`~streamclf.cluster.stream_worker` (one stream: the live StreamRunner on a remote model),
:mod:`~streamclf.cluster.connect` (joining or starting Ray), :mod:`~streamclf.cluster.runner`
(the driver), :mod:`~streamclf.cluster.evaluate` and
:mod:`~streamclf.cli.cluster` (the CLI). Nothing here imports ``ray`` at import time:
``import streamclf`` stays light and Ray is needed only when a cluster command runs
(``pip install 'streamclf[cluster]'``).
"""

from __future__ import annotations

__all__: list[str] = []
