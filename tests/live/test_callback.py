"""Live: a waiting caller presses 9, gets a ticket, and is called back in their turn.

Callers and customers are Local channels of the harness (tests/live/harness.py): callers
press digits with SendDTMF; customers answer (+4930555...), never answer (+4930666...) or
are busy (+4930777...). Agents answer in test-agents; their talk time comes from the global
AGENT_TALK, set here so that the whisper fits into the agent's call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from acd.ami import AmiClient
from acd.tickets import CallbackStore, TicketStatus, TicketStore, create_engine_for
from tests.conftest import LivePbx
from tests.live.harness import (
    DaemonProcess,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
    waiting_callers,
)

pytestmark = pytest.mark.live

ALICE = "Local/alice@test-agents"


async def _wait_log(
    daemon: DaemonProcess, predicate: Callable[[dict[str, Any]], bool], within: float = 20
) -> dict[str, Any]:
    return await asyncio.to_thread(daemon.wait_for, predicate, within)


async def _until(check: Callable[[], Any], within: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {within} s")
        await asyncio.sleep(0.3)


@pytest.fixture
async def agents_talk_long(ami: AmiClient) -> AsyncIterator[None]:
    """Agents stay on a call for 20 s (the whisper and the customer's leg fit in it)."""
    await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": "20"}, timeout=5)
    yield
    await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": ""}, timeout=5)


async def test_escape_books_a_ticket_and_the_callback_keeps_its_place(
    ami: AmiClient,
    daemon: DaemonProcess,
    started_pbx: LivePbx,
    agents_talk_long: None,
) -> None:
    await logout_everyone(ami)
    first = await place_call(ami, "+4930555000101", "hold", {"CALLER_HOLD": "90"})
    await _until(lambda: _in_queue(ami, first))
    second = await place_call(ami, "+4930555000202", "press9", {"PRESS_AFTER": "8"})
    joined = await _until(lambda: _in_queue(ami, second))

    # The caller hears their number and confirms by not pressing anything (about 20 s).
    booked = await _wait_log(
        daemon,
        lambda line: line.get("event") == "callback.booked" and line["uniqueid"] == second,
        within=60,
    )
    ticket_number = booked["ticket"]
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(ticket_number)
        assert ticket.caller_number == "+4930555000202"
        assert ticket.queue == "first-level"
        assert ticket.skills == {"general": 3}
        engine = create_engine_for(daemon.store_url)
        try:
            [callback] = await CallbackStore(engine).for_ticket(ticket_number)
        finally:
            await engine.dispose()
        # The callback keeps the place of the original call: its join time, not the key's.
        assert callback.queue_joined_at.timestamp() == pytest.approx(booked["joined_at"], abs=0.01)
        assert joined
    # The desk's figures follow: one first-level ticket, one callback pending.
    await _until(lambda: _metric_is('acd_tickets{status="first_level"}', 1.0))
    await _until(lambda: _metric_is('acd_callbacks_pending{queue="first-level"}', 1.0))
    # The number was read from the dialplan after the daemon committed the ticket.
    digits = ticket_number.replace("-", "")
    await _until(lambda: _logged(started_pbx, 'SayDigits("Local/100@firstline-hotline', digits))
    assert second not in await waiting_callers(ami, "first-level")

    # An agent frees up: the live caller who was first is served first, then the callback.
    await dial_feature_code(ami, "*21", "201")
    connect_first = await _wait_log(
        daemon,
        lambda line: line.get("event") == "call.event" and line.get("ami_event") == "AgentConnect",
        within=20,
    )
    assert connect_first["uniqueid"] == first
    dialling = await _wait_log(
        daemon, lambda line: line.get("event") == "callback.dialling", within=40
    )
    assert dialling["ticket"] == ticket_number
    assert dialling["agent"] == "alice"
    ended = await _wait_log(
        daemon, lambda line: line.get("event") == "callback.attempt_ended", within=30
    )
    assert ended["outcome"] == "answered"
    assert await _logged(started_pbx, "Local/+4930555000202@test-customers")
    # The callback's delay runs to the customer answering, not to the end of their 3 s talk.
    ended_at = dt.datetime.fromisoformat(ended["timestamp"])
    await _until(lambda: _metric_is('acd_callback_delay_seconds_count{queue="first-level"}', 1.0))
    delay = await _metric_value('acd_callback_delay_seconds_sum{queue="first-level"}')
    assert 0 < delay <= (ended_at - callback.created_at).total_seconds() - 2.5

    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(ticket_number)
        assert ticket.owner == "alice"
        assert ticket.status is TicketStatus.FIRST_LEVEL
        history = [(h.kind, h.new_value) for h in await store.history(ticket_number)]
    assert ("callback", "attempt 1") in history
    assert history[-1] == ("callback", "answered")


async def _metrics_text() -> str:
    def scrape() -> str:
        with urllib.request.urlopen("http://127.0.0.1:9648/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    return await asyncio.to_thread(scrape)


async def _metric_is(series: str, value: float) -> bool:
    return any(
        line.startswith(series + " ") and float(line.split()[-1]) == value
        for line in (await _metrics_text()).splitlines()
    )


async def _metric_value(series: str) -> float:
    lines = (await _metrics_text()).splitlines()
    [value] = [float(line.split()[-1]) for line in lines if line.startswith(series + " ")]
    return value


async def _in_queue(ami: AmiClient, uniqueid: str) -> bool:
    return uniqueid in await waiting_callers(ami, "first-level")


async def _logged(pbx: LivePbx, *needles: str) -> bool:
    log = pbx.log_since_start()
    return any(all(n in line for n in needles) for line in log.splitlines())


async def test_the_key_works_at_every_moment_of_the_wait(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    """60 callers press 9 every half second over the first 30 s of their wait: during the
    welcome announcement (the first offer), in the queue, and during the periodic offers
    (every 5 s in this queue). The wait starts when routing is done and the offer begins:
    a key pressed while the routing AGI runs is before any offer. With 60 calls arriving
    at once, routing took up to 0.9 s when it still wrote the call record on the caller's
    path (now in the background); the presses start at 1.5 s."""
    await logout_everyone(ami)
    callers = {}
    for n in range(1, 61):
        number = f"+49305551{n:03d}"
        press_after = 1.5 + (n - 1) * 0.5
        uid = await place_call(ami, number, "press9", {"PRESS_AFTER": f"{press_after:.1f}"})
        callers[uid] = number
    booked: dict[str, str] = {}

    def all_booked() -> bool:
        for line in daemon.lines():
            if line.get("event") == "callback.booked":
                booked[line["uniqueid"]] = line["ticket"]
        return set(booked) >= set(callers)

    await asyncio.to_thread(_poll, all_booked, 90)
    async with TicketStore(daemon.store_url) as store:
        for uid, number in callers.items():
            ticket = await store.get(booked[uid])
            assert ticket.caller_number == number
    assert len(set(booked.values())) == len(callers)
    for uid in callers:
        assert uid not in await waiting_callers(ami, "first-level")


async def test_the_key_while_an_agent_rings_frees_the_agent(
    ami: AmiClient, daemon: DaemonProcess, agents_talk_long: None
) -> None:
    """The caller presses 9 while alice's phone rings: app_queue cancels the ring and says
    nothing of it (no AgentRingNoAnswer). Once the ticket is booked the daemon counts alice
    available again, and she takes the callback."""
    await logout_everyone(ami)
    await ami.action("Setvar", {"Variable": "AGENT_RING", "Value": "15"}, timeout=5)
    try:
        await dial_feature_code(ami, "*21", "201")
        await wait_members(ami, "first-level", lambda members: ALICE in members)
        caller = await place_call(ami, "+4930555000404", "press9", {"PRESS_AFTER": "4"})
        # alice, the only agent logged in, rings for 15 s; the key comes during the ring.
        await _wait_log(
            daemon,
            lambda line: line.get("ami_event") == "AgentCalled" and line["uniqueid"] == caller,
        )
        booked = await _wait_log(
            daemon,
            lambda line: line.get("event") == "callback.booked" and line["uniqueid"] == caller,
            within=60,
        )
    finally:
        await ami.action("Setvar", {"Variable": "AGENT_RING", "Value": ""}, timeout=5)
    lines = list(daemon.lines())
    after_booking = lines[lines.index(booked) :]
    alice = [
        (line["before"], line["after"])
        for line in after_booking
        if line.get("event") == "agent.state" and line["agent"] == "alice"
    ]
    assert alice[:1] == [("ringing", "available")]
    dialling = await _wait_log(
        daemon, lambda line: line.get("event") == "callback.dialling", within=40
    )
    assert dialling["agent"] == "alice"
    ended = await _wait_log(
        daemon, lambda line: line.get("event") == "callback.attempt_ended", within=60
    )
    assert ended["outcome"] == "answered"
    await _until(lambda: _metric_is('acd_agents{state="ringing"}', 0.0))
    await logout_everyone(ami)


async def test_an_unreachable_customer_is_retried_then_the_ticket_waits(
    ami: AmiClient, daemon: DaemonProcess, agents_talk_long: None
) -> None:
    await logout_everyone(ami)
    caller = await place_call(ami, "+4930666000301", "press9", {"PRESS_AFTER": "1"})
    booked = await _wait_log(
        daemon,
        lambda line: line.get("event") == "callback.booked" and line["uniqueid"] == caller,
        within=60,
    )
    await dial_feature_code(ami, "*21", "201")
    # attempts: 2, retry_after: [3], ring_timeout: 4 (desk-live.yaml)
    attempts = []
    for _ in range(2):
        ended = await _wait_log(
            daemon,
            lambda line: line.get("event") == "callback.attempt_ended" and line not in attempts,
            within=60,
        )
        attempts.append(ended)
    assert [a["outcome"] for a in attempts] == ["no_answer", "no_answer"]
    assert attempts[0]["retry_at"] is not None
    assert attempts[1]["retry_at"] is None
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(booked["ticket"])
        assert ticket.status is TicketStatus.WAITING
        history = await store.history(ticket.number)
    outcomes = [h.new_value for h in history if h.kind == "callback"]
    assert outcomes == ["requested", "attempt 1", "no_answer", "attempt 2", "no_answer"]
    [status] = [h for h in history if h.kind == "status"]
    assert status.reason == "customer not reached after 2 callback attempts"
    await logout_everyone(ami)


async def test_a_killed_daemon_never_leaves_a_number_without_a_ticket(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    """Callers press 9 at staggered moments; the daemon is SIGKILLed while their escapes run.

    Each caller either heard a ticket number that exists, or is back in the queue.
    """
    await logout_everyone(ami)
    log_start = len(started_pbx.log_since_start())  # earlier tests' readbacks are not ours
    callers = [
        await place_call(
            ami,
            f"+49305552{n:03d}",
            "press9",
            {"PRESS_AFTER": str(6 + 3 * n), "CALLER_HOLD": "150"},
        )
        for n in range(8)
    ]
    # Kill once the first has been booked: the others are somewhere in their dialogue.
    await _wait_log(daemon, lambda line: line.get("event") == "callback.booked", within=60)
    await asyncio.sleep(1.5)
    daemon.kill()
    await asyncio.sleep(3)
    daemon.start()
    numbers: dict[str, Any] = {}
    read: set[str] = set()
    waiting: set[str] = set()

    async def settled() -> bool:
        # Every caller is either booked (number read) or back in the queue.
        nonlocal numbers, read, waiting
        log = started_pbx.log_since_start()[log_start:]
        read = set(
            re.findall(r'SayDigits\("Local/100@firstline-hotline-[0-9a-f]+;2", "(\d+)"\)', log)
        )
        waiting = set(await waiting_callers(ami, "first-level"))
        async with TicketStore(daemon.store_url) as store:
            numbers = {t.number.replace("-", ""): t for t in await store.list()}
        booked = {numbers[d].caller_number for d in read if d in numbers}
        return all(f"+49305552{n:03d}" in booked or uid in waiting for n, uid in enumerate(callers))

    await _until(settled, within=90)
    assert read, "nobody was booked before the kill"
    assert read <= set(numbers), f"read without a ticket: {read - set(numbers)}"
    # The kill caught someone in the middle: told so, and back in the queue.
    assert "firstline/callback-failed" in started_pbx.log_since_start()[log_start:]
    assert waiting & set(callers)


def _poll(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s")
        time.sleep(0.5)


async def test_a_free_extended_support_agent_takes_the_new_ticket_at_once(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "202")  # bob, of the extended-support team
    await _until(lambda: _member_in(ami, "second-printing", "Local/bob@test-agents"))
    caller = await place_call(ami, "+4930555000401", "press9", {"PRESS_AFTER": "1"})
    booked = await _wait_log(
        daemon,
        lambda line: line.get("event") == "callback.booked" and line["uniqueid"] == caller,
        within=60,
    )
    assert booked["extended_support"] == "bob"
    served = await _wait_log(
        daemon, lambda line: line.get("event") == "callback.extended_support", within=30
    )
    assert served["dial_status"] == "ANSWER"
    assert served["agent"] == "bob"
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(booked["ticket"])
        history = [(h.kind, h.new_value) for h in await store.history(ticket.number)]
    assert ticket.owner == "bob"
    assert history[-1] == ("callback", "answered")
    engine = create_engine_for(daemon.store_url)
    try:
        [callback] = await CallbackStore(engine).for_ticket(ticket.number)
    finally:
        await engine.dispose()
    assert callback.state == "done"  # the dialer will not call this customer again
    await logout_everyone(ami)


async def _member_in(ami: AmiClient, queue: str, interface: str) -> bool:
    status = await ami.action("QueueStatus", {"Queue": queue}, timeout=5)
    return any(
        e.name == "QueueMember" and e.get("StateInterface") == interface for e in status.events
    )
