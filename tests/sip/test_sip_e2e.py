"""Live, over real SIP: the mission end to end with SIPp phones on the real Asterisk 22.

Callers are SIPp UACs dialling the hotline through PJSIP and answering the IVR with
RFC 2833 digits (SIPp's dtmf_2833_*.pcap); agents are SIPp softphones registered to their
PJSIP endpoints, logging in with *21 and answering after a ring; the customer called back
is a SIPp phone too (tests/sip/harness.py). The assertions are on what the phones saw
(which one got the INVITE, with which X-Firstline-* headers, in which order), on the store
and on the daemon's metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acd.ami import AmiClient, Event
from acd.tickets import CallbackStore, Customer, TicketStore, create_engine_for
from tests.conftest import LivePbx
from tests.live.harness import (
    TEST_SECRET,
    DaemonProcess,
    call_record,
    logout_everyone,
    wait_members,
)
from tests.sip.conftest import Phones
from tests.sip.harness import (
    CUSTOMER_PORT,
    METRICS_URL,
    PBX_HOST,
    Callers,
    Invite,
    SippProcess,
    SoftPhone,
    dial_feature_code,
)

pytestmark = pytest.mark.live

# A queue each agent joins at log-in (desk-sip.yaml: skills against the queues' needs).
HOME_QUEUE = {"alice": "first-level", "carol": "first-level", "bob": "second-printing"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape() -> Samples:
    with urllib.request.urlopen(METRICS_URL, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _wait_log(
    daemon: DaemonProcess, predicate: Callable[[dict[str, Any]], bool], within: float = 30
) -> dict[str, Any]:
    return await asyncio.to_thread(daemon.wait_for, predicate, within)


def _event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda line: (
        line.get("event") == name and all(line.get(key) == value for key, value in fields.items())
    )


async def _log_in(ami: AmiClient, phones: Phones, *agents: str) -> None:
    """The agents dial *21 from their softphones, as they do at the start of a shift."""
    await asyncio.gather(
        *(
            asyncio.to_thread(dial_feature_code, phones.workdir, agent, TEST_SECRET, "*21")
            for agent in agents
        )
    )
    for agent in agents:
        await wait_members(ami, HOME_QUEUE[agent], _has_member(f"PJSIP/{agent}"))


def _has_member(interface: str) -> Callable[[dict[str, Event]], bool]:
    return lambda members: interface in members


async def _caller_done(caller: SippProcess) -> list[str]:
    """Waits for the caller's SIPp to end its call successfully; the kinds of its events."""
    assert await asyncio.to_thread(caller.wait_exit, 90) == 0, caller.tail()
    return [event.kind for event in caller.events()]


def _invites_from(phone: SoftPhone, number: str) -> list[Invite]:
    return [i for i in phone.invites() if f"sip:{number}@" in i.from_header]


async def _call_ended(phone: SoftPhone, call_id: str) -> None:
    def ended() -> None:
        phone.process.wait_for(
            lambda e: e.kind in ("ENDED", "CANCELLED") and e.call_id == call_id, 30
        )

    await asyncio.to_thread(ended)


async def test_ivr_digit_rings_the_qualified_agents_phone_with_the_callers_facts(
    ami: AmiClient, daemon: DaemonProcess, phones: Phones, callers: Callers
) -> None:
    number = "+4930555000701"
    async with TicketStore(daemon.store_url) as store:
        await store.upsert_customer(
            Customer(id="acme-print", company="ACME", name="Ann Example", phones=(number,))
        )
    await logout_everyone(ami)
    # bob: printing 5, qualified for second-printing; alice: printing 2, free but not.
    await _log_in(ami, phones, "alice", "bob")
    before = _scrape()

    # "1" (printing) two seconds into the greeting, then on the line until bob hangs up.
    caller = callers.call(number, "WW1", hold_s=60)
    assert await _caller_done(caller) == ["ANSWERED", "KEY", "ENDED"]
    assert caller.events()[-1].fields == ("remote",)

    bob, alice = phones.agents["bob"], phones.agents["alice"]
    [invite] = _invites_from(bob, number)
    assert invite.request_uri.startswith(f"sip:bob@{PBX_HOST}:")
    assert (invite.category, invite.customer, invite.ticket) == ("printing", "acme-print", "")
    assert any(e.kind == "ANSWERED" and e.call_id == invite.call_id for e in bob.process.events())
    await _call_ended(bob, invite.call_id)
    assert not _invites_from(alice, number)

    routed = await _wait_log(daemon, _event("call.routed", caller=number))
    assert routed["queue"] == "second-printing"
    uid = routed["uniqueid"]
    ivr = await _wait_log(daemon, _event("call.ivr", uniqueid=uid))
    assert (ivr["category"], ivr["skills"], ivr["fell_back"]) == (
        "printing",
        {"printing": 4},
        False,
    )
    finished = await _wait_log(daemon, _event("call.finished", uniqueid=uid))
    assert (finished["outcome"], finished["agent"]) == ("answered", "bob")
    record = await call_record(daemon.store_url, uid, lambda r: r.queue is not None)
    assert record is not None
    assert (record.category, record.customer_id, record.queue) == (
        "printing",
        "acme-print",
        "second-printing",
    )
    after = _scrape()
    answered = "acd_calls_answered_total"
    assert _value(after, answered, queue="second-printing") == (
        _value(before, answered, queue="second-printing") + 1
    )


