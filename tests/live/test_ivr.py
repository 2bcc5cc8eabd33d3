"""Live: callers answer the IVR with keys (SendDTMF) and are routed by what they said.

The IVR is tests/live/ivr-live.yaml on top of the live desk: language choice (1 English,
2 French), a printing submenu (1 nothing prints → printing 4, 2 print quality → printing 2)
and everything else (general 2); a 3 s timeout and one retry per menu.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acd.ami import AmiClient
from acd.tickets import TicketStatus, TicketStore
from tests.conftest import LivePbx
from tests.live.harness import (
    LIVE_CONFIG,
    DaemonProcess,
    call_record,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    render_live,
    wait_members,
)

pytestmark = pytest.mark.live

IVR_CONFIG = Path(__file__).resolve().parent / "ivr-live.yaml"


@pytest.fixture(scope="module")
def ivr_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ivr-config") / "desk-ivr.yaml"
    path.write_text(LIVE_CONFIG.read_text() + "\n" + IVR_CONFIG.read_text())
    return path


@pytest.fixture(scope="module")
def started_pbx(
    pbx: LivePbx, ivr_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> LivePbx:
    conf = render_live(tmp_path_factory.mktemp("asterisk-conf"), ivr_config)
    pbx.start(conf, fresh_state=True)
    pbx.cli("agi set debug on")  # the AGI commands the daemon issues appear in the log
    return pbx


@pytest.fixture
def daemon(started_pbx: LivePbx, ivr_config: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path / "acd.log", config_path=ivr_config)
    process.start()
    yield process
    process.stop()


async def _wait_log(
    daemon: DaemonProcess, predicate: Callable[[dict[str, Any]], bool], within: float = 40
) -> dict[str, Any]:
    return await asyncio.to_thread(daemon.wait_for, predicate, within)


def _for(uid: str, event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == event and line.get("uniqueid") == uid


@pytest.mark.parametrize(
    ("keys", "language", "category", "skills", "queue"),
    [
        ("1WW1WW1", "en", "printing", {"printing": 4}, "second-printing"),
        ("1WW1WW2", "en", "print-quality", {"printing": 2}, "second-printing"),
        ("2WW2", "fr", "general", {"general": 1}, "first-level"),
    ],
)
async def test_each_menu_path_sets_skills_category_and_language(
    ami: AmiClient,
    daemon: DaemonProcess,
    keys: str,
    language: str,
    category: str,
    skills: dict[str, int],
    queue: str,
) -> None:
    await logout_everyone(ami)
    uid = await place_call(ami, "+4930555000601", "keys", {"KEYS": keys})
    joining = asyncio.create_task(collect(ami, uid, until="QueueCallerJoin", within=60))
    ivr = await _wait_log(daemon, _for(uid, "call.ivr"))
    assert (ivr["language"], ivr["category"], ivr["skills"]) == (language, category, skills)
    assert not ivr["fell_back"]
    routed = await _wait_log(daemon, _for(uid, "call.routed"))
    assert routed["queue"] == queue
    joined = await joining
    assert joined[-1].get("Queue") == queue
    record = await call_record(daemon.store_url, uid)
    assert record is not None
    assert (record.language, record.category, dict(record.skills)) == (language, category, skills)
    await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)


@pytest.mark.parametrize(("keys", "reason"), [("", "no-input"), ("1WW9WWWW9", "invalid-input")])
async def test_no_input_and_invalid_input_reach_the_fallback_queue(
    ami: AmiClient, daemon: DaemonProcess, keys: str, reason: str
) -> None:
    await logout_everyone(ami)
    variables = {"KEYS": keys} if keys else {"CALLER_HOLD": "60"}
    uid = await place_call(ami, "+4930555000602", "keys" if keys else "hold", variables)
    joining = asyncio.create_task(collect(ami, uid, until="QueueCallerJoin", within=60))
    ivr = await _wait_log(daemon, _for(uid, "call.ivr"), within=60)
    assert ivr["fell_back"]
    assert ivr["reason"] == reason
    joined = await joining
    assert joined[-1].get("Queue") == "first-level"  # the default queue: never a hang-up
    await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)


async def test_a_caller_hanging_up_mid_menu_leaves_nothing_behind(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    uid = await place_call(ami, "+4930555000603", "hold", {"CALLER_HOLD": "4"})
    await _wait_log(
        daemon, lambda line: line.get("uniqueid") == uid and line.get("event") == "agi.request_done"
    )
    await asyncio.sleep(1)
    assert not [
        line
        for line in daemon.lines()
        if line.get("uniqueid") == uid and line.get("event") in ("call.ivr", "call.routed")
    ]
    assert await call_record(daemon.store_url, uid, within=1.0) is None
    # The live state holds no call of it either: the gauges count nobody waiting.
    assert not [line for line in daemon.lines() if line.get("event") == "state.anomaly"]


async def test_callers_in_the_menu_when_the_daemon_is_killed_still_reach_a_queue(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    """The IVR runs inside the route AGI: SIGKILL the daemon while six callers are in the
    menu (greeting, language choice, main menu) and each goes on to the hotline's
    fallback queue through the dialplan — nobody is hung up on or left in silence."""
    await logout_everyone(ami)
    joined: set[str] = set()
    unsubscribe = ami.subscribe(
        "QueueCallerJoin", lambda event: joined.add(event.get("Uniqueid") or "")
    )
    try:
        callers = [
            await place_call(
                ami,
                f"+49305550007{n:02d}",
                "keys" if keys else "hold",
                {"KEYS": keys, "CALLER_HOLD": "60"} if keys else {"CALLER_HOLD": "60"},
            )
            for n, keys in enumerate(["", "1", "1WW1", "", "2", "1WW1"])
        ]

        async def all_in_the_menu() -> bool:
            channels = await ami.action("CoreShowChannels", timeout=5)
            in_agi = {
                e.get("Uniqueid")
                for e in channels.events
                if e.name == "CoreShowChannel" and e.get("Application") == "AGI"
            }
            return set(callers) <= in_agi

        for _ in range(50):
            if await all_in_the_menu():
                break
            await asyncio.sleep(0.1)
        assert await all_in_the_menu()
        daemon.kill()
        for _ in range(100):
            if set(callers) <= joined:
                break
            await asyncio.sleep(0.3)
        assert set(callers) <= joined, set(callers) - joined
        daemon.start()
    finally:
        unsubscribe()
        await ami.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)


async def test_an_open_ticket_is_announced_and_1_reaches_its_owner(
    ami: AmiClient, daemon: DaemonProcess, started_pbx: LivePbx
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with TicketStore(daemon.store_url) as store:
        ticket = await store.create_ticket(
            now=now,
            actor="test",
            priority="normal",
            priority_rank=20,
            deadline=now + dt.timedelta(days=1),
            caller_number="+4930555000604",
            owner="carol",
            queue="first-level",
            status=TicketStatus.SECOND_LEVEL,
        )
    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "203")  # carol
    await wait_members(ami, "first-level", lambda m: "Local/carol@test-agents" in m)
    log_start = len(started_pbx.log_since_start())
    # Language 1, then (after the ticket is read) 1 for the person handling it.
    uid = await place_call(ami, "+4930555000604", "keys", {"KEYS": "1WWWWWWWWWWWWWWW1"})
    dialled = asyncio.create_task(collect(ami, uid, until="DialEnd", within=90))
    ivr = await _wait_log(daemon, _for(uid, "call.ivr"), within=60)
    assert ivr["wants_owner"]
    routed = await _wait_log(daemon, _for(uid, "call.routed"))
    assert routed["preferred_agent"] == "carol"
    events = await dialled
    assert (events[-1].get("DestChannel") or "").startswith("Local/carol@test-agents")
    log = started_pbx.log_since_start()[log_start:]
    assert f"SAY DIGITS {ticket.number.replace('-', '')}" in log
    assert "firstline/ivr-status-second-level" in log
    await logout_everyone(ami)
