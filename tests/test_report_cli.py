"""``acd report`` as a manager runs it, on databases the real stores filled (SQLite, PostgreSQL).

The calls, callbacks and tickets of a small week are written through `CallStore`,
`CallbackStore` and `TicketStore` as the daemon and the agents write them; the report is
then read by the real command in a subprocess, in every output format.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from acd.tickets import CallbackStore, CallStore, TicketStatus, TicketStore
from acd.tickets.calls import arrival, finish
from tests.live.harness import REPO, run_acd

BERLIN = ZoneInfo("Europe/Berlin")
ENV = {**os.environ, "FIRSTLINE_TEST_SECRET": "s"}
LEASE = dt.timedelta(minutes=5)

DESK = """\
hotline: {{numbers: ["100"], languages: [en], region: DE, default_queue: first-level}}
daemon:
  ami: {{host: 127.0.0.1, port: 5038, username: firstline, secret: {{env: FIRSTLINE_TEST_SECRET}}}}
store: {{url: "{url}"}}
skills:
  - {{id: general, name: General support}}
  - {{id: printing, name: Printing}}
queues:
  - id: first-level
    name: First level
    skills: {{general: 1}}
    service_level: {{answer_within: 20, target: 0.8}}
    short_abandon: 5
  - id: second-printing
    name: Second level, printing
    level: second
    skills: {{printing: 1}}
agents:
  - id: alice
    name: Alice Martin
    extension: "201"
    secret: {{env: FIRSTLINE_TEST_SECRET}}
    skills: {{general: 3, printing: 3}}
    site: berlin
sites:
  - {{id: berlin, timezone: Europe/Berlin, hours: {{mon-sun: ["00:00-24:00"]}}}}
sla:
  priorities:
    normal: {{rank: 20, respond_within: 14400, resolve_within: 259200}}
  packages:
    basic: {{priority_boost: 0, coverage: 24x7}}
"""


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    """A Berlin wall-clock time in March 2026 (Monday the 2nd is day 2)."""
    return dt.datetime(2026, 3, day, hour, minute, second, tzinfo=BERLIN)


def acd(*args: str) -> subprocess.CompletedProcess[str]:
    """The command from a synchronous test."""
    done = run_acd(*args, env=ENV)
    assert "Traceback" not in done.stderr, done.stderr
    return done


async def acd_report(config: Path, *args: str) -> bytes:
    """``acd report CONFIG ARGS`` from an async test: its stdout, as bytes (CRLF kept)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "acd.cli",
        "report",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out


