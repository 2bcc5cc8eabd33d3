"""Live: an agent hands a caller on with a transfer code; the call keeps its priority."""

from __future__ import annotations

import pytest

from acd.ami import AmiClient
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

ALICE, BOB = "Local/alice@test-agents", "Local/bob@test-agents"


async def test_agent_hands_the_caller_on_to_second_level(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice, first level
    await dial_feature_code(ami, "*21", "202")  # bob, second level (printing)
    await wait_members(ami, "second-printing", lambda m: BOB in m)
    await wait_members(ami, "first-level", lambda m: ALICE in m)

    # alice would talk for 20 s; "__" makes the agent leg inherit it from the caller.
    uid = await place_call(ami, "+4930555071", variables={"__AGENT_TALK": "20"})
    first = await collect(ami, uid, until="AgentConnect", within=20)
    assert first[-1].get("Interface") == ALICE
    channel = next(e for e in first if e.name == "QueueCallerJoin").get("Channel")
    routed = daemon.wait_for(
        lambda line: line.get("event") == "call.routed" and line.get("uniqueid") == uid
    )

    # alice's softphone blind-transfers the caller to *25: the caller's channel runs the
    # transfer code in the agents' context, as Asterisk does for a blind transfer.
    result = await ami.action(
        "Redirect",
        {"Channel": channel, "Context": "firstline-agents", "Exten": "*25", "Priority": "1"},
        timeout=5,
    )
    assert result.ok, result.response
    second = await collect(ami, uid, until="AgentConnect", within=20)
    assert {e.get("Queue") for e in second if e.name == "QueueCallerJoin"} == {"second-printing"}
    assert second[-1].get("Interface") == BOB

    moved = daemon.wait_for(
        lambda line: line.get("event") == "call.transferred" and line.get("uniqueid") == uid
    )
    assert moved["queue"] == "second-printing"
    assert moved["priority"] == str(routed["priority"])  # not sent to the back
