"""Uploads (issue 13): streamed to disk with bounded memory, the limit enforced while
reading, at most two at once, temporary files always deleted, classified in a low-priority
worker process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamclf.errors import DataError
from streamclf.web import WebHub, WebServer
from streamclf.web.formdata import FormFileWriter
from streamclf.web.uploads import ClassifierFactory, ClassifyService, Isolation
from tests.conftest import REPO
from tests.web_support import multipart, raw, request

MB = 1024 * 1024


@pytest.fixture(scope="module")
def service() -> Iterator[ClassifyService]:
    """One worker process for the whole module (it takes seconds to import torch)."""
    svc = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"))
    yield svc
    svc.close()


@pytest.fixture
def upload_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's temporary files go here (this process's tempfile default)."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def wait_empty(folder: Path, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := sorted(p.name for p in folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def upload_head(port: int, ctype: str, length: int | None = None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}"
            f"\r\n{framing}\r\n\r\n").encode()


def part_head(boundary: str, filename: str = "big.mp4") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\n\r\n").encode()


def parse_upload(ctype: str, body: bytes, chunk: int = 7) -> tuple[str, bytes]:
    """The saved file of a multipart body fed in small chunks: (filename, bytes)."""
    writer = FormFileWriter(ctype)
    try:
        for i in range(0, len(body), chunk):
            writer.feed(body[i:i + chunk])
        saved = writer.finish()
        assert saved.path.name.startswith("streamclf-upload-")
        return saved.filename, saved.path.read_bytes()
    finally:
        writer.discard()


def test_parse_upload() -> None:
    body, ctype = multipart(b"\x00\x01video\r\n--not-the-boundary", "clip.mp4")
    assert parse_upload(ctype, body) == ("clip.mp4", b"\x00\x01video\r\n--not-the-boundary")
    assert parse_upload(ctype, body, chunk=len(body)) == parse_upload(ctype, body, chunk=1)
    with pytest.raises(DataError, match="boundary"):
        parse_upload("multipart/form-data", body)
    with pytest.raises(DataError, match="no 'file' field"):
        parse_upload(*reversed(multipart(b"x", "a.mp4", field="other")))
    with pytest.raises(DataError, match="empty"):
        parse_upload(*reversed(multipart(b"", "a.mp4")))
    with pytest.raises(DataError, match="closing boundary"):
        parse_upload(ctype, body[:-10])


def test_limit_is_enforced_while_reading_a_chunked_upload(service: ClassifyService,
                                                         upload_dir: Path) -> None:
    """No Content-Length to trust: the 413 comes once the limit is passed, while the client
    is still sending, and the partial file is gone."""
    server = WebServer(WebHub(), "127.0.0.1", 0, classifier=service, max_upload_mb=1).start()
    try:
        ctype = "multipart/form-data; boundary=b0undary"
        chunk = b"\x00" * (256 * 1024)
        body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                        for c in (part_head("b0undary"), *[chunk] * 6))  # 1.5 MB, no end
        ex = raw(server.port, upload_head(server.port, ctype) + body, wait_s=3,
                 until_close=False)
        assert ex.statuses == [413] and ex.seconds < 2, ex.data[:300]
        assert b"larger than 1 MB" in ex.data
        assert wait_empty(upload_dir) == []
        assert request(server.port, "GET", "/api/status")[0] == 200
    finally:
        server.stop()


def test_temporary_files_are_deleted_however_an_upload_ends(service: ClassifyService,
                                                            upload_dir: Path,
                                                            corrupted_clip: Path) -> None:
    server = WebServer(WebHub(), "127.0.0.1", 0, classifier=service, max_upload_mb=2,
                       upload_idle_s=1.0).start()
    port = server.port
    ctype = "multipart/form-data; boundary=xyz"
    try:
        # The client stops sending mid-file: 408 after the idle time.
        ex = raw(port, upload_head(port, ctype, 1 * MB) + part_head("xyz") + b"1" * 5000,
                 wait_s=4)
        assert ex.statuses == [408] and ex.closed
        assert wait_empty(upload_dir) == []
        # The client goes away mid-file.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(upload_head(port, ctype, 1 * MB) + part_head("xyz") + b"2" * 5000)
            deadline = time.monotonic() + 5
            while not list(upload_dir.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(list(upload_dir.iterdir())) == 1  # it was being written
        assert wait_empty(upload_dir) == []
        # A malformed body after the file started.
        body = part_head("xyz") + b"3" * 100 + b"\r\n--xyz" + b"\x00garbage"
        status, _, out = request(port, "POST", "/api/classify", body, {"Content-Type": ctype})
        assert status == 400, out
        assert wait_empty(upload_dir) == []
        # A video the worker cannot decode (the worker process reads the file, then it goes).
        body, ctype2 = multipart(corrupted_clip.read_bytes(), "bad.mp4")
        status, _, out = request(port, "POST", "/api/classify", body, {"Content-Type": ctype2},
                                 timeout=120)
        assert status == 400 and "bad.mp4" in json.loads(out)["error"]
        assert wait_empty(upload_dir) == []
    finally:
        server.stop()


def test_at_most_two_uploads_at_once(upload_dir: Path) -> None:
    svc = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"))
    server = WebServer(WebHub(), "127.0.0.1", 0, classifier=svc, upload_idle_s=5.0).start()
    port = server.port
    ctype = "multipart/form-data; boundary=xyz"
    holds: list[socket.socket] = []
    try:
        for _ in range(2):  # two slow uploads under way
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(upload_head(port, ctype, 1 * MB) + part_head("xyz") + b"0" * 1000)
            holds.append(sock)
        deadline = time.monotonic() + 5
        while len(list(upload_dir.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        body = part_head("xyz") + b"data\r\n--xyz--\r\n"
        t0 = time.monotonic()
        status, _, out = request(port, "POST", "/api/classify", body, {"Content-Type": ctype})
        assert status == 429 and time.monotonic() - t0 < 2, out
        for sock in holds:
            sock.close()
        holds.clear()
        assert wait_empty(upload_dir) == []
        # Slots free again: the next upload is parsed (no 'file' field: 400, no model needed).
        body = b"--xyz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--xyz--\r\n"
        deadline = time.monotonic() + 5
        while (status := request(port, "POST", "/api/classify", body,
                                 {"Content-Type": ctype})[0]) == 429 \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 400
    finally:
        for sock in holds:
            sock.close()
        server.stop()


def test_uploads_are_classified_in_a_low_priority_worker_process(
        service: ClassifyService, tai_chi_clip: Path) -> None:
    result = service.classify(tai_chi_clip, "clip.mp4", timeout_s=120)
    assert result["file"] == "clip.mp4" and len(result["labels"]) == 5
    (pid,) = service.worker_pids
    assert pid != os.getpid()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + 10)
    assert ClassifyService(lambda: None).isolation is Isolation.THREAD  # cannot be pickled


SERVER = """
import sys
from streamclf.errors import DataError
from streamclf.web import WebHub, WebServer
from streamclf.web.formdata import FormFileWriter
from streamclf.web.uploads import ClassifierFactory, ClassifyService
service = ClassifyService(ClassifierFactory("x3d_xs", "random", device="cpu"))
server = WebServer(WebHub(), "127.0.0.1", 0, classifier=service, max_upload_mb=300).start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_big_upload_costs_the_server_a_few_mb() -> None:
    """A 120 MB upload through a server in its own process: its peak RSS grows by a few MB
    (it was ~11x the upload), and the upload is classified by the worker (400: not a
    video)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert request(port, "GET", "/api/status")[0] == 200
        before = vm_hwm_mb(proc.pid)
        boundary = "bnd"
        head, tail = part_head(boundary, "noise.mp4"), f"\r\n--{boundary}--\r\n".encode()
        block = os.urandom(MB)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.putrequest("POST", "/api/classify")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + 120 * MB + len(tail)))
        conn.endheaders()
        conn.send(head)
        for _ in range(120):
            conn.send(block)
        conn.send(tail)
        resp = conn.getresponse()
        out = json.loads(resp.read())
        conn.close()
        assert resp.status == 400 and "noise.mp4" in out["error"], out
        growth = vm_hwm_mb(proc.pid) - before
        print(f"server peak RSS grew {growth:.1f} MB for a 120 MB upload")
        assert growth < 30, f"server peak RSS grew {growth:.0f} MB for a 120 MB upload"
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
