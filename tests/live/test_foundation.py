"""Live: a call travels caller → hotline → daemon → queue → agent on the real Asterisk 22,
the dialplan falls back when the daemon is down, and hostile FastAGI clients don't hurt.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from acd.ami import AmiClient
from tests.conftest import LivePbx
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    login_agent,
    logout_everyone,
    place_call,
    queue_members,
    wait_members,
    waiting_callers,
)

pytestmark = pytest.mark.live

CALL_JOURNEY = ("QueueCallerJoin", "AgentConnect", "AgentComplete")


async def test_call_reaches_agent_through_daemon_route(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    # the FastAGI server serves as many calls at once as the config says (not its default)
    listening = daemon.wait_for(lambda line: line.get("event") == "agi.listening")
    assert listening["max_sessions"] == 128
    await logout_everyone(ami)
    await login_agent(ami, "first-level", "Local/alice@test-agents")
    uid = await place_call(ami, "4930555001")
    events = await collect(ami, uid, until="AgentComplete", within=30)
    assert [e.name for e in events if e.name in CALL_JOURNEY] == list(CALL_JOURNEY)
    assert {e.get("Queue") for e in events if e.name in CALL_JOURNEY} == {"first-level"}

    routed = daemon.wait_for(
        lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
    )
    assert routed["queue"] == "first-level"
    # The daemon saw the whole journey of this very call, in order.
    for name in CALL_JOURNEY:
        daemon.wait_for(
            lambda line, name=name: (
                line.get("event") == "call.event"
                and line.get("ami_event") == name
                and line.get("uniqueid") == uid
            )
        )
    journey = [
        line["ami_event"]
        for line in daemon.lines()
        if line.get("event") == "call.event" and line.get("uniqueid") == uid
    ]
    assert [n for n in journey if n in CALL_JOURNEY] == list(CALL_JOURNEY)
    finished = daemon.wait_for(
        lambda line: line.get("event") == "call.finished" and line.get("uniqueid") == uid
    )
    assert finished["outcome"] == "answered"
    assert finished["agent"] == "alice"
    assert finished["talk"] >= 1.5  # the harness agent talks for 2 s
    # From the routing decision on, every line about this call names its queue.
    lines = [line for line in daemon.lines() if line.get("uniqueid") == uid]
    after_routing = lines[
        next(i for i, line in enumerate(lines) if line["event"] == "call.routed") :
    ]
    assert {line.get("queue") for line in after_routing} == {"first-level"}, after_routing


async def test_call_reaches_default_queue_with_daemon_stopped(
    ami: AmiClient, started_pbx: LivePbx
) -> None:
    await logout_everyone(ami)
    await login_agent(ami, "first-level", "Local/alice@test-agents")
    with socket.socket() as probe:  # nothing may be serving FastAGI for this test
        assert probe.connect_ex(("127.0.0.1", 4573)) != 0
    uid = await place_call(ami, "4930555002")
    events = await collect(ami, uid, until="AgentComplete", within=30)
    assert [e.name for e in events if e.name in CALL_JOURNEY] == list(CALL_JOURNEY)
    assert {e.get("Queue") for e in events if e.name in CALL_JOURNEY} == {"first-level"}


async def test_hostile_fastagi_clients_leave_daemon_serving(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    await logout_everyone(ami)
    await login_agent(ami, "first-level", "Local/alice@test-agents")
    # One client connects and closes at once, one sends garbage, one a header and vanishes.
    for payload in (b"", b"\x00\xff garbage\r\n\r\n" * 50, b"agi_network_script: route\n"):
        _reader, writer = await asyncio.open_connection("127.0.0.1", 4573)
        if payload:
            writer.write(payload)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    uid = await place_call(ami, "4930555003")
    events = await collect(ami, uid, until="AgentComplete", within=30)
    assert [e.name for e in events if e.name in CALL_JOURNEY] == list(CALL_JOURNEY)
    routed = daemon.wait_for(
        lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
    )
    assert routed["queue"] == "first-level"
    assert daemon.running


async def test_agent_feature_codes_log_in_pause_and_log_out(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    await logout_everyone(ami)
    alice = "Local/alice@test-agents"
    await dial_feature_code(ami, "*21", "201")
    members = await wait_members(ami, "first-level", lambda m: alice in m)
    assert members[alice].get("Paused") == "0"
    assert alice not in await queue_members(ami, "second-printing")  # printing 2 < 4: not qualified
    assert "Alice Martin" in started_pbx.cli("queue show first-level")

    await dial_feature_code(ami, "*231", "201")
    members = await wait_members(ami, "first-level", lambda m: m[alice].get("Paused") == "1")
    assert members[alice].get("PausedReason") == "break"

    # The daemon restarts: the agent's state comes back from Asterisk, not from memory.
    daemon.stop()
    daemon.start()
    resynced = daemon.wait_for(lambda line: line.get("event") == "state.resynced")
    assert resynced["agents"].get("paused") == 1

    await dial_feature_code(ami, "*24", "201")
    await wait_members(ami, "first-level", lambda m: m[alice].get("Paused") == "0")

    await dial_feature_code(ami, "*22", "201")
    await wait_members(ami, "first-level", lambda m: alice not in m)
    daemon.wait_for(
        lambda line: line.get("event") == "agent.feature" and line.get("result") == "logged-out"
    )


def test_refused_ami_login_ends_the_daemon_with_a_clear_error(
    started_pbx: LivePbx, tmp_path: Path
) -> None:
    process = DaemonProcess(
        tmp_path / "acd.log", env={"FIRSTLINE_TEST_SECRET": "not-the-secret-3f9a"}
    )
    process.start(wait_ready=False)
    try:
        assert process.wait_exit(timeout=20) == 2
    finally:
        process.stop()
    refused = process.wait_for(lambda line: line.get("event") == "daemon.ami_login_refused")
    assert (
        "not-the-secret-3f9a" not in (tmp_path / "acd.log").read_text()
    )  # the secret is never logged
    assert refused["level"] == "error"


async def test_escape_digit_without_a_booking_keeps_the_callers_place(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    """Until a callback is booked, pressing the escape digit must not cost the caller
    their place: with the daemon down nothing can be booked, and they go back into the
    queue where they were, never to its end."""
    daemon.stop()
    await logout_everyone(ami)  # nobody answers: the callers wait
    first = await place_call(ami, "4930555011")
    await asyncio.sleep(0.5)
    presser = await place_call(ami, "4930555012", phone="press9")
    await asyncio.sleep(0.5)
    third = await place_call(ami, "4930555013")
    for _ in range(50):
        if len(await waiting_callers(ami, "first-level")) == 3:
            break
        await asyncio.sleep(0.1)
    assert await waiting_callers(ami, "first-level") == [first, presser, third]
    left = await collect(ami, presser, until="QueueCallerLeave", within=10)
    assert left[-1].get("Position") == "2"
    # They hear that no callback could be booked (a few seconds), then are back.
    for _ in range(200):
        if len(await waiting_callers(ami, "first-level")) == 3:
            break
        await asyncio.sleep(0.1)
    assert await waiting_callers(ami, "first-level") == [first, presser, third]
    await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)
