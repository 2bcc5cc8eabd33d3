"""Live: skill levels and pauses decide who gets a call, on the real app_queue."""

from __future__ import annotations

import pytest

from acd.ami import AmiClient
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    queue_members,
    wait_members,
)

pytestmark = pytest.mark.live

ALICE, BOB, CAROL = (f"Local/{name}@test-agents" for name in ("alice", "bob", "carol"))


async def test_lower_level_agent_gets_the_call_only_after_the_escalation_wait(
    ami: AmiClient,
    daemon: DaemonProcess,
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "203")  # carol: general 2, one short of 3
    members = await wait_members(ami, "first-level", lambda m: CAROL in m)
    assert members[CAROL].get("Penalty") == "1"

    uid = await place_call(ami, "4930555031")
    events = await collect(ami, uid, until="AgentConnect", within=20)
    joined = next(e for e in events if e.name == "QueueCallerJoin")
    called = next(e for e in events if e.name == "AgentCalled")
    connect = events[-1]
    assert called.get("Interface") == CAROL
    # Nobody fully qualified is there: carol rings only once the 4 s step widened the bound.
    waited = float(called.get("Timestamp") or 0) - float(joined.get("Timestamp") or 0)
    assert waited >= 4.0, waited
    assert int(connect.get("HoldTime") or 0) >= 4


async def test_best_qualified_first_and_paused_agents_get_nothing(
    ami: AmiClient,
    daemon: DaemonProcess,
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice: general 4 (penalty 0)
    await dial_feature_code(ami, "*21", "203")  # carol: general 2 (penalty 1)
    await wait_members(ami, "first-level", lambda m: ALICE in m and CAROL in m)

    uid = await place_call(ami, "4930555032")
    events = await collect(ami, uid, until="AgentConnect", within=20)
    assert {e.get("Interface") for e in events if e.name == "AgentCalled"} == {ALICE}
    assert events[-1].get("Interface") == ALICE
    await collect(ami, uid, until="AgentComplete", within=20)

    await dial_feature_code(ami, "*231", "201")  # alice on a break
    await wait_members(ami, "first-level", lambda m: m[ALICE].get("Paused") == "1")
    uid = await place_call(ami, "4930555033")
    events = await collect(ami, uid, until="AgentConnect", within=20)
    # The paused expert is never rung; the caller waits for the escalation to carol.
    assert {e.get("Interface") for e in events if e.name == "AgentCalled"} == {CAROL}


async def test_call_needing_a_skill_reaches_only_an_agent_who_has_it(
    ami: AmiClient,
    daemon: DaemonProcess,
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice: printing 2 — not enough
    await dial_feature_code(ami, "*21", "202")  # bob: printing 5
    await wait_members(ami, "second-printing", lambda m: BOB in m)
    assert ALICE not in await queue_members(ami, "second-printing")

    # The IVR (here: the caller's channel) says the problem needs printing at level 4.
    uid = await place_call(ami, "4930555034", variables={"__FIRSTLINE_SKILLS": "printing:4"})
    events = await collect(ami, uid, until="AgentConnect", within=20)
    assert {e.get("Queue") for e in events if e.name == "QueueCallerJoin"} == {"second-printing"}
    assert {e.get("Interface") for e in events if e.name == "AgentCalled"} == {BOB}
    routed = daemon.wait_for(
        lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
    )
    assert routed["queue"] == "second-printing"
    assert "alice" in routed["excluded"]
