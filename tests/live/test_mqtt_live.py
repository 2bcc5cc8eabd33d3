"""Live: the daemon on a real mosquitto while real calls run through Asterisk.

An alert in opens one high-priority ticket per dedupe key, and the customer's next caller
hears that we are already on it; call, agent and ticket events come out. The broker is
stopped during calls: callers notice nothing, events resume once it is back, and the
daemon says how many it had to drop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from acd.ami import AmiClient
from acd.config import load_config
from acd.tickets import Customer, TicketStore, alert_priority
from tests.conftest import LivePbx
from tests.live.harness import (
    LIVE_CONFIG,
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    metric,
    place_call,
    wait_members,
)
from tests.test_mqtt import Broker, Watcher

pytestmark = pytest.mark.live

ALICE = "Local/alice@test-agents"
CUSTOMER_NUMBER = "+4930555093"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    running = Broker(folder)
    await running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def prefix() -> str:
    return f"firstline-test-{uuid.uuid4().hex[:8]}"  # a topic tree of this test only


@pytest.fixture
def mqtt_daemon(
    started_pbx: LivePbx, tmp_path: Path, broker: Broker, prefix: str
) -> AsyncIterator[DaemonProcess]:
    config = tmp_path / "desk.yaml"
    config.write_text(
        LIVE_CONFIG.read_text()
        + f"""
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  client_id: {prefix}
  topic_prefix: {prefix}
  alerts_topic: {prefix}/alerts
  queue_size: 3
"""
    )
    process = DaemonProcess(tmp_path / "acd.log", config_path=config)
    process.start()
    process.wait_for(lambda line: line.get("event") == "mqtt.connected", timeout=20)
    yield process
    process.stop()


async def _until(condition: object, within: float = 30) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - other processes
            await asyncio.sleep(0.1)


async def test_an_alert_opens_one_ticket_and_the_customers_caller_is_told(
    ami: AmiClient, mqtt_daemon: DaemonProcess, broker: Broker, prefix: str, started_pbx: LivePbx
) -> None:
    async with TicketStore(mqtt_daemon.store_url) as store:
        await store.upsert_customer(
            Customer(id="acme", company="ACME", name="Ops", phones=(CUSTOMER_NUMBER,))
        )
    watcher = Watcher(broker.port, [f"{prefix}/#"])
    await watcher.connect(subscribe=True)
    try:
        alert = {
            "customer": "acme",
            "severity": "critical",
            "summary": "Print server down",
            "dedupe_key": f"{prefix}/printsrv",
        }
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{prefix}-monitor") as mon:
            for _ in range(2):  # monitoring repeats itself: one ticket all the same
                await mon.publish(f"{prefix}/alerts", json.dumps(alert).encode(), qos=1)
        first = await asyncio.to_thread(
            mqtt_daemon.wait_for, lambda line: line.get("event") == "alert.ticket", 20
        )
        assert first["created"] is True
        await asyncio.to_thread(
            mqtt_daemon.wait_for,
            lambda line: line.get("event") == "alert.ticket" and line["created"] is False,
            20,
        )
        async with TicketStore(mqtt_daemon.store_url) as store:
            [ticket] = await store.list()
        assert ticket.number == first["ticket"]
        assert ticket.customer_id == "acme"
        assert ticket.priority == alert_priority(load_config(mqtt_daemon.config_path).sla)[0]
        await _until(
            lambda: any(
                t == f"{prefix}/ticket" and m.get("ticket") == ticket.number
                for t, m in watcher.messages
            )
        )

        # The customer calls: told we are on it, the alert ticket travels with the call.
        await logout_everyone(ami)
        await dial_feature_code(ami, "*21", "201")
        await wait_members(ami, "first-level", lambda members: ALICE in members)
        log_start = len(started_pbx.log_since_start())
        uid = await place_call(ami, CUSTOMER_NUMBER)
        await collect(ami, uid, until="AgentComplete", within=40)
        routed = mqtt_daemon.wait_for(
            lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
        )
        assert routed["open_tickets"] == [ticket.number]
        assert "firstline/alert-known" in started_pbx.log_since_start()[log_start:]
        await _until(
            lambda: (
                [
                    m["event"]
                    for t, m in watcher.messages
                    if t == f"{prefix}/call" and m.get("uniqueid") == uid
                ]
                == ["routed", "finished"]
            )
        )
        agent_events = [m for t, m in watcher.messages if t == f"{prefix}/agent"]
        assert {m["agent"] for m in agent_events} == {"alice"}
        assert not any(
            CUSTOMER_NUMBER in json.dumps(m) for t, m in watcher.messages if t.endswith("/agent")
        )
    finally:
        await watcher.close()


async def test_a_broker_outage_costs_events_not_calls(
    ami: AmiClient, mqtt_daemon: DaemonProcess, broker: Broker, prefix: str
) -> None:
    """queue_size 3: while the broker is away, the oldest events beyond 3 are dropped."""
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")
    await wait_members(ami, "first-level", lambda members: ALICE in members)
    watcher = Watcher(broker.port, [f"{prefix}/call"])
    await watcher.connect(subscribe=True)
    try:
        broker.stop()
        await _until(lambda: metric("acd_mqtt_connected") == 0)
        # Two calls while the broker is away: both answered as ever (4 call events).
        for number in ("4930555094", "4930555095"):
            uid = await place_call(ami, number)
            journey = [e.name for e in await collect(ami, uid, until="Hangup", within=40)]
            assert "AgentConnect" in journey, journey
        # Bounded while away: 3 kept, the older ones dropped and counted.
        await _until(lambda: metric("acd_mqtt_events", fate="queued") == 3)
        assert metric("acd_mqtt_events", fate="dropped") >= 1

        await broker.start()
        await watcher.connect(subscribe=True)
        # The link retries with backoff (capped at 30 s): it is back within one more try.
        await _until(lambda: metric("acd_mqtt_connected") == 1, within=70)
        await _until(lambda: metric("acd_mqtt_events", fate="queued") == 0)
        dropped_while_away = metric("acd_mqtt_events", fate="dropped")
        # A call after the outage: its events arrive as before.
        uid = await place_call(ami, "4930555096")
        journey = [e.name for e in await collect(ami, uid, until="Hangup", within=40)]
        assert "AgentConnect" in journey, journey
        await _until(
            lambda: any(
                m.get("uniqueid") == uid and m["event"] == "finished" for _t, m in watcher.messages
            )
        )
        assert metric("acd_mqtt_events", fate="dropped") == dropped_while_away
    finally:
        await watcher.close()
