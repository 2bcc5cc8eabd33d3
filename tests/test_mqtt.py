"""The MQTT link against a real mosquitto, and the alert format it accepts.

Each broker test starts its own mosquitto (/usr/sbin/mosquitto) on a free loopback port,
with persistence in the test's folder, so a watcher's session (and the messages queued for
it) survives the broker's restart the way a production subscriber's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import inspect
import json
import random
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiomqtt
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.config.model import Mqtt
from acd.mqtt import MAX_ALERT_BYTES, AlertInvalid, MqttLink, backoff_delay, parse_alert
from acd.tickets import Alert, TicketStatus

MOSQUITTO = shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
WAIT = 15.0  # seconds any awaited condition may take before the test fails

# --- the alert format --------------------------------------------------------------------


def _alert_bytes(**fields: Any) -> bytes:
    message: dict[str, Any] = {
        "customer": "acme",
        "severity": "critical",
        "summary": "Disk /var full on srv42",
        "dedupe_key": "srv42/disk",
    }
    message.update(fields)
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


def test_a_valid_alert_is_parsed() -> None:
    assert parse_alert(_alert_bytes()) == Alert(
        customer_id="acme",
        severity="critical",
        summary="Disk /var full on srv42",
        dedupe_key="srv42/disk",
    )


def test_what_an_alert_may_vary() -> None:
    alert = parse_alert(
        _alert_bytes(severity="MaJoR", summary="  Disk full\n", source="prometheus", labels={})
    )
    assert (alert.severity, alert.summary) == ("major", "Disk full")
    long = parse_alert(_alert_bytes(summary="x" * 2000))
    assert long.summary == "x" * 499 + "…"
    assert parse_alert(bytearray(_alert_bytes())) == parse_alert(_alert_bytes())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object (got an array)"),
        (b'"text"', "must be a JSON object (got a string)"),
        (b'{"customer": NaN}', "NaN is not a number"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (_alert_bytes(summary=...), "missing field(s): summary"),
        (_alert_bytes(customer=..., dedupe_key=...), "missing field(s): customer, dedupe_key"),
        (_alert_bytes(severity=3), "severity must be a string (got a number)"),
        (_alert_bytes(customer=None), "customer must be a string (got null)"),
        (_alert_bytes(severity="fatal"), "severity 'fatal' is not one of"),
        (_alert_bytes(summary=" \n "), "summary must have 1 to 500 characters"),
        (_alert_bytes(summary="ring\x07"), "unprintable character U+0007"),
        (_alert_bytes(customer="x" * 65), "customer must have 1 to 64 characters"),
        (_alert_bytes(customer="acme\u202e"), "unprintable character U+202E"),
        (_alert_bytes(dedupe_key="srv 42"), "dedupe_key 'srv 42' must be"),
        (_alert_bytes(dedupe_key="k" * 201), "dedupe_key 'kkkkkkkkkk"),
        (b'{"customer": "a", "customer": "b"}', "field 'customer' appears twice"),
        (_alert_bytes(summary="x" * MAX_ALERT_BYTES), f"more than {MAX_ALERT_BYTES}"),
    ],
)
def test_an_invalid_alert_says_why(payload: bytes, reason: str) -> None:
    with pytest.raises(AlertInvalid) as refused:
        parse_alert(payload)
    assert reason in str(refused.value)
    assert len(str(refused.value)) <= 200  # safe to log, whatever was sent


def test_the_size_limit_is_inclusive() -> None:
    base = _alert_bytes(summary="")
    padded = _alert_bytes(summary="y" * (MAX_ALERT_BYTES - len(base)))
    assert len(padded) == MAX_ALERT_BYTES
    assert parse_alert(padded).summary.startswith("y")
    with pytest.raises(AlertInvalid):
        parse_alert(padded + b" ")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_garbage_bytes_only_ever_raise_alert_invalid(payload: bytes) -> None:
    try:
        alert = parse_alert(payload)
    except AlertInvalid as error:
        reason = str(error)
    else:
        assert isinstance(alert, Alert)
        return
    assert len(reason) <= 200


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)
_field_values = st.text(max_size=300) | _json_values | st.sampled_from(["critical", "MINOR"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["customer", "severity", "summary", "dedupe_key", "other"]),
        _field_values,
    )
)
def test_garbage_alerts_only_ever_raise_alert_invalid(message: dict[str, Any]) -> None:
    try:
        alert = parse_alert(json.dumps(message).encode())
    except AlertInvalid as error:
        reason = str(error)
    else:
        assert alert.severity in {"critical", "minor"}
        assert alert.customer_id == message["customer"]
        return
    assert len(reason) <= 200


# --- events out, without a broker --------------------------------------------------------


def _config(port: int = 1, **fields: Any) -> Mqtt:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": "fl-link",
        "topic_prefix": "fl-test",
        "alerts_topic": "fl-test/alerts",
        "queue_size": 5,
    }
    values.update(fields)
    return Mqtt(**values)


def test_publish_never_waits_and_a_full_queue_drops_the_oldest() -> None:
    assert not inspect.iscoroutinefunction(MqttLink.publish)
    link = MqttLink(_config(queue_size=3))
    for n in range(1, 9):
        assert link.publish("call", {"n": n})
    assert (link.queued, link.dropped, link.published, link.connected) == (3, 5, 0, False)


def test_events_that_cannot_be_sent_are_refused() -> None:
    link = MqttLink(_config())
    with structlog.testing.capture_logs() as logs:
        assert not link.publish("call/x", {})
        assert not link.publish("#", {})
        assert not link.publish("", {})
        assert not link.publish("call", {"x": object()})
        assert not link.publish("call", {"x": float("nan")})
    assert link.queued == 0
    assert [entry["event"] for entry in logs] == ["mqtt.event_refused"] * 5


def test_the_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, initial=0.5, maximum=30, rng=rng) for n in range(12)]
    nominal = [min(30.0, 0.5 * 2**n) for n in range(12)]
    assert all(d / 2 <= delay <= d for delay, d in zip(delays, nominal, strict=True))
    assert max(delays) <= 30
    assert len(set(delays)) == len(delays)


# --- against a real mosquitto ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Broker:
    """A mosquitto of this test only, restartable on the same port with its state."""

    def __init__(self, folder: Path, *, password_file: Path | None = None) -> None:
        assert MOSQUITTO is not None
        self.port = _free_port()
        self.folder = folder
        self.log = folder / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"user {getpass.getuser()}",  # as root, mosquitto would become 'mosquitto'
            "persistence true",
            f"persistence_location {folder}/",
            "log_dest stderr",
            "log_type all",
        ]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=log
            )
        await _until(self._accepts, f"mosquitto listening on {self.port}")

    def _accepts(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"mosquitto exited:\n{self.log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None


@pytest.fixture
def broker_folder(tmp_path: Path) -> Path:
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed (scripts/install-deps installs it)")
    return tmp_path


@pytest.fixture
async def broker(broker_folder: Path) -> AsyncIterator[Broker]:
    running = Broker(broker_folder)
    await running.start()
    try:
        yield running
    finally:
        running.stop()


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail after WAIT seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while not condition():  # noqa: ASYNC110 - states of other processes, no event
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for: {what}")


class Watcher:
    """A subscriber with a persistent session (like a production consumer)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.port = port
        self.topics = topics
        self.messages: list[tuple[str, Any]] = []
        self.raw: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def connect(self, *, subscribe: bool) -> None:
        self._ready.clear()
        self._task = asyncio.create_task(self._watch(subscribe))
        async with asyncio.timeout(WAIT):
            await self._ready.wait()

    async def _watch(self, subscribe: bool) -> None:
        client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier="fl-watcher", clean_session=False, timeout=5
        )
        with contextlib.suppress(aiomqtt.MqttError):
            async with client:
                if subscribe:
                    await client.subscribe([(topic, 1) for topic in self.topics])
                self._ready.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    self.raw.append(message.payload)
                    self.messages.append((message.topic.value, json.loads(message.payload)))

    async def disconnected(self) -> None:
        assert self._task is not None
        async with asyncio.timeout(WAIT):
            await self._task

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _send(port: int, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="fl-monitoring", timeout=5) as client:
        await client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def _running(link: MqttLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _events(n: range) -> list[tuple[str, Any]]:
    return [("fl-test/call", {"n": i}) for i in n]


async def test_events_and_alerts_survive_a_broker_restart(broker: Broker) -> None:
    alerts: list[Alert] = []

    async def on_alert(alert: Alert) -> None:
        if alert.dedupe_key == "explodes":
            raise RuntimeError("database down")
        alerts.append(alert)

    watcher = Watcher(broker.port, ["fl-test/call", "fl-test/agent"])
    await watcher.connect(subscribe=True)
    link = MqttLink(_config(broker.port), on_alert=on_alert, backoff_initial=0.05, backoff_max=0.5)
    try:
        async with _running(link):
            await _until(lambda: link.connected, "the link connects")
            # Events out, in order, as JSON.
            for n in range(1, 4):
                assert link.publish("call", {"n": n})
            await _until(lambda: len(watcher.messages) == 3, "three events arrive")
            assert watcher.messages == _events(range(1, 4))
            # The broker may pass an event on before it acknowledges it.
            await _until(lambda: link.published == 3, "three events acknowledged")
            assert (link.queued, link.dropped) == (0, 0)

            # Alerts in: a valid one is handed over, invalid ones and failing handlers are
            # counted and the link carries on.
            await _send(broker.port, "fl-test/alerts", b"{not json")
            await _send(broker.port, "fl-test/alerts", _alert_bytes(dedupe_key="explodes"))
            await _send(broker.port, "fl-test/alerts", _alert_bytes())
            await _until(lambda: len(alerts) == 1, "the alert reaches on_alert")
            assert alerts == [parse_alert(_alert_bytes())]
            assert (link.alerts_received, link.alerts_invalid, link.alerts_failed) == (3, 1, 1)
            # Alerts are delivered at least once: one whose acknowledgement the broker has
            # not processed yet comes again after a restart (the store dedupes it). Here
            # the broker has them all before it stops, so each comes once.
            await _until(
                lambda: broker.log.read_text().count("Received PUBACK from fl-link") == 3,
                "the broker has the link's acknowledgements",
            )
            await _until(  # and the watcher's, or it would get event 3 again
                lambda: broker.log.read_text().count("Received PUBACK from fl-watcher") == 3,
                "the broker has the watcher's acknowledgements",
            )

            # The broker goes away: publishing goes on without waiting, and the queue
            # (5 places) keeps the newest events.
            broker.stop()
            await watcher.disconnected()
            await _until(lambda: not link.connected, "the link notices the broker is gone")
            for n in range(4, 16):
                assert link.publish("call", {"n": n})
            assert (link.queued, link.dropped, link.published) == (5, 7, 3)

            # The broker returns: the queued events follow, then new ones.
            await broker.start()
            await _until(lambda: link.connected, "the link reconnects")
            await _until(lambda: link.published == 8, "the queued events are published")
            assert link.publish("call", {"n": 16})
            await watcher.connect(subscribe=False)  # its session kept the subscription
            await _until(lambda: len(watcher.messages) == 9, "the resumed events arrive")
            assert watcher.messages == _events(range(1, 4)) + _events(range(11, 17))
            await _until(lambda: link.published == 9, "the last event acknowledged")
            assert (link.queued, link.dropped, link.reconnects) == (0, 7, 1)

            # The link subscribed again: alerts still arrive.
            await _send(broker.port, "fl-test/alerts", _alert_bytes(dedupe_key="after"))
            await _until(lambda: len(alerts) == 2, "an alert after the restart")
            assert alerts[1].dedupe_key == "after"
        assert broker.log.read_text().count("Received SUBSCRIBE from fl-link") == 2
    finally:
        await watcher.close()


async def test_events_are_json_with_sorted_keys(broker: Broker) -> None:
    watcher = Watcher(broker.port, ["fl-test/ticket"])
    await watcher.connect(subscribe=True)
    link = MqttLink(_config(broker.port), backoff_initial=0.05)
    when = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    try:
        async with _running(link):
            payload = {"status": TicketStatus.DONE, "at": when, "b": [1, "ü"]}
            assert link.publish("ticket", MappingProxyType(payload | {"c": MappingProxyType({})}))
            await _until(lambda: len(watcher.raw) == 1, "the event arrives")
    finally:
        await watcher.close()
    assert watcher.raw == [
        '{"at":"2026-03-02T09:00:00+00:00","b":[1,"ü"],"c":{},"status":"done"}'.encode(),
    ]


async def test_every_event_is_published_queued_or_counted_as_dropped(broker: Broker) -> None:
    """The broker dies while events stream out: none goes unaccounted for.

    Where the stop lands is up to the scheduler (often with an event in flight); what must
    hold wherever it lands: acknowledged + queued + dropped = produced, and after the
    restart the watcher has every event that was not dropped. An event in flight when the
    link died that no longer fits the queue counts as dropped although the broker may have
    it: `dropped` never under-counts, and over-counts by at most that one event.
    """
    total = 400
    watcher = Watcher(broker.port, ["fl-test/call"])
    await watcher.connect(subscribe=True)
    link = MqttLink(_config(broker.port, queue_size=100), backoff_initial=0.05, backoff_max=0.5)
    produced = 0

    async def produce() -> None:
        nonlocal produced
        while produced < total:
            produced += 1
            assert link.publish("call", {"n": produced})
            await asyncio.sleep(0)

    try:
        async with _running(link):
            await _until(lambda: link.connected, "the link connects")
            producer = asyncio.create_task(produce())
            await _until(lambda: link.published >= 20, "events flow")
            broker.stop()
            await _until(lambda: not link.connected, "the link notices the broker is gone")
            assert link.published + link.queued + link.dropped == produced
            async with asyncio.timeout(WAIT):
                await producer
            await watcher.disconnected()
            assert link.dropped > 0
            await broker.start()
            await _until(
                lambda: link.published + link.dropped == total,
                "all acknowledged or dropped",
            )
            assert link.queued == 0
            await watcher.connect(subscribe=False)
            expected = total - link.dropped

            def distinct() -> set[int]:
                return {payload["n"] for _, payload in watcher.messages}

            await _until(lambda: len(distinct()) >= expected, "every kept event arrives")
            assert len(distinct()) - expected in (0, 1)
            assert distinct() <= set(range(1, total + 1))
            assert max(distinct()) == total  # the newest events are the ones kept
    finally:
        await watcher.close()


async def test_an_alert_sent_while_the_daemon_is_away_arrives_later(broker: Broker) -> None:
    alerts: list[Alert] = []

    async def on_alert(alert: Alert) -> None:
        alerts.append(alert)

    link = MqttLink(_config(broker.port), on_alert=on_alert, backoff_initial=0.05)
    async with _running(link):
        await _until(lambda: link.connected, "the link connects")
    # The daemon stopped; its session on the broker keeps the alert for it.
    await _send(broker.port, "fl-test/alerts", _alert_bytes(dedupe_key="while-away"))
    again = MqttLink(_config(broker.port), on_alert=on_alert, backoff_initial=0.05)
    async with _running(again):
        await _until(lambda: len(alerts) == 1, "the alert kept by the broker")
    assert alerts[0].dedupe_key == "while-away"


async def test_without_an_alert_handler_the_link_does_not_subscribe(broker: Broker) -> None:
    # A daemon without a store must not take (acknowledge) alerts meant for one that has.
    link = MqttLink(_config(broker.port), backoff_initial=0.05)
    async with _running(link):
        await _until(lambda: link.connected, "the link connects")
    # mosquitto logs every SUBSCRIBE before it answers it; the restart test sees the link's.
    assert "Sending CONNACK to fl-link" in broker.log.read_text()
    assert "Received SUBSCRIBE from fl-link" not in broker.log.read_text()


async def test_the_password_is_used_and_never_logged(
    broker_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-broker-password"
    password_file = broker_folder / "passwords"
    subprocess.run(  # noqa: ASYNC221 - a quick local tool
        ["mosquitto_passwd", "-b", "-c", str(password_file), "firstline", secret],
        check=True,
        capture_output=True,
    )
    password_file.chmod(0o600)
    secured = Broker(broker_folder, password_file=password_file)
    await secured.start()
    try:
        with structlog.testing.capture_logs() as logs:
            monkeypatch.setenv("FL_TEST_MQTT_PASSWORD", "wrong-password")
            config = _config(
                secured.port, username="firstline", password={"env": "FL_TEST_MQTT_PASSWORD"}
            )
            refused = MqttLink(config, backoff_initial=0.05, backoff_max=0.1)
            async with _running(refused):
                await _until(
                    lambda: sum(e["event"] == "mqtt.link_down" for e in logs) >= 2,
                    "the refused login is retried",
                )
                assert not refused.connected
            monkeypatch.setenv("FL_TEST_MQTT_PASSWORD", secret)
            accepted = MqttLink(config, backoff_initial=0.05)
            async with _running(accepted):
                await _until(lambda: accepted.connected, "the link logs in")
        events = {entry["event"] for entry in logs}
        assert {"mqtt.link_down", "mqtt.reconnect_wait", "mqtt.connected"} <= events
        assert secret not in repr(logs)
        assert "wrong-password" not in repr(logs)
    finally:
        secured.stop()


async def test_an_unset_password_is_reported_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FL_TEST_MQTT_MISSING", raising=False)
    config = _config(username="firstline", password={"env": "FL_TEST_MQTT_MISSING"})
    link = MqttLink(config, backoff_initial=0.05, backoff_max=0.1)
    with structlog.testing.capture_logs() as logs:
        async with _running(link):
            await _until(
                lambda: sum(e["event"] == "mqtt.password_unavailable" for e in logs) >= 2,
                "the missing password is reported again",
            )
    unavailable = next(e for e in logs if e["event"] == "mqtt.password_unavailable")
    assert "FL_TEST_MQTT_MISSING" in unavailable["error"]
