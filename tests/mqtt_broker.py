"""A real MQTT broker and subscriber for tests and benchmarks: Debian's ``mosquitto`` on
127.0.0.1 on a free port, with a config file written here, and a paho subscriber.

Use them as context managers so that every test cleans up; the broker can be stopped and
started again on the same port (with ``persistence``, sessions and queued messages survive).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"


def mosquitto_or_skip() -> str:
    path = MOSQUITTO if Path(MOSQUITTO).is_file() else shutil.which("mosquitto")
    if path is None:
        pytest.skip(f"{MOSQUITTO} not found: apt-get install mosquitto (the MQTT tests start a "
                    "real broker)")
    return path


def make_certs(workdir: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (``openssl``):
    ``(ca.crt, server.crt, server.key)``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: apt-get install openssl (the TLS test makes a CA)")
    workdir.mkdir(parents=True, exist_ok=True)
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    cert, key, csr = workdir / "server.crt", workdir / "server.key", workdir / "server.csr"
    ext = workdir / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cmd in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(ca), "-days", "2", "-subj", "/CN=streamclf test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
         str(csr), "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    return ca, cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``mosquitto`` on ``127.0.0.1:port``; ``users`` ({name: password}) turns anonymous
    access off; ``tls`` (see :func:`make_certs`) makes it ``mqtts://``. Not thread-safe:
    drive it from the test thread."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 persistence: bool = False,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        self.exe = mosquitto_or_skip()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "mosquitto.log"
        self.scheme = "mqtts" if tls else "mqtt"
        lines = [f"listener {self.port} 127.0.0.1"]
        if tls is not None:  # (ca, cert, key): this listener speaks TLS only
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        # Started as root, mosquitto drops to the user "mosquitto", who may not read the test's
        # folder: stay who we are (the option only matters to root).
        lines += [f"user {getpass.getuser()}", f"log_dest file {self.log}",
                 "log_type error", "log_type warning", "log_type notice",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {workdir}/", "max_queued_messages 10000"]
        if users:
            passwd = workdir / "passwd"
            for i, (name, password) in enumerate(users.items()):
                cmd = ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd),
                       name, password]
                subprocess.run(cmd, check=True, timeout=30, capture_output=True)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = workdir / "mosquitto.stderr"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Broker:
        """Start and wait until it accepts connections."""
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"mosquitto exited: {self.stderr.read_text()} "
                                   f"{self._log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self._log_text()}")

    def _log_text(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (it saves its persistence file), then SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Subscriber:
    """A paho client subscribed to ``topic`` with QoS 1, recording ``(topic, payload, qos,
    retain)``; it reconnects by itself (``session``: a persistent session of that id)."""

    def __init__(self, port: int, topic: str = "streamclf/#", session: str | None = None,
                 user: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, int, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=session or "", clean_session=session is None)
        if user is not None:
            self.client.username_pw_set(*user)
        self.client.reconnect_delay_set(0.2, 0.5)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(*args: Any) -> None:
            self._subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((msg.topic, msg.payload.decode(), msg.qos,
                                      bool(msg.retain)))

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.on_subscribe = on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the test subscriber could not subscribe")

    def got(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _, _ in self.messages if t == topic]

    def all(self) -> list[tuple[str, str, int, bool]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def wait_for(cond: Any, timeout_s: float = 10.0) -> bool:
    """Poll ``cond()`` every 20 ms until it is true or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())
