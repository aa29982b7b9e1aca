"""The MQTT sink against a real mosquitto started by the test on 127.0.0.1 and a real paho
subscriber: alerts with QoS 1, the retained label, availability and the last will, a
password, the broker going away and coming back, a bounded close."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamclf.errors import ConfigError
from streamclf.live.events import make_event, read_events
from streamclf.sections import MqttConfig
from streamclf.sinks.mqtt import MqttSink
from streamclf.types import Event, EventType
from tests.alert_run import STREAM, run_alerts
from tests.conftest import REPO
from tests.mqtt_broker import (
    Broker,
    Subscriber,
    free_port,
    make_certs,
    mosquitto_or_skip,
    wait_for,
)

FAST = {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}


def alert(n: int, phase: str = "start", stream: str = "door") -> Event:
    return make_event(EventType.ALERT, stream, 1_000.0 + n, alert_id=f"id-{n}", phase=phase,
                      label="falling", score=0.9, max_score=0.9, media_ts=float(n))


def test_alerts_labels_and_availability(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker, Subscriber(broker.port) as sub:
        sink = MqttSink(MqttConfig(url=broker.url), **FAST).start()
        try:
            assert wait_for(lambda: sub.got("streamclf/available") == ["online"])
            sink.write(make_event(EventType.SOURCE_OPENED, "door"))
            assert wait_for(lambda: sub.got("streamclf/door/label") == ["none"])
            sink.write(make_event(EventType.LABEL_START, "door", label="falling", score=0.9))
            first = alert(1)
            sink.write(first)
            sink.write(make_event(EventType.PREDICTION, "door", labels=["x"]))  # ignored
            assert wait_for(lambda: len(sub.got("streamclf/door/alert")) == 1)
            assert json.loads(sub.got("streamclf/door/alert")[0]) == first.as_dict()
            assert wait_for(lambda: sub.got("streamclf/door/label") == ["none", "falling"])
            by_topic = {t: (qos, retain) for t, _, qos, retain in sub.all()}
            assert by_topic["streamclf/door/alert"] == (1, False)
            assert by_topic["streamclf/door/label"][0] == 1
            # A subscriber that comes later gets the current label and availability.
            with Subscriber(broker.port) as late:
                assert wait_for(lambda: late.got("streamclf/door/label") == ["falling"])
                assert late.got("streamclf/available") == ["online"]
                assert all(retain for _, _, _, retain in late.all())
                assert late.got("streamclf/door/alert") == []  # alerts are not retained
            sink.write(make_event(EventType.LABEL_END, "door", label="falling", score=0.1))
            assert wait_for(lambda: sub.got("streamclf/door/label")[-1:] == ["none"])
            assert sink.health().connected and sink.health().dropped == 0
        finally:
            t0 = time.monotonic()
            assert sink.close(2.0)
            assert time.monotonic() - t0 < 2.5
        assert wait_for(lambda: sub.got("streamclf/available") == ["online", "offline"])
        assert sink.health().sent >= 5  # online, 3 labels, the alert (offline after close)


def test_the_will_says_offline_when_the_process_dies(tmp_path: Path) -> None:
    """SIGKILL the process that holds the sink: the broker publishes its last will."""
    with Broker(tmp_path) as broker, Subscriber(broker.port) as sub:
        code = ("import sys, time\n"
                "from streamclf.sections import MqttConfig\n"
                "from streamclf.sinks.mqtt import MqttSink\n"
                "sink = MqttSink(MqttConfig(url=sys.argv[1]), keepalive_s=5).start()\n"
                "deadline = time.monotonic() + 20\n"
                "while not sink.connected and time.monotonic() < deadline: time.sleep(0.02)\n"
                "print('READY' if sink.connected else 'FAILED', flush=True)\n"
                "time.sleep(60)\n")
        proc = subprocess.Popen([sys.executable, "-c", code, broker.url], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
            assert wait_for(lambda: sub.got("streamclf/available") == ["online"])
            os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: an unclean end
            proc.wait(10)
            assert wait_for(lambda: sub.got("streamclf/available") == ["online", "offline"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def test_password_login_and_masking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "pa55-Wörd"
    with Broker(tmp_path, users={"cam": secret}) as broker:
        url = f"mqtt://cam:{secret}@127.0.0.1:{broker.port}"
        bad = MqttSink(MqttConfig(url=url.replace(secret, "wrong")), **FAST)
        with caplog.at_level(logging.DEBUG, logger="streamclf.sinks.mqtt"):
            bad.start()
            assert wait_for(lambda: bad.health().last_error is not None)
            time.sleep(0.3)
            assert not bad.connected
            assert "refused" in str(bad.health().last_error)
            assert bad.close(1.0)
            with Subscriber(broker.port, user=("cam", secret)) as sub:
                good = MqttSink(MqttConfig(url=url), **FAST).start()
                try:
                    assert wait_for(lambda: good.connected)
                    good.write(alert(1))
                    assert wait_for(lambda: len(sub.got("streamclf/door/alert")) == 1)
                finally:
                    good.close(1.0)
        shown = " ".join([caplog.text, repr(good), repr(bad), str(good.health()),
                          str(bad.health()), repr(MqttConfig(url=url))])
        assert secret not in shown and "wrong" not in shown and "cam:***@" in shown
    with pytest.raises(ConfigError) as err:
        MqttConfig(url=f"http://cam:{secret}@127.0.0.1:1883")
    assert secret not in str(err.value)


def test_mqtts_checks_the_broker_certificate(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``mqtts://``: TLS against the system's CA certificates (here: a test CA, given the
    way OpenSSL takes an extra one, $SSL_CERT_FILE); a broker it cannot verify is refused."""
    ca, cert, key = make_certs(tmp_path / "certs")
    with Broker(tmp_path / "broker", tls=(ca, cert, key)) as broker:
        assert broker.url.startswith("mqtts://")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # not the CA: cannot verify
        untrusted = MqttSink(MqttConfig(url=broker.url), **FAST).start()
        try:
            assert wait_for(lambda: untrusted.health().last_error is not None)
            assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.health().last_error)
            assert not untrusted.connected
        finally:
            assert untrusted.close(1.0)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        sink = MqttSink(MqttConfig(url=broker.url), **FAST).start()
        try:
            assert wait_for(lambda: sink.connected)
            sink.write(alert(1))
            assert wait_for(lambda: sink.health().sent >= 2)  # online + the alert, acked
            assert sink.health().queued == 0
        finally:
            assert sink.close(1.0)


