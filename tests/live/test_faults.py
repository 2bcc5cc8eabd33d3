"""Live: the faults a hotline meets in production (issue #8) — nothing lost, nobody stranded.

Elsewhere: a daemon SIGKILLed during callback dialogues (test_callback), an invalid config
reloaded while callers wait (test_reload), a refused AMI login and a dead daemon at call
time (test_foundation).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acd.ami import AmiClient, Event
from acd.tickets import TicketStore
from tests.conftest import LivePbx
from tests.live.harness import (
    LIVE_CONFIG,
    TEST_SECRET,
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    metric,
    place_call,
    wait_members,
    waiting_callers,
)

pytestmark = pytest.mark.live

ALICE = "Local/alice@test-agents"


async def _ami_client() -> AmiClient:
    client = AmiClient(
        host="127.0.0.1", port=5038, username="firstline", secret=TEST_SECRET, reconnect=False
    )
    client.runner = asyncio.create_task(client.run())  # type: ignore[attr-defined]
    await client.wait_logged_in(timeout=15)
    return client


@pytest.fixture
async def fresh_ami(started_pbx: LivePbx) -> AsyncIterator[list[AmiClient]]:
    """AMI clients the test opens (one per Asterisk run), closed after it."""
    clients: list[AmiClient] = []
    yield clients
    for client in clients:
        client.runner.cancel()  # type: ignore[attr-defined]
        await client.close()


async def test_asterisk_restart_is_noticed_resynced_and_agents_given_back_their_queues(
    ami: AmiClient,
    daemon: DaemonProcess,
    started_pbx: LivePbx,
    fresh_ami: list[AmiClient],
    tmp_path: Path,
) -> None:
    """Asterisk restarts without its astdb (dynamic members forgotten) and its queues come
    up late: the daemon sees the link drop at once, logs in again with backoff, waits for
    the queues rather than taking their absence for empty queues, resyncs, puts alice
    back into her queues, says so in its metrics, and the next call reaches her."""
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice logs in through the daemon
    await wait_members(ami, "first-level", lambda members: ALICE in members)
    daemon.wait_for(
        lambda line: line.get("event") == "agent.state" and line.get("agent") == "alice"
    )
    assert metric("acd_ami_reconnects_total") == 0

    conf = started_pbx.conf_dir
    assert conf is not None
    # app_queue loaded by hand after the boot: what a daemon logging in while Asterisk
    # still loads its modules meets for a fraction of a second
    late_queues = tmp_path / "asterisk-conf"
    shutil.copytree(conf, late_queues)
    modules = late_queues / "modules.conf"
    modules.write_text(modules.read_text() + "noload = app_queue.so\n")
    started_pbx.start(late_queues, fresh_state=True)
    try:
        lost = daemon.wait_for(lambda line: line.get("event") == "ami.reconnect_wait", timeout=30)
        back = daemon.wait_for(
            lambda line: line.get("event") == "ami.logged_in" and line.get("reconnects") == 1,
            timeout=60,
        )
        retry = daemon.wait_for(lambda line: line.get("event") == "state.resync_retry")
        assert "QueueStatus" in retry["error"]
        started_pbx.cli("module load app_queue.so")
        restored = daemon.wait_for(
            lambda line: line.get("event") == "agent.memberships_restored", timeout=20
        )
        assert restored["memberships"] >= 1
        assert lost["timestamp"] <= back["timestamp"] <= retry["timestamp"]

        client = await _ami_client()
        fresh_ami.append(client)
        await wait_members(client, "first-level", lambda members: ALICE in members)
        assert metric("acd_ami_reconnects_total") == 1
        assert metric("acd_ami_connected") == 1

        uid = await place_call(client, "4930555061")
        events = await collect(client, uid, until="AgentComplete", within=30)
        assert [e.get("MemberName") for e in events if e.name == "AgentConnect"] == ["Alice Martin"]
    finally:
        started_pbx.start(conf)  # the module's other tests run on the usual configuration


def test_an_unreachable_ami_at_start_is_a_clear_error_not_a_busy_loop(
    started_pbx: LivePbx, tmp_path: Path
) -> None:
    """A wrong AMI port: the daemon retries with backoff for startup_wait seconds, then
    exits with its own code and says what to check."""
    config = tmp_path / "desk.yaml"
    text = LIVE_CONFIG.read_text()
    assert "    port: 5038\n" in text
    config.write_text(text.replace("    port: 5038\n", "    port: 5099\n    startup_wait: 4\n"))
    process = DaemonProcess(tmp_path / "acd.log", config_path=config)
    process.start(wait_ready=False)
    try:
        assert process.wait_exit(timeout=30) == 4
    finally:
        process.stop()
    unreachable = process.wait_for(lambda line: line.get("event") == "daemon.ami_unreachable")
    assert unreachable["ami"] == "127.0.0.1:5099"
    assert "Asterisk running" in unreachable["hint"]
    attempts = [line for line in process.lines() if line.get("event") == "ami.reconnect_wait"]
    # Backoff from 0.5 s, doubling: a handful of attempts in 4 s, not thousands.
    assert 1 <= len(attempts) <= 8, attempts


async def test_a_locked_database_during_the_callback_step_puts_the_caller_back(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    """The store is locked by another writer while a caller asks for a callback: they are
    told it did not work and go back to their place; no ticket, no number read."""
    await logout_everyone(ami)  # nobody answers: the callers wait
    first = await place_call(ami, "4930555071", variables={"CALLER_HOLD": "90"})
    await asyncio.sleep(0.5)
    log_start = len(started_pbx.log_since_start())
    db_path = daemon.store_url.removeprefix("sqlite+aiosqlite:///")
    blocker = sqlite3.connect(db_path, timeout=1, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        presser = await place_call(
            ami, "+4930555072", "press9", {"PRESS_AFTER": "6", "CALLER_HOLD": "90"}
        )
        failed = await asyncio.to_thread(
            daemon.wait_for,
            lambda line: line.get("event") == "callback.booking_failed",
            40,
        )
        assert failed["queue"] == "first-level"
        for _ in range(150):  # "callback-failed" plays, then the caller is back
            if await waiting_callers(ami, "first-level") == [first, presser]:
                break
            await asyncio.sleep(0.2)
        assert await waiting_callers(ami, "first-level") == [first, presser]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    played = started_pbx.log_since_start()[log_start:]
    assert "firstline/callback-failed" in played
    assert not re.search(r"SayDigits\(\"Local/100@firstline-hotline-", played)
    async with TicketStore(daemon.store_url) as store:
        assert await store.list() == []  # nothing half-written
    await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)
    # Back at their place, the same visit went on: one abandoned visit, no timeout.
    gone = await asyncio.to_thread(
        daemon.wait_for,
        lambda line: line.get("event") == "call.finished" and line["uniqueid"] == presser,
        10,
    )
    visits = [
        line["outcome"]
        for line in daemon.lines()
        if line.get("event") == "call.finished" and line["uniqueid"] == presser
    ]
    assert visits == ["abandoned"]
    assert gone["wait"] > 6


async def _asterisk_view(ami: AmiClient) -> tuple[int, int]:
    """Callers waiting in first-level (held callback places aside) and agents on a call."""
    status = await ami.action("QueueStatus", {"Queue": "first-level"}, timeout=5)
    waiting = sum(
        1
        for e in status.events
        if e.name == "QueueEntry" and not (e.get("Uniqueid") or "").startswith("cb-")
    )
    on_call = sum(1 for e in status.events if e.name == "QueueMember" and e.get("InCall") == "1")
    return waiting, on_call


def _board_view() -> tuple[int, int]:
    with urllib.request.urlopen("http://127.0.0.1:9650/board.json", timeout=5) as reply:
        board = json.load(reply)
    [first] = [q for q in board["queues"] if q["id"] == "first-level"]
    return first["waiting"], first["agents"]["on_call"]


async def test_a_daemon_killed_under_load_strands_nobody_and_resyncs_at_restart(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    """20 callers at different stages — talking, waiting, in the callback dialogue, and
    arriving while the daemon is dead — when it is SIGKILLed: every caller reaches the
    queue, no ticket number is read without its ticket, and after the restart the daemon's
    view (its wallboard) matches Asterisk's within 2 s."""
    await logout_everyone(ami)
    await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": "60"}, timeout=5)
    joined: set[str] = set()

    def watch(event: Event) -> None:
        if event.name == "QueueCallerJoin":
            joined.add(event.get("Uniqueid") or "")

    unsubscribe = ami.subscribe("QueueCallerJoin", watch)
    log_start = len(started_pbx.log_since_start())
    try:
        await dial_feature_code(ami, "*21", "201")  # alice: the first caller talks to her
        await wait_members(ami, "first-level", lambda members: ALICE in members)
        callers = [
            await place_call(ami, f"49305559{n:02d}", variables={"CALLER_HOLD": "120"})
            for n in range(8)
        ]
        callers += [
            await place_call(
                ami,
                f"+49305559{n:02d}",
                "press9",
                {"PRESS_AFTER": str(4 + 2 * (n - 8)), "CALLER_HOLD": "120"},
            )
            for n in range(8, 14)
        ]
        await asyncio.to_thread(
            daemon.wait_for, lambda line: line.get("event") == "callback.booked", 60
        )
        daemon.kill()
        callers += [  # the daemon is dead: the dialplan's fallback takes them
            await place_call(ami, f"49305559{n:02d}", variables={"CALLER_HOLD": "120"})
            for n in range(14, 20)
        ]
        await asyncio.sleep(2)
        daemon.start()  # waits for its AMI login

        matched = False
        for _ in range(8):  # 2 s: the view must catch up by then
            if await _asterisk_view(ami) == await asyncio.to_thread(_board_view):
                matched = True
                break
            await asyncio.sleep(0.25)
        assert matched, (await _asterisk_view(ami), _board_view())

        def stranded() -> set[str]:
            # A caller reached the queue, or pressed the key before joining (during the
            # welcome) and was booked: the daemon's log of both runs says whom.
            booked = {
                line["uniqueid"]
                for text in daemon.log_path.read_text().splitlines()
                if text.startswith("{")
                and (line := json.loads(text)).get("event") == "callback.booked"
            }
            return set(callers) - joined - booked

        for _ in range(120):
            if not stranded():
                break
            await asyncio.sleep(0.5)
        assert not stranded()
        log = started_pbx.log_since_start()[log_start:]
        read = set(
            re.findall(r'SayDigits\("Local/100@firstline-hotline-[0-9a-f]+;2", "(\d+)"\)', log)
        )
        async with TicketStore(daemon.store_url) as store:
            numbers = {t.number.replace("-", "") for t in await store.list()}
        assert read, "nobody was booked before the kill"
        assert read <= numbers, f"read without a ticket: {read - numbers}"
    finally:
        unsubscribe()
        await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": ""}, timeout=5)
        await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)