async def test_callback_key_books_a_ticket_then_the_agent_rings_before_the_customer(
    ami: AmiClient,
    daemon: DaemonProcess,
    phones: Phones,
    callers: Callers,
    started_pbx: LivePbx,
) -> None:
    number = "+4930555000702"
    await logout_everyone(ami)  # nobody free: the caller waits
    before = _scrape()

    # "2" (anything else: first level) two seconds into the greeting; 9 eight seconds
    # later, after the IVR's "please hold", during the welcome offer. The number read back
    # is confirmed by silence (a 1 would come after the 9: see caller.xml on key order),
    # and Asterisk hangs up after reading the ticket number.
    keys = "WW2" + "W" * 8 + "9"
    caller = callers.call(number, keys, hold_s=90)
    routed = await _wait_log(daemon, _event("call.routed", caller=number))
    assert routed["queue"] == "first-level"
    uid = routed["uniqueid"]
    booked = await _wait_log(daemon, _event("callback.booked", uniqueid=uid), within=60)
    ticket_number = booked["ticket"]
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(ticket_number)
        assert (ticket.caller_number, ticket.queue, ticket.owner) == (number, "first-level", None)
        engine = create_engine_for(daemon.store_url)
        try:
            [callback] = await CallbackStore(engine).for_ticket(ticket_number)
        finally:
            await engine.dispose()
        assert callback.number == number
    # An agent logs in: the agent's phone rings first, then the customer's.
    alice = phones.agents["alice"]
    await _log_in(ami, phones, "alice")
    dialling = await _wait_log(daemon, _event("callback.dialling", ticket=ticket_number))
    assert dialling["agent"] == "alice"
    ended = await _wait_log(
        daemon, _event("callback.attempt_ended", callback=callback.id), within=40
    )
    assert ended["outcome"] == "answered"

    [customer_invite] = phones.customer.invites()
    assert customer_invite.request_uri == f"sip:{number}@{PBX_HOST}:{CUSTOMER_PORT}"
    agent_invites = [i for i in alice.invites() if i.time < customer_invite.time]
    assert agent_invites, (alice.invites(), customer_invite)
    agent_leg = agent_invites[-1]
    # The agent's phone shows the callback's ticket, in its name and in the header.
    assert agent_leg.from_header.startswith(f'"Callback {ticket_number}" <sip:{number}@')
    assert agent_leg.ticket == ticket_number
    # The customer sees the hotline calling, not the agent's name.
    assert "Alice" not in customer_invite.from_header, customer_invite.from_header
    answered = [
        e.time
        for e in alice.process.events()
        if e.kind == "ANSWERED" and e.call_id == agent_leg.call_id
    ]
    assert answered
    assert answered[0] < customer_invite.time  # the agent was on the line first
    await _call_ended(alice, agent_leg.call_id)

    assert await _caller_done(caller) == ["ANSWERED", "KEY", "KEY", "ENDED"]
    # Asterisk hung up on the caller after reading the ticket number (DTMF 9 over RFC 2833).
    assert caller.events()[-1].fields == ("remote",)
    digits = ticket_number.replace("-", "")
    assert any(
        "SayDigits(" in line and "PJSIP/anonymous-" in line and digits in line
        for line in started_pbx.log_since_start().splitlines()
    )

    async with TicketStore(daemon.store_url) as store:
        ticket = await store.get(ticket_number)
        history = [(h.kind, h.new_value) for h in await store.history(ticket_number)]
    assert ticket.owner == "alice"
    assert history[-1] == ("callback", "answered")
    after = _scrape()
    requested = "acd_callbacks_requested_total"
    attempts = "acd_callback_attempts_total"
    assert _value(after, requested, queue="first-level") == (
        _value(before, requested, queue="first-level") + 1
    )
    assert _value(after, attempts, queue="first-level", result="answered") == (
        _value(before, attempts, queue="first-level", result="answered") + 1
    )


async def test_a_caller_with_an_open_ticket_reaches_its_owners_phone_first(
    ami: AmiClient, daemon: DaemonProcess, phones: Phones, callers: Callers
) -> None:
    number = "+4930555000703"
    now = dt.datetime.now(dt.UTC)
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.create_ticket(
            now=now,
            actor="test",
            priority="normal",
            priority_rank=20,
            deadline=now + dt.timedelta(days=1),
            caller_number=number,
            owner="carol",
            queue="first-level",
        )
    await logout_everyone(ami)
    # alice is the better first-level agent; carol (one level short) owns the ticket.
    await _log_in(ami, phones, "alice", "carol")

    # The IVR announces the open ticket; "1" reaches the person handling it.
    caller = callers.call(number, "WW1", hold_s=60)
    assert await _caller_done(caller) == ["ANSWERED", "KEY", "ENDED"]
    assert caller.events()[-1].fields == ("remote",)  # carol hung up

    carol, alice = phones.agents["carol"], phones.agents["alice"]
    [invite] = _invites_from(carol, number)
    assert invite.ticket == ticket.number
    assert any(e.kind == "ANSWERED" and e.call_id == invite.call_id for e in carol.process.events())
    await _call_ended(carol, invite.call_id)
    assert not _invites_from(alice, number)

    ivr = await _wait_log(daemon, _event("call.ivr", wants_owner=True))
    routed = await _wait_log(daemon, _event("call.routed", caller=number))
    assert routed["uniqueid"] == ivr["uniqueid"]
    assert routed["preferred_agent"] == "carol"
    assert routed["open_tickets"] == [ticket.number]
