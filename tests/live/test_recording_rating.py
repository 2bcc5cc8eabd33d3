"""Live: a recorded queue's conversation is linked to the call and its ticket, and after the
agent hangs up the caller rates the help; a low rating flags the ticket for follow-up.

The second-printing queue of desk-live.yaml records and asks for ratings. The caller's
phone presses the rating key a few times while the rating prompt plays (SendDTMF).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from acd.ami import AmiClient
from acd.tickets import TicketStore
from tests.conftest import LivePbx
from tests.live.harness import (
    DaemonProcess,
    call_record,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live


async def _call_and_rate(
    ami: AmiClient, daemon: DaemonProcess, number: str, key: str
) -> tuple[str, dict[str, Any]]:
    uid = await place_call(
        ami,
        number,
        "keys",
        # The call needs printing: second-printing, where bob answers and talks 2 s.
        {
            "__FIRSTLINE_SKILLS": "printing:4",
            "KEYS": f"{key}WW{key}WW{key}WW{key}",
            "PRESS_AFTER": "4",
        },
    )
    rated = await asyncio.to_thread(
        daemon.wait_for,
        lambda line: line.get("event") == "call.rated" and line.get("uniqueid") == uid,
        40,
    )
    return uid, rated


async def test_recorded_call_is_linked_and_a_low_rating_flags_follow_up(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with TicketStore(daemon.store_url) as store:
        good = await store.create_ticket(
            now=now,
            actor="test",
            priority="normal",
            priority_rank=20,
            deadline=now + dt.timedelta(days=1),
            caller_number="+4930555000701",
        )
        bad = await store.create_ticket(
            now=now,
            actor="test",
            priority="normal",
            priority_rank=20,
            deadline=now + dt.timedelta(days=1),
            caller_number="+4930555000702",
        )
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "202")  # bob
    await wait_members(ami, "second-printing", lambda m: "Local/bob@test-agents" in m)

    uid, rated = await _call_and_rate(ami, daemon, "+4930555000701", "4")
    assert (rated["rating"], rated["ticket"]) == (4, good.number)
    _, low = await _call_and_rate(ami, daemon, "+4930555000702", "1")
    assert (low["rating"], low["ticket"]) == (1, bad.number)

    async with TicketStore(daemon.store_url) as store:
        good_now = await store.get(good.number)
        bad_now = await store.get(bad.number)
        bad_history = [(h.kind, h.new_value) for h in await store.history(bad.number)]
    assert (good_now.rating, good_now.follow_up) == (4, False)
    assert (bad_now.rating, bad_now.follow_up) == (1, True)
    assert ("follow_up", "true") in bad_history
    # The conversation was recorded, and the file is linked to the call and the ticket.
    assert good_now.recording_path is not None
    record = await call_record(daemon.store_url, uid, lambda r: r.rating is not None)
    assert record is not None
    assert record.rating == 4
    assert record.recording_path == good_now.recording_path
    recorded = started_pbx.root / record.recording_path.lstrip("/")
    assert recorded.is_file(), f"{recorded} was not written"
    await logout_everyone(ami)