async def report(config: Path, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(await acd_report(config, "--format", "json", *args))
    return rows


@pytest.fixture
def desk(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "desk.yaml"
    config.write_text(DESK.format(url=database_url))
    return config


async def _call(
    calls: CallStore,
    uid: str,
    arrived: dt.datetime,
    outcome: str | None,
    *,
    queue: str = "first-level",
    wait: float | None = None,
    left_after: float = 60,
) -> None:
    await calls.write([arrival(uid, now=arrived, caller_number="+4930123456", language="en")])
    if outcome is None:
        return  # hung up in the IVR: the daemon never finishes such a record
    joined = arrived + dt.timedelta(seconds=2)
    answered = None if wait is None else joined + dt.timedelta(seconds=wait)
    await calls.write(
        [
            finish(
                uid,
                now=joined + dt.timedelta(seconds=left_after),
                queue=queue,
                outcome=outcome,
                joined_at=joined,
                answered_at=answered,
                agent="alice" if answered else None,
            )
        ]
    )


async def _callback(
    callbacks: CallbackStore,
    uid: str,
    requested: dt.datetime,
    *,
    number: str,
    reached: dt.datetime | None,
) -> str:
    """A callback booked during call `uid`; one attempt, answered at `reached` or failed."""
    booked = await callbacks.request(
        now=requested,
        number=number,
        queue="first-level",
        queue_joined_at=requested - dt.timedelta(seconds=60),
        priority="normal",
        priority_rank=20,
        deadline=requested + dt.timedelta(hours=4),
        uniqueid=uid,
    )
    attempt_at = reached or requested + dt.timedelta(minutes=10)
    (claimed,) = await callbacks.claim(now=attempt_at, owner="dialer", lease=LEASE)
    await callbacks.start_attempt(
        claimed.id, owner="dialer", now=attempt_at, agent="bob", uniqueid=None, lease=LEASE
    )
    await callbacks.finish_attempt(
        claimed.id,
        owner="dialer",
        now=attempt_at + dt.timedelta(minutes=9),
        outcome="answered" if reached else "no_answer",
        retry_at=None,
    )
    return booked.ticket.number


async def _fill(engine: AsyncEngine) -> None:
    calls, callbacks, tickets = CallStore(engine), CallbackStore(engine), TicketStore(engine)
    # Monday, 2 March 2026.
    await _call(calls, "c1", local(2, 9, 0), "answered", wait=10)  # within 20 s
    await _call(calls, "c2", local(2, 9, 10), "answered", wait=40)
    await _call(calls, "c3", local(2, 9, 20), "abandoned")
    await _call(calls, "c4", local(2, 9, 30), "short_abandon", left_after=3)
    await _call(calls, "c5", local(2, 10, 0), "callback_requested")
    number = await _callback(
        callbacks, "c5", local(2, 10, 1), number="+4930111111", reached=local(2, 10, 31)
    )
    await tickets.set_status(
        number, TicketStatus.DONE, actor="bob", reason="fixed", now=local(2, 16)
    )
    await _call(calls, "c6", local(2, 11, 0), "answered", queue="second-printing", wait=50)
    await _call(calls, "c7", local(2, 12, 0), None)
    late = await tickets.create_ticket(
        now=local(2, 23, 30),
        actor="alice",
        priority="normal",
        priority_rank=20,
        deadline=local(3, 12),
        queue="first-level",
    )
    await tickets.set_status(
        late.number, TicketStatus.DONE, actor="alice", reason="fixed", now=local(3, 0, 30)
    )
    # Tuesday: nothing. Wednesday: a callback that never reached the customer.
    await _call(calls, "c8", local(4, 9, 0), "callback_requested")
    await _callback(callbacks, "c8", local(4, 9, 2), number="+4930222222", reached=None)
    # Thursday, outside the reports' range.
    await _call(calls, "c9", local(5, 9, 0), "answered", wait=1)


async def test_a_week_by_day_in_every_format(engine: AsyncEngine, desk: Path) -> None:
    await _fill(engine)
    rows = await report(desk, "--from", "2026-03-02", "--to", "2026-03-04")
    assert [row["period"] for row in rows] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    monday, tuesday, wednesday = rows
    assert monday == {
        "period": "2026-03-02",
        "occurrences": 1,
        "offered": 6,  # c7 hung up before any queue
        "answered": 4,  # c5 by the callback
        "answered_directly": 3,
        "abandoned": 1,
        "short_abandoned": 1,
        "asa_seconds": 33.3,  # (10 + 40 + 50) / 3
        "service_level_pct": 40.0,  # c1 (20 s) and c6 (60 s) of 6 - 1 short abandon
        "callbacks": 1,
        "callback_delay_seconds": 1800.0,
        "tickets": 2,
        "solved_same_day_pct": 50.0,  # the 23:30 ticket was solved after midnight
    }
    assert tuesday["offered"] == tuesday["tickets"] == tuesday["callbacks"] == 0
    assert tuesday["asa_seconds"] is None
    assert tuesday["service_level_pct"] is None
    assert tuesday["solved_same_day_pct"] is None
    assert (wednesday["offered"], wednesday["answered"], wednesday["abandoned"]) == (1, 0, 0)
    assert (wednesday["callbacks"], wednesday["callback_delay_seconds"]) == (1, None)
    assert (wednesday["tickets"], wednesday["solved_same_day_pct"]) == (1, 0.0)

    raw = await acd_report(desk, "--from", "2026-03-02", "--to", "2026-03-04", "--format", "csv")
    assert raw.count(b"\r\n") == 4
    assert b"\n" not in raw.replace(b"\r\n", b"")
    records = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
    assert [record["offered"] for record in records] == ["6", "0", "1"]
    assert records[1]["asa_seconds"] == ""

    table = await acd_report(desk, "--from", "2026-03-02", "--to", "2026-03-04")
    lines = table.decode().splitlines()
    assert "2026-03-02 00:00 up to 2026-03-05 00:00 (Europe/Berlin), all queues, by day" in lines[0]
    total = lines[-1].split()
    assert total[:7] == ["total", "7", "4", "3", "1", "1", "0:33"]


async def test_one_queue_and_the_hours_of_a_day(engine: AsyncEngine, desk: Path) -> None:
    await _fill(engine)
    (printing,) = await report(
        desk, "--from", "2026-03-02", "--to", "2026-03-02", "--queue", "second-printing"
    )
    assert (printing["offered"], printing["answered"], printing["service_level_pct"]) == (
        1,
        1,
        100.0,
    )
    assert (printing["callbacks"], printing["tickets"]) == (0, 0)

    hours = await report(desk, "--from", "2026-03-02", "--to", "2026-03-02", "--by", "hour")
    assert [row["period"] for row in hours] == [f"{hour:02d}:00" for hour in range(24)]
    busy = {row["period"]: row for row in hours if row["offered"] or row["tickets"]}
    assert {period: row["offered"] for period, row in busy.items()} == {
        "09:00": 4,
        "10:00": 1,
        "11:00": 1,
        "23:00": 0,
    }
    assert busy["10:00"]["callbacks"] == 1
    assert (busy["23:00"]["tickets"], busy["23:00"]["solved_same_day_pct"]) == (1, 0.0)

    weekdays = await report(desk, "--from", "2026-03-02", "--to", "2026-03-08", "--by", "weekday")
    assert [(row["period"], row["offered"]) for row in weekdays] == [
        ("Mon", 6),
        ("Tue", 0),
        ("Wed", 1),
        ("Thu", 1),
        ("Fri", 0),
        ("Sat", 0),
        ("Sun", 0),
    ]
    (march,) = await report(desk, "--from", "2026-03-01", "--to", "2026-03-31", "--by", "month")
    assert (march["period"], march["offered"], march["answered"]) == ("2026-03", 8, 5)


async def test_a_range_of_instants(engine: AsyncEngine, desk: Path) -> None:
    await _fill(engine)
    # [09:05, 10:00:30) local: c2, c3, c4 and c5's arrival at 10:00:00.
    (row,) = await report(
        desk, "--from", "2026-03-02T09:05", "--to", "2026-03-02T09:00:30Z", "--by", "day"
    )
    assert row["offered"] == 4


async def test_the_default_is_the_last_seven_days_today_included(
    engine: AsyncEngine, desk: Path
) -> None:
    arrived = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await _call(CallStore(engine), "recent", arrived, "abandoned")
    await _call(CallStore(engine), "old", arrived - dt.timedelta(days=8), "abandoned")
    rows = await report(desk)
    assert len(rows) == 7
    assert sum(row["offered"] for row in rows) == 1
    # The last row is today (the command's, a moment after the call arrived).
    assert rows[-1]["period"] >= arrived.astimezone(BERLIN).date().isoformat()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-13-01"], "neither a date"),
        (["--to", "yesterday"], "neither a date"),
        (["--by", "week"], "invalid choice"),
        (["--from", "2026-03-05", "--to", "2026-03-04T23:00"], "range is empty"),
        (["--queue", "third-level"], "unknown queue 'third-level'"),
    ],
)
def test_bad_arguments_say_what_is_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    config = tmp_path / "desk.yaml"
    config.write_text(DESK.format(url=f"sqlite+aiosqlite:///{tmp_path / 'firstline.db'}"))
    done = acd("report", str(config), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_an_unreachable_store_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "desk.yaml"
    # Port 9 (discard) on loopback: nothing listens there.
    config.write_text(DESK.format(url="postgresql+asyncpg://report:secret@127.0.0.1:9/firstline"))
    done = acd("report", str(config))
    assert done.returncode == 2
    assert "cannot read the store at postgresql+asyncpg://report:***@127.0.0.1:9/firstline" in (
        done.stderr
    )
    assert "secret" not in done.stderr


def test_a_broken_config_is_reported_like_everywhere_else(tmp_path: Path) -> None:
    config = tmp_path / "desk.yaml"
    config.write_text(
        DESK.format(url="mysql://nope").replace("timezone: Europe/Berlin", "timezone: Mars/Olympus")
    )
    done = acd("report", str(config))
    assert done.returncode == 1
    assert "unknown time zone 'Mars/Olympus'" in done.stderr