@pytest.mark.slow
def test_broker_down_then_back_delivers_the_queue_and_counts_drops(tmp_path: Path) -> None:
    broker = Broker(tmp_path, persistence=True).start()
    sub = Subscriber(broker.port, session="streamclf-test-sub")  # kept by the broker
    sink = MqttSink(MqttConfig(url=broker.url, queue=5), **FAST).start()
    try:
        assert wait_for(lambda: sink.connected)
        sink.write(make_event(EventType.LABEL_START, "door", label="falling", score=0.9))
        sink.write(alert(0))
        assert wait_for(lambda: len(sub.got("streamclf/door/alert")) == 1)
        broker.stop()
        assert wait_for(lambda: not sink.connected)
        for n in range(1, 9):  # 8 alerts while down: 5 kept, the 3 oldest dropped
            sink.write(alert(n))
        sink.write(make_event(EventType.LABEL_END, "door", label="falling", score=0.1))
        health = sink.health()
        assert (health.queued, health.dropped, health.connected) == (5, 3, False)
        assert sink.queue_health() == (5, 3)
        time.sleep(1.0)  # down a while: reconnect attempts back off, nothing is lost
        broker.start()
        want = ["id-0", "id-4", "id-5", "id-6", "id-7", "id-8"]

        def ids() -> list[str]:  # QoS 1 is at least once: a redelivery may repeat one
            seen = [json.loads(p)["alert_id"] for p in sub.got("streamclf/door/alert")]
            return list(dict.fromkeys(seen))

        assert wait_for(lambda: len(ids()) >= 6, 20), ids()
        assert ids() == want  # each once at least, in order, the 3 oldest of the 8 dropped
        assert wait_for(lambda: sub.got("streamclf/door/label")[-1:] == ["none"])
        assert wait_for(lambda: sink.health().queued == 0)
        assert sink.health().dropped == 3 and sink.health().connects == 2
        assert sub.got("streamclf/available").count("online") >= 2  # announced again
    finally:
        sink.close(1.0)
        sub.close()
        broker.stop()


def test_close_is_bounded_when_the_broker_is_down() -> None:
    mosquitto_or_skip()
    sink = MqttSink(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", queue=3),
                    **FAST).start()
    for n in range(5):
        sink.write(alert(n))
    assert wait_for(lambda: sink.health().last_error is not None)
    t0 = time.monotonic()
    assert sink.close(1.0)
    assert time.monotonic() - t0 < 1.6
    assert sink.health().dropped == 5 and sink.health().queued == 0  # 2 + the 3 left


def test_a_run_publishes_its_alerts_and_labels(tmp_path: Path) -> None:
    """``LivePipeline`` attaches the sink when ``mqtt`` is set."""
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port, "home/#") as sub:
        run_alerts(tmp_path, mqtt={"url": broker.url, "prefix": "home"})
        alerts = [e for e in read_events(tmp_path / "ev.jsonl") if e["type"] == "alert"]
        topic = f"home/{STREAM}/alert"
        assert wait_for(lambda: len(sub.got(topic)) == 2)
        assert [json.loads(p) for p in sub.got(topic)] == alerts
        assert sub.got(f"home/{STREAM}/label")[-1] == "none"  # ended with the run
        assert sub.got("home/available") == ["online", "offline"]
