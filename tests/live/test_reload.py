"""Live: config changes apply while callers wait — nobody dropped, re-queued or logged out;
an invalid file changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acd.ami import AmiClient
from tests.conftest import LivePbx
from tests.live.harness import (
    LIVE_CONFIG,
    TEST_SECRET,
    DaemonProcess,
    dial_feature_code,
    logout_everyone,
    place_call,
    queue_members,
    render_live,
    wait_members,
    waiting_callers,
)

pytestmark = pytest.mark.live

ALICE = "Local/alice@test-agents"
CALLERS = 5


@pytest.fixture
async def ami(pbx: LivePbx, tmp_path: Path) -> AsyncIterator[AmiClient]:
    pbx.start(render_live(tmp_path / "asterisk-conf"), fresh_state=True)
    client = AmiClient(
        host="127.0.0.1", port=5038, username="firstline", secret=TEST_SECRET, reconnect=False
    )
    runner = asyncio.create_task(client.run())
    await client.wait_logged_in(timeout=10)
    yield client
    await client.action("Hangup", {"Channel": "/^Local/100@firstline-hotline-/"}, timeout=5)
    runner.cancel()
    await client.close()


async def _wait_for_callers(ami: AmiClient, count: int) -> list[str]:
    waiting: list[str] = []
    for _ in range(100):
        waiting = await waiting_callers(ami, "first-level")
        if len(waiting) == count:
            return waiting
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} callers, have {waiting}")


async def test_reload_changes_skill_level_while_five_callers_wait(
    ami: AmiClient, pbx: LivePbx, tmp_path: Path
) -> None:
    config = tmp_path / "desk.yaml"
    shutil.copy(LIVE_CONFIG, config)
    daemon = DaemonProcess(
        tmp_path / "acd.log", config_path=config, asterisk_conf=pbx.root / "etc/asterisk"
    )
    daemon.start()
    try:
        await logout_everyone(ami)
        await dial_feature_code(ami, "*21", "201")  # alice logs in ...
        await wait_members(ami, "first-level", lambda m: ALICE in m)
        await dial_feature_code(ami, "*231", "201")  # ... and takes a break: callers wait
        await wait_members(ami, "first-level", lambda m: m[ALICE].get("Paused") == "1")
        for n in range(CALLERS):
            await place_call(ami, f"49305550{20 + n}")
            await asyncio.sleep(0.3)
        before = await _wait_for_callers(ami, CALLERS)
        assert (await queue_members(ami, "first-level"))[ALICE].get("Penalty") == "0"

        # alice's general level drops from 4 to 2: one level short of first-level's 3.
        text = config.read_text()
        config.write_text(
            text.replace("skills: {general: 4, printing: 2}", "skills: {general: 2, printing: 2}")
        )
        done = daemon.reload()
        assert done.returncode == 0, done.stderr
        daemon.wait_for(lambda line: line.get("event") == "config.reloaded", timeout=20)

        member = (await queue_members(ami, "first-level"))[ALICE]
        assert member.get("Penalty") == "1"
        assert member.get("Paused") == "1"  # not logged out, still on her break
        assert await waiting_callers(ami, "first-level") == before  # same callers, same order

        # An invalid file: rejected with its errors, nothing changes.
        config.write_text(text.replace("skills: {general: 4, printing: 2}", "skills: {general: 9}"))
        done = daemon.reload()
        assert done.returncode == 1
        assert f"{config}:" in done.stderr
        os.kill(int(daemon.pid_file.read_text()), signal.SIGHUP)  # bypassing the CLI's check
        daemon.wait_for(lambda line: line.get("event") == "config.reload_rejected", timeout=20)
        assert (await queue_members(ami, "first-level"))[ALICE].get("Penalty") == "1"
        assert await waiting_callers(ami, "first-level") == before
        assert daemon.running
    finally:
        daemon.stop()
