"""Real network servers for source/capture tests, all bound to 127.0.0.1 on a free port.

* :class:`RtspServer`: GStreamer's RTSP server (``tests/rtsp_server_gst.py``) run by Debian's
  ``/usr/bin/python3`` as a subprocess, serving a real clip in a loop. ``stop()``/``start()``
  restart it on the same port; ``pause()``/``resume()`` freeze it with the socket open (a hang).
* :class:`MjpegServer`: a stdlib ``multipart/x-mixed-replace`` MJPEG-over-HTTP server.

Use them as context managers (or call ``close()``) so that every test cleans up.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "rtsp_server_gst.py"
SYSTEM_PYTHON = "/usr/bin/python3"
CLIP = HERE / "data" / "ta_chi.mp4"
_H264_CACHE: dict[tuple[str, float], Path] = {}


def gst_rtsp_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None if it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found"
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); " \
            "from gi.repository import GstRtspServer"
    res = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                         timeout=30, check=False)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{SYSTEM_PYTHON} cannot import gi/GstRtspServer ({last}); apt-get install "
                "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad,ugly}")
    if shutil.which("ffmpeg") is None:
        return "ffmpeg not found (apt-get install ffmpeg)"
    return None


def make_h264(workdir: Path, src: Path = CLIP, fps: float = 30.0) -> Path:
    """Re-encode ``src`` to an Annex-B ``.h264`` (GOP 30, no B-frames) once per session."""
    key = (str(src), fps)
    if key in _H264_CACHE and _H264_CACHE[key].is_file():
        return _H264_CACHE[key]
    out = workdir / f"{src.stem}_{fps:g}.h264"
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-an", "-r", f"{fps:g}", "-c:v",
           "libx264", "-preset", "veryfast", "-g", "30", "-bf", "0", "-bsf:v",
           "h264_mp4toannexb", "-f", "h264", str(out)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    _H264_CACHE[key] = out
    return out


class RtspServer:
    """GStreamer RTSP server subprocess serving ``h264`` at ``rtsp://127.0.0.1:<port>/stream``.

    Not thread-safe: drive it from the test thread.
    """

    def __init__(self, h264: Path, fps: float = 30.0, tcp_only: bool = False,
                 log_path: Path | None = None) -> None:
        self.h264, self.fps, self.tcp_only = h264, fps, tcp_only
        self.port = 0  # fixed by the first start(); later starts reuse it
        self.log_path = log_path or h264.with_suffix(".server.log")
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self, timeout_s: float = 15.0) -> None:
        """Launch the server (on the same port as before, if it ran before) and wait until it
        listens."""
        if self.proc is not None:
            raise RuntimeError("RTSP server already running")
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.h264), "--port", str(self.port),
               "--fps", f"{self.fps:g}"]
        if self.tcp_only:
            cmd.append("--tcp-only")
        deadline = time.monotonic() + timeout_s
        while True:  # the old socket may linger for a moment after a kill
            with self.log_path.open("a") as log:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            line = self._read_line(deadline)
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return
            self.stop()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server did not start: {line!r} (log {self.log_path})")
            time.sleep(0.2)

    def _read_line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        left = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.proc.stdout], [], [], left)
        return self.proc.stdout.readline().strip() if ready else "<timeout>"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate (then kill) the server; its clients see the connection close."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the abrupt way a server dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> RtspServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def rtsp_server_or_skip(workdir: Path, tcp_only: bool = False) -> RtspServer:
    """A started :class:`RtspServer`, or skip the test with the reason it cannot run.

    The caller owns it: ``close()`` it in a ``finally`` or a fixture teardown.
    """
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    server = RtspServer(make_h264(workdir), tcp_only=tcp_only,
                        log_path=workdir / "rtsp_server.log")
    server.start()
    return server


class MjpegServer:
    """Threaded MJPEG-over-HTTP server at ``http://127.0.0.1:<port>/video.mjpg``.

    Serves ``jpegs`` (encoded JPEG images) in a loop at ``fps``. Thread-safe ``close()``.
    """

    def __init__(self, jpegs: Sequence[bytes], fps: float = 30.0) -> None:
        stop = self._stop = threading.Event()
        self.frames_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                n = 0
                while not stop.is_set():
                    jpg = jpegs[n % len(jpegs)]
                    head = (f"--frame\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpg)}\r\n\r\n")
                    try:
                        self.wfile.write(head.encode() + jpg + b"\r\n")
                        self.wfile.flush()
                    except OSError:  # client went away
                        return
                    n += 1
                    outer.frames_sent += 1
                    stop.wait(1.0 / fps)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg-server",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on 127.0.0.1 recording the JSON bodies POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        received: list[dict[str, Any]] = server.received  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{server.server_address[1]}/events", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[int]:
    """Serve ``folder``'s files on 127.0.0.1 (a free port, yielded) until the block ends: the
    pages a test's browser opens (another origin, or a clip and its snapshot)."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
