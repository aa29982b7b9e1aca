"""Cameras back within 3 s: a lost RTSP camera that returns is predicting again within 3 s of
its return, however long the outage, against the real GStreamer RTSP server.

Reconnect attempts back off (1 s doubling to 30 s by default); a TCP probe of the camera's
host every half second cuts the wait short (``streamclf.media.reach``). Before it, an 8 s outage
cost 7.5 s after the camera was back, and a 60 s one up to the 30 s cap.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.live.pipeline import LivePipeline
from streamclf.media.reach import backoff_wait, tcp_probe
from streamclf.types import Event, EventType
from tests.servers import RtspServer, rtsp_server_or_skip


def test_probe_targets_and_an_early_end_of_the_wait() -> None:
    assert tcp_probe("clip.mp4") is None and tcp_probe("synthetic") is None
    assert tcp_probe("0") is None and tcp_probe("rtsp://") is None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        probe = tcp_probe(f"rtsp://u:p@127.0.0.1:{port}/x")
        assert probe is not None and probe()
        stop = threading.Event()
        t0 = time.monotonic()
        assert not backoff_wait(stop, 30.0, probe, interval_s=0.1)  # reachable: ends early
        assert time.monotonic() - t0 < 1.0
    assert probe is not None and not probe()  # nothing listens there any more
    t0 = time.monotonic()
    assert not backoff_wait(stop, 0.3, probe, interval_s=0.1)  # unreachable: the full wait
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.2, stop.set).start()
    assert backoff_wait(stop, 30.0, None)  # stop ends any wait


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RtspServer]:
    srv = rtsp_server_or_skip(tmp_path)
    yield srv
    srv.close()


def _wait(events: list[Event], what: Callable[[Event], bool], timeout_s: float) -> Event:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = next((e for e in list(events) if what(e)), None)
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s; saw {[e.type for e in events][-12:]}")


@pytest.mark.slow
def test_predictions_resume_within_3_s_after_outages_of_8_and_20_s(server: RtspServer) -> None:
    events: list[Event] = []
    cfg = RunConfig(streams=[StreamConfig(id="cam", source=server.url)])  # default back-off
    backend = FakeBackend(labels=[f"c{i}" for i in range(400)])
    with LivePipeline(cfg, sinks=[events.append], backend=backend) as pipe:
        _wait(events, lambda e: e.type is EventType.PREDICTION, 30)
        resumed = {}
        # 20 s: the default back-off (1, 2, 4, 8, 16 s...) is then waiting 16 s from 15 s on;
        # without the probe the camera would be found at 31 s, 11 s late.
        for outage_s in (8.0, 20.0):
            down_at = time.time()
            server.kill()
            _wait(events, lambda e, t=down_at: e.type is EventType.SOURCE_LOST and e.ts > t, 15)
            time.sleep(max(0.0, down_at + outage_s - time.time()))
            server.start()
            back_at = time.time()
            first = _wait(events, lambda e, t=back_at: e.type is EventType.PREDICTION
                          and e.ts > t, 30)
            resumed[outage_s] = first.ts - back_at
        assert pipe.health()["cam"].reconnects == 2
    print(f"\npredicting again after the camera came back: {resumed}")
    assert all(delay < 3.0 for delay in resumed.values()), resumed
    failed = [e for e in events if e.type is EventType.RECONNECT_FAILED]
    assert failed and all(e.fields["retry_in_s"] <= 30.0 for e in failed)
