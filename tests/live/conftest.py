"""Fixtures of the live tests: Asterisk on the live config, an AMI client, the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from acd.ami import AmiClient
from tests.conftest import LivePbx
from tests.live.harness import TEST_SECRET, DaemonProcess, render_live


@pytest.fixture(scope="module")
def started_pbx(pbx: LivePbx, tmp_path_factory: pytest.TempPathFactory) -> LivePbx:
    conf = render_live(tmp_path_factory.mktemp("asterisk-conf"))
    pbx.start(conf, fresh_state=True)
    return pbx


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
def daemon(started_pbx: LivePbx, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path / "acd.log")
    process.start()
    yield process
    process.stop()
