"""The web view from the command line: ``run --web`` binds, serves while the run lasts,
and stops with it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(("extra", "needle"), [
    (["--web", "0.0.0.0:0"], "needs a token: pass --token TOKEN or set $STREAMCLF_TOKEN"),
    (["--web", "localhost:http"], "expected HOST:PORT"),
])
def test_run_web_bad_bind_is_one_line(extra: list[str], needle: str, tai_chi_clip: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from streamclf.cli.main import main

    monkeypatch.delenv("STREAMCLF_TOKEN", raising=False)
    status = main(["run", "--source", str(tai_chi_clip), "--weights", "random", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_run_web_serves_while_the_run_lasts(tai_chi_clip: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --web`` with a token from the environment: the page answers during the run,
    and the server is gone when the run ends."""
    import socket

    from streamclf.cli.main import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen: dict[str, Any] = {}

    def poll() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "status" not in seen:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/api/status", headers={"Authorization": "Bearer tk"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
                if body["streams"].get("cam0", {}).get("windows", 0) >= 1:
                    seen["status"] = body
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    monkeypatch.setenv("STREAMCLF_TOKEN", "tk")
    status = main(["run", "--source", str(tai_chi_clip), "--weights", "random",
                   "--backend", "torch", "--pace", "fast", "--quiet",
                   "--events", str(tmp_path / "ev.jsonl"), "--web", f"127.0.0.1:{port}"])
    poller.join(5)
    assert status == 0
    assert seen["status"]["model"] == "x3d_xs"
    assert f"web view on http://127.0.0.1:{port}/" in capsys.readouterr().err
    gone = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    with pytest.raises(OSError):
        gone.request("GET", "/")
    gone.close()
