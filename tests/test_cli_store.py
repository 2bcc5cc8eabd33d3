"""``acd customers import`` and ``acd tickets …`` as an admin runs them, on a real SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from acd.tickets import TicketStore, migrate
from tests.live.harness import LIVE_CONFIG, run_acd

ENV = {**os.environ, "FIRSTLINE_TEST_SECRET": "s"}


def _acd(*args: str) -> subprocess.CompletedProcess[str]:
    return run_acd(*args, env=ENV)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    copied = tmp_path / "desk.yaml"
    shutil.copy(LIVE_CONFIG, copied)
    return copied


def test_customer_import_reports_every_mistake_and_imports_nothing(
    config: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "customers.csv"
    bad.write_text(
        "id,company,name,phones,sla_package,account_manager\n"
        "c1,ACME,Ann,030 1234567;not-a-number,basic,carol\n"
        "c2,Globex,Bob,030 1234567,platinum,nobody\n"
        ",Nameless,X,,,\n"
    )
    done = _acd("customers", str(config), "import", str(bad))
    assert done.returncode == 1
    for fragment in (
        "row 1: 'not-a-number' is not a phone number",
        "row 2: +49301234567 is also 'c1'",
        "row 2: unknown SLA package 'platinum'",
        "row 2: unknown agent 'nobody'",
        "row 3: id is missing",
        "nothing was imported",
    ):
        assert fragment in done.stderr, done.stderr

    good = tmp_path / "customers.yaml"
    good.write_text(
        "- {id: c1, company: ACME, name: Ann, phones: '030 1234567; +1 416 555 0199',"
        " sla_package: basic, account_manager: carol, email: ann@acme.example}\n"
    )
    done = _acd("customers", str(config), "import", str(good))
    assert done.returncode == 0, done.stderr

    async def lookup() -> tuple[str | None, tuple[str, ...]]:
        async with TicketStore(f"sqlite+aiosqlite:///{tmp_path / 'firstline.db'}") as store:
            customer = await store.customer_by_number("+14165550199")
            assert customer is not None
            return customer.account_manager, customer.phones

    manager, phones = asyncio.run(lookup())
    assert manager == "carol"
    assert set(phones) == {"+49301234567", "+14165550199"}


def test_tickets_for_people(config: Path, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'firstline.db'}"

    async def create() -> str:
        await migrate(url)
        now = dt.datetime.now(dt.UTC)
        async with TicketStore(url) as store:
            ticket = await store.create_ticket(
                now=now,
                actor="ivr",
                priority="normal",
                priority_rank=20,
                deadline=now + dt.timedelta(days=3),
                caller_number="+49301234567",
                category="printing",
            )
            return ticket.number

    number = asyncio.run(create())
    listed = _acd("tickets", str(config), "--json", "list", "--open")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["number"] for line in listed.stdout.splitlines()] == [number]

    moved = _acd(
        "tickets",
        str(config),
        "set-status",
        number,
        "second_level",
        "--reason",
        "needs R&D",
        "--actor",
        "alice",
    )
    assert moved.returncode == 0, moved.stderr
    handed_back = _acd("tickets", str(config), "set-status", number, "first_level", "--reason", "x")
    assert handed_back.returncode == 0  # second_level -> first_level is allowed
    illegal = _acd("tickets", str(config), "set-status", number, "dev", "--reason", "x")
    assert illegal.returncode == 1
    assert "cannot move" in illegal.stderr
    assert _acd("tickets", str(config), "assign", number, "zed").returncode == 1
    assert _acd("tickets", str(config), "assign", number, "bob").returncode == 0
    assert _acd("tickets", str(config), "note", number, "customer sent logs").returncode == 0

    shown = _acd("tickets", str(config), "--json", "show", number)
    assert shown.returncode == 0, shown.stderr
    ticket = json.loads(shown.stdout)
    assert ticket["owner"] == "bob"
    assert ticket["status"] == "first_level"
    kinds = [(h["kind"], h["new_value"]) for h in ticket["history"]]
    assert kinds == [
        ("created", "first_level"),
        ("status", "second_level"),
        ("status", "first_level"),
        ("owner", "bob"),
        ("note", "customer sent logs"),
    ]
    assert ticket["history"][1]["actor"] == "alice"
    assert ticket["history"][1]["reason"] == "needs R&D"
    assert _acd("tickets", str(config), "show", "2026-999999").returncode == 1
