"""Fixtures of the SIP end-to-end tests: Asterisk on desk-sip.yaml, the daemon, and SIPp
softphones for every agent plus the customers' phone, all for the whole module."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from acd.ami import AmiClient
from tests.conftest import LivePbx
from tests.live.harness import TEST_SECRET, DaemonProcess, render_live
from tests.sip.harness import (
    CUSTOMER_PORT,
    SIP_CONFIG,
    Callers,
    CustomerPhone,
    SoftPhone,
    port_is_free,
    sipp_binary,
)

AGENT_RING_MS = 1000
# How long each agent (desk-sip.yaml) talks before hanging up. Callers stay on the line
# until the agent hangs up. alice takes the callback: her call ends when the customer
# (talking CUSTOMER_TALK_MS) hangs up, after the whisper and the customer's ringing.
AGENT_TALK_MS = {"alice": 30000, "bob": 2000, "carol": 2000}
CUSTOMER_RING_MS = 1000
CUSTOMER_TALK_MS = 3000


@dataclass(frozen=True, slots=True)
class Phones:
    """The registered agents' softphones by agent id, and the customers' phone."""

    agents: dict[str, SoftPhone]
    customer: CustomerPhone
    workdir: Path


@pytest.fixture(scope="module")
def started_pbx(pbx: LivePbx, tmp_path_factory: pytest.TempPathFactory) -> LivePbx:
    if sipp_binary() is None:
        message = "SIPp is not installed (Debian package sip-tester; scripts/install-deps)"
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    conf = render_live(tmp_path_factory.mktemp("asterisk-conf"), SIP_CONFIG)
    pbx.start(conf, fresh_state=True)
    return pbx


@pytest.fixture(scope="module")
def daemon(
    started_pbx: LivePbx, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("daemon") / "acd.log", config_path=SIP_CONFIG)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def phones(started_pbx: LivePbx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phones]:
    workdir = tmp_path_factory.mktemp("sipp")
    if not port_is_free(CUSTOMER_PORT):
        pytest.fail(f"UDP port {CUSTOMER_PORT} (the customers' phone) is taken")
    agents = {
        agent: SoftPhone(agent, TEST_SECRET, workdir, ring_ms=AGENT_RING_MS, talk_ms=talk_ms)
        for agent, talk_ms in AGENT_TALK_MS.items()
    }
    customer = CustomerPhone(workdir, ring_ms=CUSTOMER_RING_MS, talk_ms=CUSTOMER_TALK_MS)
    started: list[SoftPhone | CustomerPhone] = []
    try:
        everyone: list[SoftPhone | CustomerPhone] = [*agents.values(), customer]
        for phone in everyone:
            phone.start()
            started.append(phone)
        for phone in agents.values():
            phone.wait_registered()
        # Registered means Asterisk keeps the contact: its own view, not only SIPp's.
        contacts = started_pbx.cli("pjsip show contacts")
        for phone in agents.values():
            assert phone.contact in contacts, contacts
        yield Phones(agents, customer, workdir)
    finally:
        for phone in started:
            phone.stop()


@pytest.fixture
async def ami(started_pbx: LivePbx) -> AsyncIterator[AmiClient]:
    client = AmiClient(
        host="127.0.0.1", port=5038, username="firstline", secret=TEST_SECRET, reconnect=False
    )
    runner = asyncio.create_task(client.run())
    await client.wait_logged_in(timeout=10)
    yield client
    runner.cancel()
    await client.close()


@pytest.fixture
def callers(phones: Phones) -> Iterator[Callers]:
    """Places hotline calls; a caller still on the line when the test ends is hung up."""
    placed = Callers(phones.workdir)
    yield placed
    placed.stop_all()
