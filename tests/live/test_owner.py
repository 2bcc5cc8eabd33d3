"""Live: a caller with an open ticket reaches the agent who owns it first."""

from __future__ import annotations

import datetime as dt

import pytest

from acd.ami import AmiClient
from acd.tickets import TicketStore
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

ALICE, CAROL = "Local/alice@test-agents", "Local/carol@test-agents"


async def test_caller_with_an_open_ticket_reaches_its_owner_first(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.create_ticket(
            now=now,
            actor="test",
            priority="normal",
            priority_rank=20,
            deadline=now + dt.timedelta(days=1),
            caller_number="+4930555061",
            owner="carol",
            queue="first-level",
        )
    await logout_everyone(ami)
    # alice is the better first-level agent; carol (one level short) owns the ticket.
    await dial_feature_code(ami, "*21", "201")
    await dial_feature_code(ami, "*21", "203")
    await wait_members(ami, "first-level", lambda m: ALICE in m and CAROL in m)

    uid = await place_call(ami, "+4930555061")
    events = await collect(ami, uid, until="DialEnd", within=20)
    dial_end = events[-1]
    assert (dial_end.get("DestChannel") or "").startswith(CAROL)
    assert dial_end.get("DialStatus") == "ANSWER"
    assert not [e for e in events if e.name == "QueueCallerJoin"]  # the owner took it
    routed = daemon.wait_for(
        lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
    )
    assert routed["preferred_agent"] == "carol"
    assert routed["open_tickets"] == [ticket.number]


async def test_unknown_caller_goes_to_the_best_agent_as_usual(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")
    await dial_feature_code(ami, "*21", "203")
    await wait_members(ami, "first-level", lambda m: ALICE in m and CAROL in m)
    uid = await place_call(ami, "+4930555062")
    events = await collect(ami, uid, until="AgentConnect", within=20)
    assert events[-1].get("Interface") == ALICE
    assert not [
        e for e in events if e.name == "DialBegin" and CAROL in (e.get("DestChannel") or "")
    ]
